/**
 * `deno task parity [--model DIR]`: compares the WGSL GPT-2 with HuggingFace's reference
 * outputs on each decode path the model can take here (general, and fused where it fits) and
 * prints a table per path; the last line is
 * `parity: PASS|FAIL max_abs_diff=… tensors=… paths=general,fused`.
 *
 * @module
 */
import { type ParityReport, type ParityRow, runParity, TOLERANCE } from "../run/parity.ts";
import { main, parseOptions, weightFormat } from "./usage.ts";
import { openGpu } from "./env_options.ts";

const USAGE = [
  "usage: deno task parity [--model DIR] [--weights f32|f16]",
  "  --model DIR     a folder with config.json, model.safetensors and HF's reference.safetensors",
  "                  (default data/tiny-gpt2)",
  "  --weights F     f32 (default): the 1e-5 parity check; f16: the same diffs, reported only",
  "                  (every weight is rounded to f16 first)",
  "  -h, --help      this text",
].join("\n");

main("parity", async () => {
  const { values } = parseOptions(USAGE, Deno.args, {
    model: { type: "string", default: "data/tiny-gpt2" },
    weights: { type: "string", default: "f32" },
  });
  const dir = values.model;
  const weights = weightFormat(values.weights);
  const gpu = await openGpu();
  // Both decode paths where the model can take the fused step here; else the general one.
  const reports: ParityReport[] = [];
  try {
    reports.push(await runParity(gpu, dir, { weights, decode: "general" }));
    if (!reports[0].fusedLimit) {
      reports.push(await runParity(gpu, dir, { weights, decode: "fused" }));
    }
  } catch (e) {
    // Scripts read the last line of standard output: it says FAIL, the error says why.
    console.log("parity: FAIL max_abs_diff=NaN tensors=0");
    throw e;
  }
  console.log(`adapter: ${gpu.description}`);
  console.log(`model:   ${dir} (${weights} weights)`);
  for (const report of reports) printTable(report, weights);
  const fused = reports[0].fusedLimit;
  if (fused) console.log(`decode path fused: not on this adapter (${fused})`);
  const maxDiff = Math.max(...reports.map((r) => r.maxAbsDiff)).toExponential(3);
  const paths = `paths=${reports.map((r) => r.decodePath).join(",")}`;
  const summary = `max_abs_diff=${maxDiff} tensors=${reports[0].rows.length} ${paths}`;
  if (weights === "f16") {
    // Rounding every weight to f16 moves the outputs by far more than 1e-5: the diffs are the
    // measurement. Only a non-finite diff (a broken kernel) is a failure.
    const finite = reports.every((r) => Number.isFinite(r.maxAbsDiff));
    const bound = TOLERANCE.toExponential(0);
    console.log(`tolerance: none with f16 weights (the ${bound} bound is for f32 weights)`);
    console.log(`parity: ${finite ? "REPORTED" : "FAIL"} weights=f16 ${summary}`);
    return finite ? 0 : 1;
  }
  const pass = reports.every((r) => r.pass);
  console.log(`tolerance: ${TOLERANCE} (ids exact)`);
  console.log(`parity: ${pass ? "PASS" : "FAIL"} ${summary}`);
  return pass ? 0 : 1;
});

/** One path's table: every compared tensor, its diff, and pass or FAIL. */
function printTable(report: ParityReport, weights: string): void {
  const width = Math.max(...report.rows.map((r) => r.tensor.length));
  console.log(`\ndecode path: ${report.decodePath}`);
  console.log(
    `${"tensor".padEnd(width)}  ${"shape".padEnd(14)}  max_abs_diff  max|ref|  rel_diff  result`,
  );
  // With f16 weights a float diff is a measurement, not a verdict; ids still must agree.
  const result = (r: ParityRow) =>
    weights === "f16" && r.kind === "float" ? "-" : r.pass ? "pass" : "FAIL";
  for (const r of report.rows) {
    const diff = r.kind === "ids" ? `${r.maxAbsDiff} differ` : r.maxAbsDiff.toExponential(2);
    const ref = r.kind === "ids" ? "exact" : r.maxAbsRef.toFixed(2);
    // Real GPT-2 logits reach ~100, so the diff relative to the largest value matters too.
    const rel = r.kind === "ids"
      ? ""
      : (r.maxAbsDiff / Math.max(r.maxAbsRef, 1e-30)).toExponential(1);
    console.log(
      `${r.tensor.padEnd(width)}  ${`[${r.shape}]`.padEnd(14)}  ${diff.padStart(12)}  ` +
        `${ref.padStart(8)}  ${rel.padStart(8)}  ${result(r)}`,
    );
  }
}
