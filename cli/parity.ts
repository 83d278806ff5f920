/**
 * `deno task parity [--model DIR]`: compares the WGSL GPT-2 with HuggingFace's reference
 * outputs and prints a table; the last line is `parity: PASS|FAIL max_abs_diff=… tensors=…`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Gpu } from "../kernels/gpu.ts";
import { runParity, TOLERANCE } from "../model/parity.ts";

const USAGE = "usage: deno task parity [--model DIR]   (default data/tiny-gpt2)";

async function main(): Promise<number> {
  let dir: string;
  try {
    const { values } = parseArgs({
      args: Deno.args,
      options: { model: { type: "string", default: "data/tiny-gpt2" }, help: { type: "boolean" } },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    dir = values.model;
  } catch (e) {
    console.error(`parity: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const gpu = await Gpu.open();
  console.log(`adapter: ${gpu.description}`);
  console.log(`model:   ${dir}`);
  const report = await runParity(gpu, dir);
  const width = Math.max(...report.rows.map((r) => r.tensor.length));
  console.log(
    `${"tensor".padEnd(width)}  ${"shape".padEnd(14)}  max_abs_diff  max|ref|  rel_diff  result`,
  );
  for (const r of report.rows) {
    const diff = r.kind === "ids" ? `${r.maxAbsDiff} differ` : r.maxAbsDiff.toExponential(2);
    const ref = r.kind === "ids" ? "exact" : r.maxAbsRef.toFixed(2);
    // Real GPT-2 logits reach ~100, so the diff relative to the largest value matters too.
    const rel = r.kind === "ids"
      ? ""
      : (r.maxAbsDiff / Math.max(r.maxAbsRef, 1e-30)).toExponential(1);
    console.log(
      `${r.tensor.padEnd(width)}  ${`[${r.shape}]`.padEnd(14)}  ${diff.padStart(12)}  ` +
        `${ref.padStart(8)}  ${rel.padStart(8)}  ${r.pass ? "pass" : "FAIL"}`,
    );
  }
  const verdict = report.pass ? "PASS" : "FAIL";
  console.log(`tolerance: ${TOLERANCE} (ids exact)`);
  console.log(
    `parity: ${verdict} max_abs_diff=${report.maxAbsDiff.toExponential(3)} ` +
      `tensors=${report.rows.length}`,
  );
  return report.pass ? 0 : 1;
}

try {
  Deno.exit(await main());
} catch (e) {
  console.error(`parity: ${(e as Error).message}`);
  console.log("parity: FAIL max_abs_diff=NaN tensors=0");
  Deno.exit(1);
}
