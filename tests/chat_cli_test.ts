import assert from "node:assert/strict";
import { needs, runScript, slow } from "./helpers.ts";

const tiny = ["--model", "data/tiny-gpt2"];
const greedy = [...tiny, "--temperature", "0", "--max-tokens", "5"];

/** Runs `cli/chat.ts` with `input` piped into it, as `printf … | deno task chat` does. */
async function chat(input: string, ...args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/chat.ts", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const dec = new TextDecoder();
  return { code, stdout: dec.decode(stdout), stderr: dec.decode(stderr) };
}

Deno.test(
  "piped: plain text, the greedy reply of `generate`, a summary, /stats; exit 0",
  needs("read", "write", "run"),
  async () => {
    const r = await chat("Hello\n/stats\n", ...greedy);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!(r.stdout + r.stderr).includes("\u001b"), "no ANSI escapes when piped");
    const want = await runScript(
      "cli/generate.ts",
      ...greedy,
      "--prompt",
      "Hello\n",
      "--json",
    );
    assert.equal(want.code, 0, want.stderr);
    const { text } = JSON.parse(want.stdout);
    assert.ok(r.stdout.startsWith(`> Hello\n${text}\n`), r.stdout);
    assert.match(r.stdout, /\ntoken ms [▁▂▃▄▅▆▇█]{4} \(min [\d.]+, max [\d.]+\)\n/);
    assert.match(r.stdout, /\nprefilled 2 new tokens, reused 0 cached .*; 4 more tokens at /);
    assert.match(r.stdout, /\n> \/stats\ntokens cached: 6 of 128 positions/);
    assert.match(r.stdout, /mean decode time: cached [\d.]+ ms\/token \(4 tokens\), uncached -/);
    assert.match(r.stderr, /model: data\/tiny-gpt2: 2 layers/);
  },
);

Deno.test(
  "piped: /quit stops reading, a last line without a newline is read, EOF exits 0",
  slow("read", "write", "run"),
  async () => {
    const quit = await chat("/quit\nHello\n", ...greedy);
    assert.equal(quit.code, 0, quit.stderr);
    assert.equal(quit.stdout, "> /quit\n");
    const eof = await chat("/cache off\nHello", ...greedy);
    assert.equal(eof.code, 0, eof.stderr);
    assert.match(eof.stdout, /> Hello\n/);
    assert.match(eof.stdout, /reused 0 cached .* cache off: every token recomputed/);
    const bad = await chat("/topk x\n/temp 0.5\n", ...greedy);
    assert.equal(bad.code, 0, bad.stderr);
    assert.equal(
      bad.stdout,
      `> /topk x\nerror: /topk: expected an integer >= 0, got "x"\n> /temp 0.5\ntemperature 0.5\n`,
    );
  },
);

Deno.test(
  "the default model is data/shakespeare-char when it exists, else tiny-gpt2",
  slow("read", "write", "run"),
  async () => {
    let char = true;
    try {
      await Deno.stat("data/shakespeare-char/config.json");
    } catch {
      char = false;
    }
    const r = await chat("/stats\n");
    assert.equal(r.code, 0, r.stderr);
    const want = char
      ? /model: data\/shakespeare-char.*\ntokenizer: char · context \d+ tokens · 200 tokens per reply/
      : /model: data\/tiny-gpt2.*\ntokenizer: gpt2 · context 128 tokens · 48 tokens per reply/;
    assert.match(r.stderr, want);
  },
);

Deno.test(
  "bad flags: one line naming the flag and value, then see --help, exit 2",
  needs("read", "write", "run"),
  async () => {
    const cases: [string[], string][] = [
      [["--max-tokens", "0"], `--max-tokens: expected an integer >= 1, got "0"`],
      [["--temperature", "hot"], `--temperature: expected a number >= 0, got "hot"`],
      [["--top-k", "2.5"], `--top-k: expected an integer >= 0, got "2.5"`],
      [["--top-p", "1.5"], `--top-p: expected a number in (0, 1], got "1.5"`],
      [["--seed", "x"], `--seed: expected an integer, got "x"`],
      [["--weights", "f8"], `--weights: expected f32 or f16, got "f8"`],
    ];
    for (const [args, message] of cases) {
      const r = await chat("", ...args);
      assert.equal(r.code, 2, args.join(" "));
      assert.equal(r.stderr, `chat: ${message} (see --help)\n`);
    }
    const unknown = await chat("", "--bogus");
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^chat: --bogus: unknown option \(see --help\)\n$/);
  },
);

Deno.test(
  "a system text that cannot fit is a usage error; a folder without a model exits 1",
  slow("read", "write", "run"),
  async () => {
    const long = await chat("", ...tiny, "--system", " x".repeat(70));
    assert.equal(long.code, 2);
    assert.match(long.stderr, /chat: --system: the system text has 70 tokens; at most half/);
    const missing = await chat("", "--model", "data/tinyshakespeare");
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^chat: data\/tinyshakespeare: not a checkpoint folder/m);
    assert.equal(missing.stderr.trim().split("\n").filter((l) => l.startsWith("chat:")).length, 1);
  },
);

Deno.test("--help prints the options and the commands", needs("read", "write", "run"), async () => {
  const r = await chat("", "--help");
  assert.equal(r.code, 0);
  assert.match(r.stdout, /--system TEXT/);
  assert.match(r.stdout, /\/cache on\|off/);
});

Deno.test(
  "Ctrl-C (SIGINT) stops the reply, not the program",
  slow("read", "write", "run"),
  async () => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "cli/chat.ts", ...tiny, "--max-tokens", "100000"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const writer = child.stdin.getWriter();
    const enc = new TextEncoder();
    await writer.write(enc.encode("Hello\n"));
    // Wait until the reply streams (the echo comes first, then the reply's text).
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!/> Hello\n.{20}/s.test(out)) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    child.kill("SIGINT");
    await writer.write(enc.encode("/stats\n"));
    await writer.close();
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    const { code } = await child.status;
    assert.equal(code, 0, out);
    assert.match(out, /stop: interrupted\n/);
    assert.match(out, /> \/stats\ntokens cached: /);
  },
);
