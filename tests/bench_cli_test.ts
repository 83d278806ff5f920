/** `deno task bench`: its JSON line and its option errors (speed itself is never asserted). */
import assert from "node:assert/strict";
import { runScript } from "./helpers.ts";

function bench(...args: string[]) {
  return runScript("cli/bench.ts", ...args);
}

Deno.test("bench --quick --json: one JSON line with the tiny fields of both weight formats", async () => {
  const r = await bench("--quick", "--json", "--reps", "1");
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1, r.stdout);
  const out = JSON.parse(lines[0]);
  assert.match(out.adapter, /kernels$/);
  for (
    const f of [
      "tiny_decode_cache_tok_s",
      "tiny_decode_greedy_gpu_tok_s",
      "tiny_decode_cache_tok_s_f16w",
      "tiny_decode_greedy_gpu_tok_s_f16w",
    ]
  ) {
    assert.ok(out[f] > 0 && Number.isFinite(out[f]), `${f}: ${out[f]}`);
  }
  assert.equal(out.prefill_512_tok_s, undefined); // --quick skips the 124M shape
});

Deno.test("bench: bad options exit 2 naming the option", async () => {
  for (
    const [args, msg] of [
      [["--weights", "f8"], /--weights: expected f32 or f16, got "f8"/],
      [["--reps", "0"], /--reps/],
    ] as const
  ) {
    const r = await bench(...args);
    assert.equal(r.code, 2, `${args}: ${r.stderr}`);
    assert.match(r.stderr, msg);
  }
});
