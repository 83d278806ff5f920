/**
 * `deno task doctor [--json]`: the report to attach to a bug. It says which WebGPU
 * implementation and adapter kvgpt runs on, the features and the limits its kernels depend
 * on, the kernel design and the decode path picked and why, checks HF parity on
 * data/tiny-gpt2 with each kernel design (on a software adapter the design not picked runs the
 * smallest fixture, data/shapes/hub-l3-h3-e48, instead: see SMALLEST_MODEL), and measures a 32-token greedy decode of
 * data/shakespeare-char. The environment's KVGPT_WEBGPU, KVGPT_KERNELS and KVGPT_DECODE
 * count, as for every command. With `--json` the last line is one object holding all of it
 * and `"ok"`. Exit 0 only when every check passed.
 *
 * @module
 */
import type { Gpu, KernelDesign } from "../kernels/gpu.ts";
import { TRAINED } from "../run/open_model.ts";
import { runParity, TOLERANCE } from "../run/parity.ts";
import { generate, greedyOptions } from "../run/generate.ts";
import { Runner } from "../run/runner.ts";
import { CharTokenizer } from "../tokenizers/char.ts";
import { modelOptionsFromEnv, openGpu } from "./env_options.ts";
import { main, parseOptions } from "./usage.ts";

const USAGE = [
  "usage: deno task doctor [--json]",
  "  --json       also print one JSON object holding the whole report, as the last line",
  "  -h, --help   this text",
  "Honors KVGPT_WEBGPU=deno|dawn, KVGPT_KERNELS=cpu|gpu and KVGPT_DECODE=general|fused.",
].join("\n");

/** The model whose parity doctor checks, with HF's reference outputs. */
const PARITY_MODEL = "data/tiny-gpt2";

/**
 * Where the design not picked is checked on a software adapter: the smallest fixture. There
 * the `gpu` design runs tiny-gpt2's 50257-token lm_head for minutes (~2 on llvmpipe, ~12 on
 * SwiftShader), past doctor's minute; on a GPU both designs check {@link PARITY_MODEL}.
 */
const SMALLEST_MODEL = "data/shapes/hub-l3-h3-e48";

/** Tokens of the timed greedy decode. */
const DECODE_TOKENS = 32;

/** The device limits the kernels depend on (see kernels/gpu.ts's Gpu.open). */
const LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupsPerDimension",
  "minStorageBufferOffsetAlignment",
  "maxTextureDimension2D",
] as const;

/** One design's parity result. */
interface ParityCheck {
  design: KernelDesign;
  model: string;
  pass: boolean;
  maxAbsDiff: number | null;
  tensors: number;
  seconds: number;
  error?: string;
}

main("doctor", async () => {
  const { values } = parseOptions(USAGE, Deno.args, { json: { type: "boolean", default: false } });
  const started = performance.now();
  const gpu = await openGpu();
  const info = gpu.adapter.info;
  const report = {
    webgpu: gpu.webgpu,
    adapter: {
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      software: gpu.software,
    },
    features: [...gpu.adapter.features].sort(),
    limits: Object.fromEntries(LIMITS.map((name) => [name, gpu.device.limits[name]])),
    design: { picked: gpu.design, reason: gpu.designReason },
    decode: { picked: "", reason: "", fusedLimit: null as string | null },
    parity: [] as ParityCheck[],
    greedy: {
      model: TRAINED,
      tokens: 0,
      tokensPerSecond: 0,
      error: undefined as string | undefined,
    },
    seconds: 0,
    ok: false,
  };
  console.log(
    `webgpu:   ${gpu.webgpu}${gpu.webgpu === "deno" ? " (Deno's own, wgpu)" : " (npm webgpu)"}`,
  );
  console.log(`adapter:  ${gpu.description}`);
  console.log(`features: ${report.features.join(", ") || "none"}`);
  console.log("limits:");
  for (const [name, value] of Object.entries(report.limits)) {
    console.log(`  ${name.padEnd(34)} ${value}`);
  }
  console.log(`kernels:  ${gpu.design} design (${gpu.designReason})`);

  // The decode path and its speed, on the model a user would chat with.
  try {
    const model = await Runner.load(gpu, TRAINED, modelOptionsFromEnv());
    const { decodePath, decodeReason, fusedLimit } = model;
    report.decode = { picked: decodePath, reason: decodeReason, fusedLimit };
    console.log(`decode:   ${decodePath} path (${decodeReason})`);
    const tokenizer = await CharTokenizer.load(TRAINED);
    const prompt = tokenizer ? tokenizer.encode("ROMEO:\n") : [0];
    const cache = model.newCache();
    await generate(model, cache, prompt, greedyOptions(4)); // compiles the kernels
    cache.reset();
    const r = await generate(model, cache, prompt, greedyOptions(DECODE_TOKENS));
    report.greedy.tokens = r.ids.length;
    report.greedy.tokensPerSecond = r.decodeSteps / (r.decodeMs / 1000);
    console.log(
      `greedy:   ${r.ids.length} tokens of ${TRAINED}, ` +
        `${report.greedy.tokensPerSecond.toFixed(1)} tok/s (${decodePath} path)`,
    );
    cache.destroy();
    model.destroy();
  } catch (e) {
    report.greedy.error = oneLine(e);
    console.log(`greedy:   FAIL ${report.greedy.error}`);
  }

  // Parity with each design: the picked one on this device, the other on a second one.
  for (const design of [gpu.design, other(gpu.design)]) {
    const picked = design === gpu.design;
    const dir = picked || !gpu.software ? PARITY_MODEL : SMALLEST_MODEL;
    report.parity.push(await parity(picked ? gpu : null, design, dir));
    const p = report.parity.at(-1)!;
    const diff = p.maxAbsDiff === null ? "-" : p.maxAbsDiff.toExponential(2);
    console.log(
      `parity:   ${design} design on ${dir}: ${p.pass ? "PASS" : "FAIL"} ` +
        `max_abs_diff=${diff} (tolerance ${TOLERANCE}) tensors=${p.tensors} ` +
        `${p.seconds.toFixed(1)} s${p.error ? `: ${p.error}` : ""}`,
    );
  }
  gpu.close();
  report.seconds = (performance.now() - started) / 1000;
  report.ok = report.parity.every((p) => p.pass) && !report.greedy.error &&
    report.greedy.tokens === DECODE_TOKENS;
  console.log(`doctor:   ${report.ok ? "OK" : "FAIL"} in ${report.seconds.toFixed(1)} s`);
  if (values.json) console.log(JSON.stringify(report));
  return report.ok ? 0 : 1;
});

function other(design: KernelDesign): KernelDesign {
  return design === "cpu" ? "gpu" : "cpu";
}

/** Parity on `dir` with `design`: on `gpu`, or on a device of its own. */
async function parity(gpu: Gpu | null, design: KernelDesign, dir: string): Promise<ParityCheck> {
  const t0 = performance.now();
  let own: Gpu | null = null;
  try {
    own = gpu ? null : await openGpu({ design });
    const r = await runParity(gpu ?? own!, dir);
    return {
      design,
      model: dir,
      pass: r.pass,
      maxAbsDiff: r.maxAbsDiff,
      tensors: r.rows.length,
      seconds: (performance.now() - t0) / 1000,
    };
  } catch (e) {
    const seconds = (performance.now() - t0) / 1000;
    const error = oneLine(e);
    return { design, model: dir, pass: false, maxAbsDiff: null, tensors: 0, seconds, error };
  } finally {
    own?.close();
  }
}

function oneLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0];
}
