/**
 * The seeded fuzz test: a few hundred mutated safetensors checkpoints, configs, KV-cache
 * snapshots and tokenizer inputs (scripts/fuzz/), each of which must end in a clean
 * outcome: a correct load, or an error that names its input in at most 300 characters. Never
 * a non-finite forward, a raw TypeError/RangeError, a wrong load or a GPU leak. A `slow` case
 * (over 2 s) is printed, not failed: the suite shares two cores with whatever else runs, and a
 * test must not assert a time; `deno task fuzz` counts slow cases as unclean.
 * `deno task fuzz` runs the full campaign; the driver's crash and hang isolation is tested
 * here too.
 */
import assert from "node:assert/strict";
import { needs, slow } from "./helpers.ts";
import {
  type CaseResult,
  classifyError,
  CLEAN_OUTCOMES,
  closeContext,
  makeContext,
} from "../scripts/fuzz/case.ts";
import { runCampaign, runCase, summarize, tally } from "../scripts/fuzz.ts";

Deno.test("fuzz: 300 seeded cases all end cleanly", needs("read", "write", "run"), async () => {
  const ctx = await makeContext();
  const results: CaseResult[] = [];
  const t0 = performance.now();
  try {
    for (let i = 0; i < 300; i++) results.push(await runCase(ctx, 14, i));
  } finally {
    await closeContext(ctx);
  }
  const seconds = (performance.now() - t0) / 1000;
  console.log(summarize(results, 14).split("\n").map((l) => `  ${l}`).join("\n"));
  console.log(`  300 cases in ${seconds.toFixed(1)} s`);
  const slowCases = results.filter((r) => r.outcome === "slow");
  if (slowCases.length) {
    console.log(`  slow (printed, not failed): ${slowCases.map((r) => r.detail).join("; ")}`);
  }
  const unclean = results.filter((r) =>
    !CLEAN_OUTCOMES.includes(r.outcome) && r.outcome !== "slow"
  );
  assert.deepEqual(unclean, []);
  // Every kind of input is both accepted and refused somewhere in the run.
  for (const kind of ["checkpoint", "config", "snapshot", "tokenizer"]) {
    for (const outcome of ["loaded", "refused"]) {
      assert.ok(
        results.some((r) => r.kind === kind && r.outcome === outcome),
        `no ${kind} case ${outcome}`,
      );
    }
  }
});

Deno.test("fuzz: a case is the same on every run", needs("read", "write", "run"), async () => {
  const ctx = await makeContext();
  try {
    for (const i of [0, 1, 2, 3, 4, 57]) {
      const [a, b] = [await runCase(ctx, 3, i), await runCase(ctx, 3, i)];
      assert.deepEqual({ ...a, ms: 0, detail: "" }, { ...b, ms: 0, detail: "" });
      // Paths differ only in the temporary folder.
      assert.equal(a.detail.replace(/\/tmp\/\S+/g, ""), b.detail.replace(/\/tmp\/\S+/g, ""));
    }
  } finally {
    await closeContext(ctx);
  }
});

Deno.test("fuzz: what counts as a clean refusal", () => {
  const ok = classifyError(new Error("data/x.safetensors: header is not valid JSON"), "data/x");
  assert.equal(ok.outcome, "refused");
  // An engine error, an error that does not name the input, a long message, a non-Error.
  const cases: [unknown, string][] = [
    [new TypeError("Cannot read properties of undefined (reading 'shape')"), "raw-error"],
    [new RangeError("data/x: Maximum call stack size exceeded"), "raw-error"],
    [new Error("data/x: " + "y".repeat(400)), "long-message"],
    ["a string", "raw-error"],
    [Object.assign(new Error("data/x: odd"), { name: "GPUValidationError" }), "raw-error"],
  ];
  for (const [err, outcome] of cases) assert.equal(classifyError(err, "data/x").outcome, outcome);
});

Deno.test(
  "fuzz campaign: a crash or a hang ends only its own case",
  slow("read", "write", "run"),
  async () => {
    const results = await runCampaign({
      cases: 12,
      seed: 5,
      batch: 6,
      timeoutMs: 3000,
      inject: "crash:2,hang:8",
    });
    assert.deepEqual(results.map((r) => r.index), [...Array(12).keys()]);
    assert.equal(results[2].outcome, "crash");
    assert.match(results[2].detail, /injected crash at case 2/);
    assert.equal(results[8].outcome, "hang");
    const others = results.filter((r) => r.index !== 2 && r.index !== 8);
    assert.ok(others.every((r) => CLEAN_OUTCOMES.includes(r.outcome)), summarize(results, 5));
    const text = summarize(results, 5);
    assert.match(text, /unclean outcomes: 2/);
    assert.match(text, /replay: deno task fuzz --seed 5 --case 8/);
  },
);

Deno.test("fuzz --tally: cases that differ only in paths and numbers count together", () => {
  const result = (index: number, detail: string): CaseResult => ({
    index,
    kind: "config",
    mutation: "",
    outcome: "refused",
    detail,
    ms: 1,
  });
  const text = tally([
    result(0, "Error: /tmp/abc/config.json: n_embd 7 is not a multiple of n_head 2"),
    result(1, "Error: /tmp/xyz/config.json: n_embd 9 is not a multiple of n_head 4"),
    result(2, "Error: config: vocab_size must be an integer"),
  ]);
  assert.deepEqual(text.split("\n"), [
    "    1 config refused: Error: config: vocab_size must be an integer",
    "    2 config refused: Error: P n_embd N is not a multiple of n_head N",
  ]);
});
