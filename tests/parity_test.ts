import assert from "node:assert/strict";
import { fusedDecodeLimit } from "../kernels/fused_decode.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { GPT2 } from "../model/gpt2.ts";
import { runParity, TOLERANCE } from "../run/parity.ts";
import type { DecodePath } from "../run/runner.ts";
import { granted, needs, slow } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu({ design: "cpu" });
/** The kernel designs for real GPUs, run here on the same adapter: parity must hold too. */
const gpuDesign = await openGpu({ design: "gpu" });

/** Every committed HF reference folder: the tiny fixture, the char model, the other shapes. */
async function fixtures(): Promise<string[]> {
  const dirs = ["data/tiny-gpt2", "data/shakespeare-char"];
  try {
    for await (const e of Deno.readDir("data/shapes")) {
      if (e.isDirectory) dirs.push(`data/shapes/${e.name}`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return dirs.sort();
}

/** Whether the fixture's model can take the fused decode step on this device. */
async function fusedFits(dir: string, gpu: Gpu): Promise<boolean> {
  const model = await GPT2.load(gpu, dir);
  const limit = fusedDecodeLimit(gpu, model.config, model.weightFormat, model.wte, model.lmHead);
  model.destroy();
  return limit === null;
}

// Without read access (plain `deno test`) the shapes are not listed; every run is ignored.
const dirs = granted("read") ? await fixtures() : ["data/tiny-gpt2"];
const runs: (readonly [string, Gpu, DecodePath])[] = [
  ...dirs.map((dir) => [dir, gpu, "general"] as const),
  ["data/tiny-gpt2", gpuDesign, "general"],
  ["data/shapes/l4-h8-e128-untied", gpuDesign, "general"],
];
// Decode steps and greedy generation on the fused path, wherever the shape allows it.
if (granted("read")) {
  for (const dir of dirs) if (await fusedFits(dir, gpu)) runs.push([dir, gpu, "fused"]);
  if (await fusedFits("data/tiny-gpt2", gpuDesign)) {
    runs.push(["data/tiny-gpt2", gpuDesign, "fused"]);
  }
}
for (const [dir, gpu, decode] of runs) {
  const name = `parity with HuggingFace: ${dir}, ${gpu.design} design, ${decode} decode`;
  // The real-GPU design is slow on a software adapter: its parity runs in the slow set.
  Deno.test(name, gpu.design === "gpu" ? slow("read") : needs("read"), async () => {
    const report = await runParity(gpu, dir, { decode });
    const worst = report.rows.reduce((a, b) => (b.maxAbsDiff > a.maxAbsDiff ? b : a));
    console.log(
      `${dir} (${decode}): max_abs_diff=${report.maxAbsDiff.toExponential(2)} over ` +
        `${report.rows.length} tensors (worst ${worst.tensor})`,
    );
    for (const r of report.rows) {
      assert.ok(r.pass, `${r.tensor}: max abs diff ${r.maxAbsDiff} > ${TOLERANCE}`);
    }
    assert.ok(report.rows.some((r) => r.kind === "ids"), "greedy ids were compared");
  });
}

Deno.test(
  "parity with f16 weights is reported: diffs of f16 rounding, not of a broken kernel",
  needs("read"),
  async () => {
    // Rounding every weight to f16 (relative error <= 2^-11) moves GPT-2's outputs by about
    // 1e-3 of their size: measurably off (so f16 storage really is in use), and far from
    // the diffs a wrong read would give (order 1).
    const report = await runParity(gpu, "data/tiny-gpt2", { weights: "f16" });
    assert.equal(report.weights, "f16");
    const floats = report.rows.filter((r) => r.kind === "float");
    for (const r of floats) {
      const rel = r.maxAbsDiff / Math.max(1, r.maxAbsRef);
      assert.ok(rel < 5e-3, `${r.tensor}: ${r.maxAbsDiff} of max ${r.maxAbsRef}`);
    }
    assert.ok(report.maxAbsDiff > TOLERANCE, `max abs diff ${report.maxAbsDiff}: f16 not applied?`);
    console.log(`f16 weights: max_abs_diff=${report.maxAbsDiff.toExponential(2)}`);
  },
);
