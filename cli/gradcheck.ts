/**
 * `deno task gradcheck [--model DIR]`: trains through the WGSL kernels on a PyTorch training
 * reference and prints a table of max abs diffs; the last line is
 * `gradcheck: PASS|FAIL max_grad_diff=… max_loss_diff=… tensors=…`.
 *
 * @module
 */
import { runGradcheck } from "../train/gradcheck.ts";
import { main, parseOptions } from "./usage.ts";
import { openGpu } from "./env_options.ts";

const USAGE = [
  "usage: deno task gradcheck [--model DIR]",
  "  --model DIR   a folder with config.json, model.safetensors and PyTorch's",
  "                train_reference.safetensors + train_reference.json (default data/tiny-gpt2)",
  "  -h, --help    this text",
].join("\n");

main("gradcheck", async () => {
  const { values } = parseOptions(USAGE, Deno.args, {
    model: { type: "string", default: "data/tiny-gpt2" },
  });
  const dir = values.model;
  const gpu = await openGpu();
  console.log(`adapter: ${gpu.description}`);
  console.log(`model:   ${dir}`);
  const report = await runGradcheck(gpu, dir);
  const width = Math.max(...report.rows.map((r) => r.tensor.length));
  console.log(
    `${"tensor".padEnd(width)}  ${"shape".padEnd(12)}  max_abs_diff  max|ref|  tolerance  result`,
  );
  for (const r of report.rows) {
    console.log(
      `${r.tensor.padEnd(width)}  ${`[${r.shape}]`.padEnd(12)}  ${
        r.maxAbsDiff.toExponential(2).padStart(12)
      }  ${r.maxAbsRef.toExponential(1).padStart(8)}  ${
        r.tolerance.toExponential(0).padStart(9)
      }  ${r.pass ? "pass" : "FAIL"}`,
    );
  }
  console.log(
    `gradcheck: ${report.pass ? "PASS" : "FAIL"} max_grad_diff=${
      report.maxGradDiff.toExponential(3)
    } ` +
      `max_loss_diff=${report.maxLossDiff.toExponential(3)} tensors=${report.rows.length}`,
  );
  return report.pass ? 0 : 1;
});
