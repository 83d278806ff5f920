import assert from "node:assert/strict";
import { Gpu } from "../kernels/gpu.ts";
import { runParity, TOLERANCE } from "../model/parity.ts";

const gpu = await Gpu.open();

/** Every committed HF reference folder: the tiny fixture and the other shapes. */
async function fixtures(): Promise<string[]> {
  const dirs = ["data/tiny-gpt2"];
  try {
    for await (const e of Deno.readDir("data/shapes")) {
      if (e.isDirectory) dirs.push(`data/shapes/${e.name}`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return dirs.sort();
}

for (const dir of await fixtures()) {
  Deno.test(`parity with HuggingFace: ${dir}`, async () => {
    const report = await runParity(gpu, dir);
    const worst = report.rows.reduce((a, b) => (b.maxAbsDiff > a.maxAbsDiff ? b : a));
    console.log(
      `${dir}: max_abs_diff=${report.maxAbsDiff.toExponential(2)} over ` +
        `${report.rows.length} tensors (worst ${worst.tensor})`,
    );
    for (const r of report.rows) {
      assert.ok(r.pass, `${r.tensor}: max abs diff ${r.maxAbsDiff} > ${TOLERANCE}`);
    }
    assert.ok(report.rows.some((r) => r.kind === "ids"), "greedy ids were compared");
  });
}
