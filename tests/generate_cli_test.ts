/** `deno task generate`, run as typed: its output, its summary and its bad-input behaviour. */
import assert from "node:assert/strict";
import { assertFailure, assertUsageError, needs, runDeno, runScript, slow } from "./helpers.ts";
import { SafetensorsFile } from "../io/safetensors.ts";

function generate(...args: string[]) {
  return runScript("cli/generate.ts", ...args);
}

/** HF's 8 greedy tokens after "The" on the tiny fixture. */
async function hfGreedyAfterThe(): Promise<number[]> {
  const ref = await SafetensorsFile.open("data/tiny-gpt2/reference.safetensors");
  return [...ref.i32("p0.generated_ids")].slice(1, 9);
}

const tiny = ["--model", "data/tiny-gpt2"];
/** The tests spawn `deno run -A` and read the fixture. */
const io = needs("run", "read");
/** More runs of the command, in the slow set (`KVGPT_SLOW_TESTS=1`, as `.ci/run` sets). */
const ioSlow = slow("run", "read");

Deno.test("generate --json: greedy tokens equal HF's, with and without the cache", io, async () => {
  const want = await hfGreedyAfterThe();
  for (const extra of [[], ["--no-cache"]]) {
    const r = await generate(
      ...tiny,
      "--prompt",
      "The",
      "--max-tokens",
      "8",
      "--temperature",
      "0",
      "--json",
      ...extra,
    );
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.ids, want);
    assert.equal(out.prompt_tokens, 1);
    assert.equal(out.new_tokens, 8);
    const cached = extra.length === 0;
    assert.equal(out.cache, cached);
    // With the cache, the prompt and 7 fed-back tokens are cached (the 8th is never fed
    // back); without it nothing is kept between steps, and the summary says so.
    assert.equal(out.cache_bytes_used, cached ? 2 * 2 * 8 * 64 * 4 : null);
    assert.equal(out.cache_policy, cached ? "preallocated" : null);
    // The path depends on the adapter (OpenGL's llvmpipe has too few storage bindings for
    // the fused step); either way the summary names it and why.
    if (cached) {
      assert.match(out.decode_path, /^(fused|general)$/);
      assert.equal(typeof out.decode_path_reason, "string");
    } else assert.equal(out.decode_path, null);
  }
});

Deno.test("generate streams the text, then one summary line", io, async () => {
  const r = await generate(...tiny, "--prompt", "Hello", "--max-tokens", "5", "--seed", "3");
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.startsWith("Hello"));
  assert.match(
    r.stderr,
    /prefill [\d.]+ ms · decode 4 tok at [\d.]+ tok\/s \(KV cache, (fused|general) decode path: [^)]+\)/,
  );
  assert.match(r.stderr, /cache [\d.]+ MiB used of [\d.]+ MiB/);
  const again = await generate(...tiny, "--prompt", "Hello", "--max-tokens", "5", "--seed", "3");
  assert.equal(again.stdout, r.stdout, "same seed, same text");
});

Deno.test("generate --no-cache reports no cache bytes", ioSlow, async () => {
  const r = await generate(...tiny, "--prompt", "Hello", "--max-tokens", "3", "--no-cache");
  assert.equal(r.code, 0, r.stderr);
  const summary = r.stderr.split("\n").find((line) => line.startsWith("── "));
  assert.match(summary ?? "", /decode 2 tok at [\d.]+ tok\/s \(no cache: every step recomputed/);
  assert.doesNotMatch(summary ?? "", /MiB/);
});

Deno.test(
  "generate: bad options exit 2 with one line naming the option and value",
  io,
  async () => {
    const cases: [string[], RegExp][] = [
      [["--max-tokens", "0"], /--max-tokens: expected an integer >= 1, got "0"/],
      // A negative number after a flag is its value: the range message, not the parser's.
      [["--temperature", "-1"], /^generate: --temperature: expected a number >= 0, got "-1"/],
      [["--temperature=-1"], /--temperature: expected a number >= 0, got "-1"/],
      [["--top-p", "1.5"], /--top-p: expected a number in \(0, 1\], got "1.5"/],
      [["--top-k", "2.5"], /--top-k: expected an integer >= 0, got "2.5"/],
      [["--top-k", "-3"], /--top-k: expected an integer >= 0, got "-3"/],
      [["--seed", "x"], /--seed: expected an integer, got "x"/],
      [["--bogus"], /--bogus: unknown option/],
      [["--max-tokens"], /--max-tokens: needs a value/],
      [["--json=1"], /--json: takes no value/],
      [["stray"], /unexpected argument "stray"/],
      [["--prompt", ""], /--prompt: must not be empty/],
      [["--cache", "window:4"], /--cache: cache policy "window:4": expected one of/],
      [["--cache", "f8"], /--cache: cache policy "f8"/],
      [["--cache", "window:4,60", "--no-cache"], /--cache window:4,60: a window needs the cache/],
      [
        ["--cache", "window:4,60", "--no-slide"],
        /--cache window:4,60: a window slides; drop --no-slide/,
      ],
      [["--weights", "f8"], /--weights: expected f32 or f16, got "f8"/],
    ];
    for (const [args, pattern] of cases) {
      assertUsageError(await generate(...tiny, ...args), "generate", pattern);
    }
  },
);

Deno.test("generate --help prints the usage and exits 0", io, async () => {
  const r = await generate("--help");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^usage: deno task generate/);
  assert.match(r.stdout, /--cache POLICY/);
  assert.equal(r.stderr, "");
});

Deno.test("generate --cache window: too large for the model's context exits 2", io, async () => {
  const r = await generate(...tiny, "--cache", "window:4,124");
  assertUsageError(r, "generate", /--cache: window: sinks \+ recent \(4 \+ 124\) must leave room/);
});

Deno.test(
  "generate --cache window:4,60 runs past the context (n_positions 128)",
  ioSlow,
  async () => {
    const r = await generate(...tiny, "--max-tokens", "200", "--cache", "window:4,60", "--json");
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.new_tokens, 200);
    assert.ok(out.evicted_tokens > 0);
    assert.ok(out.cache_bytes_used <= 2 * 2 * 127 * 64 * 4);
  },
);

const chars = ["--model", "data/shakespeare-char"];

Deno.test(
  "generate on the char model: 300 tokens by default, sliding past the 64-token context",
  io,
  async () => {
    // As a newcomer types it (the model named, since a downloaded GPT-2 would be the default).
    const r = await generate(...chars, "--temperature", "0");
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.startsWith("ROMEO:\n"));
    assert.equal([...r.stdout].length, "ROMEO:\n".length + 300 + 1, "300 characters, a newline");
    const summary = r.stderr.split("\n").find((line) => line.startsWith("── ")) ?? "";
    assert.match(summary, /decode 299 tok .* stop: max-tokens/);
    // 7 + 300 tokens through 64 positions, 48 kept per slide: a slide every 15 tokens.
    assert.match(summary, /window slid 17× \(recompute: \d+ tok dropped, 48 tok prefilled again/);
  },
);

Deno.test("generate --no-slide stops at the context, and says so", ioSlow, async () => {
  const r = await generate(...chars, "--max-tokens", "300", "--no-slide", "--json");
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.stop, "context");
  assert.equal(out.prompt_tokens + out.new_tokens, 64);
  assert.equal(out.window, null);
  assert.equal(out.slides, 0);
});

Deno.test(
  "generate: BPE keeps 32 new tokens by default, and slides as the char model",
  ioSlow,
  async () => {
    const r = await generate(...tiny, "--json");
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.new_tokens, 32);
    assert.deepEqual(out.window, { mode: "recompute", sinks: 0, recent: 96 });
    assert.equal(out.slides, 0, "32 tokens fit the context");
  },
);

Deno.test("--stop-at-eos on a char model is refused: it has no end-of-text token", io, async () => {
  const r = await generate(...chars, "--stop-at-eos");
  assertUsageError(
    r,
    "generate",
    /--stop-at-eos: the char vocabulary of data\/shakespeare-char has no end-of-text token/,
  );
  assert.doesNotMatch(r.stderr, /adapter:/, "refused before the model loads");
  assert.equal(r.stdout, "");
});

Deno.test("generate --cache f16 holds half the bytes and reports the policy", ioSlow, async () => {
  const r = await generate(...tiny, "--max-tokens", "8", "--cache", "f16", "--json");
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.cache_policy, "f16");
  assert.equal(out.cache_bytes_used, 2 * 2 * (out.prompt_tokens + 7) * 64 * 2);
});

Deno.test(
  "generate --weights f16: HF's greedy tokens on the tiny fixture, and says so",
  ioSlow,
  async () => {
    // On this fixture f16 weights move logits by ~4e-3 and keep every greedy choice.
    const want = await hfGreedyAfterThe();
    const args = ["--prompt", "The", "--max-tokens", "8", "--temperature", "0", "--json"];
    const r = await generate(...tiny, ...args, "--weights", "f16");
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.weights, "f16");
    assert.deepEqual(out.ids, want);
  },
);

Deno.test("a prompt longer than the context is refused before the model loads", io, async () => {
  const words = (n: number) => Array(n).fill("word").join(" "); // n tokens
  const long = words(200);
  const r = await generate(...tiny, "--prompt", long);
  assertUsageError(
    r,
    "generate",
    /--prompt: more than 128 tokens, longer than the context \(n_positions 128\); generation goes on/,
  );
  assert.doesNotMatch(r.stderr, /system/, "no system prompt was given");
  assert.equal(r.stdout, "", "nothing echoed");
  const withSystem = await generate(...tiny, "--prompt", long, "--system", "Be brief.");
  assertUsageError(
    withSystem,
    "generate",
    /--prompt: more than 125 tokens after the 3 of --system/,
  );
  // The embedded 124M model (1024 positions) is not even built.
  const t0 = performance.now();
  const embedded = await generate("--model", "embedded", "--prompt", words(1100));
  assertUsageError(
    embedded,
    "generate",
    /more than 1024 tokens, longer than the context \(n_positions 1024\)/,
  );
  assert.ok(performance.now() - t0 < 20_000, "refused without loading the 124M model");
});

Deno.test("generate: a missing model is one line, before any adapter line", io, async () => {
  const r = await generate("--model", "data/no-such-model-dir/");
  assertFailure(r, "generate", /data\/no-such-model-dir\//);
  assert.doesNotMatch(r.stderr, /adapter:/);
});

Deno.test(
  "generate: a bad KVGPT_KERNELS is one line naming it",
  needs("run", "read", "env"),
  async () => {
    const env = { KVGPT_KERNELS: "tpu" };
    const r = await runDeno({ flags: ["-A"], env }, "cli/generate.ts", ...tiny);
    assertFailure(r, "generate", /KVGPT_KERNELS: expected cpu or gpu, got "tpu"/);
  },
);
