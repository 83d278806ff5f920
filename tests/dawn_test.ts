/**
 * kvgpt on Dawn (Chrome's WebGPU, npm webgpu; Tint compiles the WGSL), in the slow set
 * (`KVGPT_SLOW_TESTS=1`, as `.ci/run` sets): the kernel tests, run again as they are with
 * `KVGPT_WEBGPU=dawn` (their fast set: both designs of every backward kernel, the `cpu` design
 * of the forward ones); HF parity on data/tiny-gpt2 and data/shapes, on both decode paths (each
 * with a chained greedy decode) with the `cpu` design; and gradcheck on data/tiny-gpt2 with
 * both designs. The `gpu` design's forward passes are far slower on SwiftShader (see PARITY).
 * Where Dawn finds no adapter every test here is ignored with one line saying what to install.
 * See docs/webgpu_implementations.md.
 */
import assert from "node:assert/strict";
import { openGpu } from "../cli/env_options.ts";
import type { KernelDesign } from "../kernels/gpu.ts";
import { runParity, TOLERANCE } from "../run/parity.ts";
import type { DecodePath } from "../run/runner.ts";
import { runGradcheck } from "../train/gradcheck.ts";
import { dawnUnavailable, granted, onDawn, SLOW_TESTS } from "./helpers.ts";

/** The kernel tests: every test file of kernels/ and of the fused decode step. */
const KERNEL_TESTS = [
  "adamw",
  "argmax",
  "arena",
  "attention",
  "ceiling",
  "fused_decode",
  "embedding",
  "layernorm",
  "matmul",
  "softmax",
].map((name) => `tests/${name}_test.ts`);

const ALL: ["read", "run", "env"] = ["read", "run", "env"];
const unavailable = SLOW_TESTS && granted(...ALL)
  ? await dawnUnavailable(() => openGpu({ webgpu: "dawn" }))
  : null;

/** Runs `deno test -A files` on Dawn; asserts that every test passed. */
async function denoTest(files: string[]): Promise<void> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", ...files],
    // The child runs the fast set: the slow shapes would take far longer on SwiftShader.
    env: { KVGPT_WEBGPU: "dawn", KVGPT_SLOW_TESTS: "0", NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(stdout);
  const summary = out.match(/^(ok|FAILED) \| .*$/m)?.[0] ?? "no summary";
  console.log(`  ${summary}`);
  const failed = out.split("\n").filter((l) => / \.\.\. FAILED/.test(l));
  assert.equal(code, 0, `${summary}\n${failed.join("\n")}\n${new TextDecoder().decode(stderr)}`);
  assert.match(summary, /^ok \| [1-9]\d* passed \| 0 failed/);
}

Deno.test(
  "Dawn: opening it leaves VK_ICD_FILENAMES as it was",
  onDawn(unavailable, ...ALL),
  async () => {
    // Left pointing at SwiftShader, every later Deno WebGPU adapter of this process would be
    // SwiftShader too (seen: the test files after this one ran on it).
    const before = Deno.env.get("VK_ICD_FILENAMES");
    (await openGpu({ webgpu: "dawn" })).close();
    assert.equal(Deno.env.get("VK_ICD_FILENAMES"), before);
    using deno = await openGpu({ webgpu: "deno" });
    assert.doesNotMatch(deno.description, /SwiftShader/i);
  },
);

Deno.test("Dawn: the kernel tests", onDawn(unavailable, ...ALL), async () => {
  await denoTest(KERNEL_TESTS);
});

/**
 * Parity runs: [fixture, design, decode path]. SwiftShader gives a dispatch 12 storage
 * buffers, so the fused step takes one layer there (data/shapes/l1-h2-e96), not tiny-gpt2's two.
 * The `gpu` design's forward passes are slow on SwiftShader (tiny-gpt2 ~12 minutes, hub-l3-h3-e48
 * over 7, l1-h2-e96 over 9 at one full core), so that design runs on the smallest fixture,
 * data/shapes/l1-h2-e32 (38 s under load), on both decode paths.
 */
const PARITY: [string, KernelDesign, DecodePath][] = [
  ["data/tiny-gpt2", "cpu", "general"],
  ["data/shapes/l1-h2-e96", "cpu", "fused"],
  ["data/shapes/l1-h2-e32", "gpu", "general"],
  ["data/shapes/l1-h2-e32", "gpu", "fused"],
];

for (const [dir, design, decode] of PARITY) {
  Deno.test(
    `Dawn: parity on ${dir}, ${design} design, ${decode} decode`,
    onDawn(unavailable, ...ALL),
    async () => {
      using gpu = await openGpu({ webgpu: "dawn", design });
      const report = await runParity(gpu, dir, { decode });
      console.log(`  ${gpu.description}: max_abs_diff=${report.maxAbsDiff.toExponential(2)}`);
      assert.equal(report.decodePath, decode);
      const failed = report.rows.filter((r) => !r.pass).map((r) => `${r.tensor} ${r.maxAbsDiff}`);
      assert.ok(report.pass, `above ${TOLERANCE}: ${failed.join(", ")}`);
      // The greedy chains of both paths (with and without the cache) are among the rows.
      assert.ok(report.rows.some((r) => r.kind === "ids" && !r.tensor.includes("no cache")));
    },
  );
}

for (const design of ["cpu", "gpu"] as const) {
  Deno.test(
    `Dawn: gradcheck on data/tiny-gpt2, ${design} design`,
    onDawn(unavailable, ...ALL),
    async () => {
      using gpu = await openGpu({ webgpu: "dawn", design });
      const report = await runGradcheck(gpu, "data/tiny-gpt2");
      console.log(`  max_grad_diff=${report.maxGradDiff.toExponential(2)}`);
      const failed = report.rows.filter((r) => !r.pass).map((r) => `${r.tensor} ${r.maxAbsDiff}`);
      assert.ok(report.pass, failed.join(", "));
    },
  );
}
