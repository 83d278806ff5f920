/**
 * kvgpt on Dawn (Chrome's WebGPU, npm webgpu; Tint compiles the WGSL), in the slow set
 * (`KVGPT_SLOW_TESTS=1`, as `.ci/run` sets), each run a process of its own as a user would
 * type it with `KVGPT_WEBGPU=dawn`:
 *
 * - the kernel tests, as they are (their fast set: both designs of every backward kernel, the
 *   `cpu` design of the forward ones), then the `gpu` design's forward products;
 * - `deno task parity` on data/tiny-gpt2 and every fixture of data/shapes, with both kernel
 *   designs, on every decode path the model takes there (each with a chained greedy decode);
 * - `deno task gradcheck` on data/tiny-gpt2 with both designs.
 *
 * Processes, not this file's own isolate: opening Dawn points Vulkan at SwiftShader's driver
 * until Deno's WebGPU opens (cli/env_options.ts), and under `deno test --parallel` other test
 * files open Deno's WebGPU in this same process at the same time. Where Dawn finds no adapter
 * every test here is ignored with one line saying what to install. See
 * docs/webgpu_implementations.md.
 */
import assert from "node:assert/strict";
import { deno, granted, onDawn, type ScriptRun, SLOW_TESTS } from "./helpers.ts";

const ALL: ["read", "run", "env"] = ["read", "run", "env"];

/** Runs `deno args` with `env` added to this process's environment, without colours. */
const denoPlain = (args: string[], env: Record<string, string> = {}) =>
  deno(args, { NO_COLOR: "1", ...env });

/**
 * Opens Dawn through `openGpu` in a child, then Deno's own WebGPU in the same process; prints
 * one JSON line: Dawn's adapter or why there is none, the adapter Deno's WebGPU got afterwards,
 * and VK_ICD_FILENAMES before both and after both.
 */
const PROBE = `
import { openGpu } from "./cli/env_options.ts";
const before = Deno.env.get("VK_ICD_FILENAMES") ?? null;
let dawn = null, unavailable = null;
try {
  const gpu = await openGpu({ webgpu: "dawn" });
  dawn = gpu.description;
  gpu.close();
} catch (e) {
  unavailable = e.message.split("\\n")[0];
}
let deno = null;
try {
  const gpu = await openGpu({ webgpu: "deno" });
  deno = gpu.description;
  gpu.close();
} catch (e) {
  deno = "none: " + e.message.split("\\n")[0];
}
const after = Deno.env.get("VK_ICD_FILENAMES") ?? null;
console.log(JSON.stringify({ dawn, unavailable, before, after, deno }));
`;

interface Probe {
  dawn: string | null;
  unavailable: string | null;
  before: string | null;
  after: string | null;
  deno: string;
}

const probe: Probe | null = SLOW_TESTS && granted(...ALL)
  ? await denoPlain(["eval", PROBE]).then((r) => {
    const line = r.stdout.trim().split("\n").at(-1) ?? "";
    try {
      return JSON.parse(line) as Probe;
    } catch {
      const why = `the Dawn probe printed no result (exit ${r.code}): ${r.stderr.trim()}`;
      return { dawn: null, unavailable: why, before: null, after: null, deno: "" };
    }
  })
  : null;
const unavailable = probe?.unavailable ?? null;

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
  "sample",
  "softmax",
].map((name) => `tests/${name}_test.ts`);

/** The last line of a command's standard output. */
const lastLine = (r: ScriptRun) => r.stdout.trimEnd().split("\n").at(-1) ?? "";

Deno.test(
  "Dawn: opening it, then Deno's WebGPU, leaves VK_ICD_FILENAMES as it was",
  onDawn(unavailable, ...ALL),
  () => {
    // Left pointing at SwiftShader, every later Deno WebGPU adapter of the process would be
    // SwiftShader too (seen once: the test files after the Dawn tests ran on it).
    assert.ok(probe?.dawn, JSON.stringify(probe));
    assert.equal(probe.after, probe.before);
    assert.doesNotMatch(probe.deno, /SwiftShader/i);
  },
);

/** Runs `deno test -A args` on Dawn with KVGPT_SLOW_TESTS=`slowTests`; asserts all passed. */
async function kernelTests(slowTests: "0" | "1", args: string[]): Promise<void> {
  const r = await denoPlain(["test", "-A", "--parallel", ...args], {
    KVGPT_WEBGPU: "dawn",
    KVGPT_SLOW_TESTS: slowTests,
  });
  const summary = r.stdout.match(/^(ok|FAILED) \| .*$/m)?.[0] ?? "no summary";
  // What failed, and each error's first line, printed here beside this test's name: a CI log
  // keeps the closing lines, where the parent's own ERRORS section may be cut.
  const failed = r.stdout.split("\n").filter((l) =>
    /( \.\.\. |^Uncaught error from .* )FAILED|^error: /.test(l)
  );
  console.log([summary, ...failed].map((l) => `  ${l}`).join("\n"));
  assert.equal(r.code, 0, `${summary}\n${failed.join("\n")}\n${r.stderr}`);
  assert.match(summary, /^ok \| [1-9]\d* passed \| 0 failed/);
}

Deno.test("Dawn: the kernel tests", onDawn(unavailable, ...ALL), async () => {
  // The fast set: every kernel against its CPU reference, both designs of the backward ones.
  await kernelTests("0", KERNEL_TESTS);
  // The `gpu` design's forward products too, which the fast set leaves to the slow one. Not its
  // lm_head over GPT-2's vocabulary of 50257 (and the larger row-block shapes): more than 3
  // minutes on SwiftShader, where the same product at parity's vocabulary of 256 runs below.
  await kernelTests("1", [
    "--filter",
    "/^(matmul|lmHeadBackward).*gpu design/",
    "tests/matmul_test.ts",
  ]);
});

/**
 * `deno task parity` runs: [fixture, design, the decode paths it must compare]. SwiftShader
 * gives a dispatch 12 storage buffers, so the fused step takes a one-layer model there
 * (data/shapes/l1-h2-e96 and l1-h2-e32), not the two to four layers of the others. The `gpu`
 * design's forward passes are slow on SwiftShader (tiny-gpt2 ~12 minutes, hub-l3-h3-e48 over 7,
 * l1-h2-e96 over 9 at one full core), so that design runs on the smallest fixture,
 * data/shapes/l1-h2-e32.
 */
const PARITY: [string, "cpu" | "gpu", string][] = [
  ["data/tiny-gpt2", "cpu", "general"],
  ["data/shapes/hub-l3-h3-e48", "cpu", "general"],
  ["data/shapes/l4-h8-e128-untied", "cpu", "general"],
  ["data/shapes/l1-h2-e96", "cpu", "general,fused"],
  ["data/shapes/l1-h2-e32", "gpu", "general,fused"],
];

for (const [dir, design, paths] of PARITY) {
  Deno.test(
    `Dawn: deno task parity --model ${dir}, ${design} design (${paths})`,
    onDawn(unavailable, ...ALL),
    async () => {
      const r = await denoPlain(["run", "-A", "cli/parity.ts", "--model", dir], {
        KVGPT_WEBGPU: "dawn",
        KVGPT_KERNELS: design,
      });
      const last = lastLine(r);
      console.log(`  ${last}`);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(
        last,
        new RegExp(`^parity: PASS max_abs_diff=\\S+ tensors=\\d+ paths=${paths}$`),
      );
      assert.match(r.stdout, /adapter: .*Dawn/);
      assert.match(r.stdout, new RegExp(`adapter: .*${design} kernels`));
      // Each path's greedy chain, with and without the cache, is among the rows.
      assert.match(r.stdout, /generated_ids \(no cache\) .* pass/);
    },
  );
}

for (const design of ["cpu", "gpu"] as const) {
  Deno.test(
    `Dawn: deno task gradcheck --model data/tiny-gpt2, ${design} design`,
    onDawn(unavailable, ...ALL),
    async () => {
      const r = await denoPlain(["run", "-A", "cli/gradcheck.ts", "--model", "data/tiny-gpt2"], {
        KVGPT_WEBGPU: "dawn",
        KVGPT_KERNELS: design,
      });
      const last = lastLine(r);
      console.log(`  ${last}`);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(last, /^gradcheck: PASS max_grad_diff=/);
    },
  );
}
