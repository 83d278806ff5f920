import assert from "node:assert/strict";
import { runScript } from "./helpers.ts";
import { SafetensorsFile } from "../io/safetensors.ts";

const ref = await SafetensorsFile.open("data/tiny-gpt2/reference.safetensors");

function generate(...args: string[]) {
  return runScript("cli/generate.ts", ...args);
}

const tiny = ["--model", "data/tiny-gpt2"];

Deno.test("generate --json: greedy tokens equal HF's, with and without the cache", async () => {
  // p1's text is " cache grows by one row for every token" after "The"; use p0 ("The").
  const want = [...ref.i32("p0.generated_ids")].slice(1, 9);
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
    assert.equal(out.cache, extra.length === 0);
    // The prompt and 7 fed-back tokens end up cached (the 8th is never fed back), either way.
    assert.equal(out.cache_bytes_used, 2 * 2 * 8 * 64 * 4);
  }
});

Deno.test("generate streams the text, then one summary line", async () => {
  const r = await generate(...tiny, "--prompt", "Hello", "--max-tokens", "5", "--seed", "3");
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.startsWith("Hello"));
  assert.match(r.stderr, /prefill [\d.]+ ms · decode 4 tok at [\d.]+ tok\/s \(KV cache\)/);
  assert.match(r.stderr, /cache [\d.]+ MiB used of [\d.]+ MiB/);
  const again = await generate(...tiny, "--prompt", "Hello", "--max-tokens", "5", "--seed", "3");
  assert.equal(again.stdout, r.stdout, "same seed, same text");
});

Deno.test("bad options exit 2 with a message naming the option, no stack trace", async () => {
  const cases: [string[], RegExp][] = [
    [["--max-tokens", "0"], /--max-tokens: expected an integer >= 1/],
    [["--temperature", "-1"], /--temperature/],
    [["--top-p", "1.5"], /--top-p/],
    [["--top-k", "2.5"], /--top-k/],
    [["--seed", "x"], /--seed/],
    [["--bogus"], /bogus/],
    [["--prompt", ""], /--prompt/],
    [["--cache", "window:4"], /--cache: cache policy "window:4": expected one of/],
    [["--cache", "f8"], /--cache: cache policy "f8"/],
    [["--weights", "f8"], /--weights: expected f32 or f16, got "f8"/],
  ];
  for (const [args, msg] of cases) {
    const r = await generate(...tiny, ...args);
    assert.equal(r.code, 2, `${args}: ${r.stderr}`);
    assert.match(r.stderr, msg);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  }
});

Deno.test("generate --cache window: too large for the model's context exits 2", async () => {
  const r = await generate(...tiny, "--cache", "window:4,124");
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--cache: window: sinks \+ recent \(4 \+ 124\) must leave room/);
  assert.match(r.stderr, /usage: /);
});

Deno.test("generate --cache window:4,60 runs past the context (n_positions 128)", async () => {
  const r = await generate(...tiny, "--max-tokens", "300", "--cache", "window:4,60", "--json");
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.new_tokens, 300);
  assert.ok(out.evicted_tokens > 0);
  assert.ok(out.cache_bytes_used <= 2 * 2 * 127 * 64 * 4);
});

Deno.test("generate --cache f16 holds half the bytes and reports the policy", async () => {
  const r = await generate(...tiny, "--max-tokens", "8", "--cache", "f16", "--json");
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.cache_policy, "f16");
  assert.equal(out.cache_bytes_used, 2 * 2 * (out.prompt_tokens + 7) * 64 * 2);
});

Deno.test("generate --weights f16: HF's greedy tokens on the tiny fixture, and says so", async () => {
  // On this fixture f16 weights move logits by ~4e-3 and keep every greedy choice.
  const want = [...ref.i32("p0.generated_ids")].slice(1, 9);
  const args = ["--prompt", "The", "--max-tokens", "8", "--temperature", "0", "--json"];
  const r = await generate(...tiny, ...args, "--weights", "f16");
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.weights, "f16");
  assert.deepEqual(out.ids, want);
});

Deno.test("a prompt longer than the context is a clear error", async () => {
  const r = await generate(...tiny, "--prompt", "word ".repeat(200));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /longer than the context \(n_positions 128\)/);
  const missing = await generate("--model", "data/no-such-model-dir/");
  assert.notEqual(missing.code, 0);
  assert.doesNotMatch(missing.stderr, /\n\s+at /);
});
