/** `deno task bench`: its JSON line and its option errors (speed itself is never asserted). */
import assert from "node:assert/strict";
import { assertUsageError, hfPython, needs, runDeno, runScript, slow } from "./helpers.ts";

function bench(...args: string[]) {
  return runScript("cli/bench.ts", ...args);
}

Deno.test(
  "bench --quick --json: one JSON line with the tiny fields of both weight formats",
  slow("run", "read"),
  async () => {
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
    // The small models on both decode paths; the fused one only where the adapter has it
    // (not on OpenGL's llvmpipe), always in fewer dispatches a token.
    assert.equal(out.char_greedy_general_dispatches_per_token, 36);
    if (out.char_greedy_fused_tok_s !== undefined) {
      // One dispatch a token (two with the tiny fixture's wide lm_head), and one more a call:
      // the last step only picks its token. 47 and 100 tokens a call.
      assert.equal(out.char_greedy_fused_dispatches_per_token, 48 / 47);
      assert.equal(out.tiny_greedy_fused_dispatches_per_token, 201 / 100);
    }
    assert.equal(out.prefill_512_tok_s, undefined); // --quick skips the 124M shape
  },
);

Deno.test(
  "bench --train --quick --json: the baby shape's training speed, nothing else",
  slow("run", "read"),
  async () => {
    const r = await bench("--train", "--quick", "--json");
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim());
    const fields = ["train_tok_s", "train_ms_per_iter", "train_gflops", "ceiling_fma_gflops"];
    for (const f of [...fields, "ceiling_cached_read_gb_s", "ceiling_memory_read_gb_s"]) {
      assert.ok(out[f] > 0 && Number.isFinite(out[f]), `${f}: ${out[f]}`);
    }
    // 4 layers of 25 dispatches, embedding, ln_f, lm_head and loss, their backward, and the
    // parameter arena's gradient norm and AdamW in 2 (issue 21: 224 before the arena and the
    // GELU and LayerNorm fusions).
    assert.equal(out.train_dispatches_per_step, 113);
    // Every matrix product shape of the step has its rate (lavapipe and llvmpipe have timestamps).
    assert.ok(out["train_gflops matmul 768x128x384"] > 0, JSON.stringify(out));
    assert.equal(out.train_small_tok_s, undefined); // --quick skips GPT-2 small
    assert.equal(out.tiny_decode_cache_tok_s, undefined);
  },
);

Deno.test("bench --help lists every option", needs("run", "read"), async () => {
  const r = await bench("--help");
  assert.equal(r.code, 0, r.stderr);
  for (
    const flag of [
      "--json",
      "--reps",
      "--quick",
      "--weights",
      "--train",
      "--peer",
      "--ceiling",
    ]
  ) {
    assert.match(r.stdout, new RegExp(`^  ${flag} `, "m"), flag);
  }
});

Deno.test(
  "bench: bad options exit 2 with one line naming the option",
  needs("run", "read"),
  async () => {
    const cases: [string[], RegExp][] = [
      [["--weights", "f8"], /--weights: expected f32, f16 or both, got "f8"/],
      [["--reps", "0"], /--reps: expected an integer >= 1, got "0"/],
      [["--reps", "-2"], /--reps: expected an integer >= 1, got "-2"/],
      [["--bogus"], /--bogus: unknown option/],
      [["--json=yes"], /--json: takes no value/],
    ];
    for (const [args, pattern] of cases) assertUsageError(await bench(...args), "bench", pattern);
  },
);

const peer = await hfPython();

Deno.test({
  name: "hf_decode_peer.py: HF's cached decode tok/s, greedy and top-k, as one JSON line",
  ignore: slow("run", "read").ignore || peer.unavailable !== null,
  async fn() {
    // 32 tokens, median of 3: the decode steps outweigh the timing noise of a loaded machine.
    const args = ["data/shakespeare-char", "--tokens", "32", "--reps", "3", "--top-k", "40"];
    const r = await new Deno.Command(peer.python, {
      args: ["scripts/hf_decode_peer.py", ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(r.success, new TextDecoder().decode(r.stderr));
    const out = JSON.parse(new TextDecoder().decode(r.stdout).trim().split("\n").at(-1)!);
    assert.equal(out.tokens, 32);
    for (const f of ["greedy_tok_s", "topk40_tok_s"]) {
      assert.ok(out[f] > 0 && Number.isFinite(out[f]), `${f}: ${out[f]}`);
    }
  },
});

Deno.test(
  "bench --peer without HF's Python: one line, exit 1, before measuring anything",
  needs("run", "read"),
  async () => {
    const env = { HF_VENV: "/nonexistent-venv" };
    const r = await runDeno({ flags: ["-A"], env }, "cli/bench.ts", "--quick", "--peer");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^bench: --peer: no \/nonexistent-venv\/bin\/python /m);
    assert.equal(r.stdout, "");
  },
);
