/**
 * `deno task bench [--json] [--reps N] [--quick]`: prefill and decode speed of GPT-2 small's
 * shape (124M, seeded random weights: speed does not depend on the values), of the tiny
 * fixture, and of the small models on both decode paths (fused and general: tok/s and
 * dispatches per token), on the adapter found. Medians of several runs after a warm-up.
 * `--json` prints one line whose field names match the HF transformers peer benchmark of
 * BENCHMARKS.md.
 *
 * @module
 */
import { type Gpu, type Plan, type RunOptions } from "../kernels/gpu.ts";
import type { WeightFormat } from "../kernels/matmul.ts";
import { generate, greedyOptions } from "../run/generate.ts";
import { EMBEDDED, openModel } from "../run/open_model.ts";
import type { DecodePath, Runner } from "../run/runner.ts";
import { Rng } from "../base/rng.ts";
import { integer, main, parseOptions, UsageError } from "./usage.ts";
import { GPT2_SIZES, parseConfig } from "../model/config.ts";
import { measureTraining, type TrainingSpeed } from "../train/throughput.ts";
import { type Ceiling, measureCeiling, measureF16 } from "../kernels/ceiling.ts";
import { openGpu } from "./env_options.ts";

const USAGE =
  `usage: deno task bench [--json] [--reps N] [--quick] [--weights f32|f16|both] [--train] [--peer]
                       [--ceiling]
  --json        print one JSON line of every result instead of the table
  --reps N      timed runs per measurement, after one warm-up (default 3)
  --quick       the small models only (seconds), not GPT-2 small's shape
  --peer        also time HF transformers on the same small models right after each
                (scripts/hf_decode_peer.py with $HF_VENV/bin/python, default
                ~/.cache/hf-venv), and print kvgpt's fused decode against it
  --weights W   which weight storage to measure (default both: f32, the parity path, and
                f16; f16 fields end in _f16w)
  --train       training speed instead: nanoGPT's char "baby" shape (4 layers, 128 wide,
                vocabulary 65, batch 12 x 64) for 200 steps (--quick: 20), and GPT-2
                small's shape (124M, batch 4 x 64) for 3 steps (--quick: skipped), with
                the ceiling, dispatches per step and each matrix product's share of it
  --ceiling     only the adapter's ceiling: best FMA rate and vec4 read rates
                (kernels/ceiling.wgsl), and f16 against f32 where the adapter has
                shader-f16
  -h, --help    this text`;

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

/** Median of `reps` timings of `fn` (ms), after one untimed run. */
async function medianMs(reps: number, fn: () => Promise<unknown>): Promise<number> {
  await fn();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await fn();
    ts.push(performance.now() - t);
  }
  return median(ts);
}

function promptOf(n: number, vocabSize = 50257): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + 13) % vocabSize);
}

/** Prefill tok/s: one forward of T prompt tokens from an empty cache. */
async function prefillTokS(model: Runner, T: number, reps: number): Promise<number> {
  const cache = model.newCache();
  const ms = await medianMs(reps, async () => {
    cache.reset();
    await model.forward(promptOf(T), cache);
  });
  cache.destroy();
  return T / (ms / 1000);
}

/**
 * Decode tok/s: `n` greedy tokens after a `prompt`-token prefill, decode steps only; the
 * argmax on the GPU (tokens read back in batches) or on the CPU (one wait per token).
 */
async function decodeTokS(
  model: Runner,
  prompt: number,
  n: number,
  useCache: boolean,
  reps: number,
  chainOnGpu = true,
): Promise<number> {
  const opts = { ...greedyOptions(n + 1), useCache, chainOnGpu };
  const cache = model.newCache();
  const rates: number[] = [];
  for (let i = 0; i <= reps; i++) { // the first run is the warm-up
    const r = await generate(model, cache, promptOf(prompt), opts);
    if (i > 0) rates.push(r.decodeSteps / (r.decodeMs / 1000));
  }
  cache.destroy();
  return median(rates);
}

/** nanoGPT's char-level "baby" model: the default of `deno task train`. */
const BABY = parseConfig({
  vocab_size: 65,
  n_positions: 64,
  n_embd: 128,
  n_layer: 4,
  n_head: 4,
  bos_token_id: 0,
  eos_token_id: 0,
}, "the baby shape");

/** GPT-2 small (124M) with a context of 64 for training. */
const SMALL = { ...GPT2_SIZES.gpt2, nPositions: 64 };

/** Measures the adapter's ceiling and records it in `out`. */
async function benchCeiling(
  gpu: Gpu,
  out: Record<string, string | number>,
  log: (s: string) => void,
): Promise<Ceiling> {
  const c = await measureCeiling(gpu);
  log(
    `ceiling (kernels/ceiling.wgsl, best of 5): FMA ${c.fmaGflops.toFixed(1)} GFLOP/s ` +
      `(${c.fmaChains} chains per invocation); vec4 reads ${c.cachedReadGBs.toFixed(1)} GB/s ` +
      `from the caches, ${c.memoryReadGBs.toFixed(1)} GB/s from memory`,
  );
  out.ceiling_fma_gflops = c.fmaGflops;
  out.ceiling_cached_read_gb_s = c.cachedReadGBs;
  out.ceiling_memory_read_gb_s = c.memoryReadGBs;
  if (gpu.hasF16) {
    const r = await measureF16(gpu);
    log(
      `  f16 / f32 time, interleaved: FMA ${r.fma.toFixed(2)}x, vec4 reads ` +
        `${r.cachedRead.toFixed(2)}x from the caches, ${r.memoryRead.toFixed(2)}x from memory`,
    );
    out.f16_fma_time_ratio = r.fma;
    out.f16_cached_read_time_ratio = r.cachedRead;
    out.f16_memory_read_time_ratio = r.memoryRead;
  }
  return c;
}

/**
 * Training tok/s, ms per step, GFLOP/s and dispatches per step of the baby shape and of GPT-2
 * small's, each matrix product's rate as a fraction of the measured FMA ceiling.
 */
async function benchTraining(
  gpu: Gpu,
  quick: boolean,
  out: Record<string, string | number>,
  log: (s: string) => void,
): Promise<void> {
  const ceiling = await benchCeiling(gpu, out, log);
  const share = (gflops: number) => `${(100 * gflops / ceiling.fmaGflops).toFixed(0)} %`;
  const show = (what: string, key: string, s: TrainingSpeed) => {
    log(
      `  ${what}: ${s.tokS.toFixed(0)} tok/s, ${s.msPerIter.toFixed(1)} ms/step, ` +
        `${s.gflops.toFixed(1)} GFLOP/s = ${share(s.gflops)} of the ceiling, ` +
        `${s.dispatchesPerStep} dispatches per step (${(s.parameters / 1e6).toFixed(2)}M ` +
        `parameters, batch ${s.B} x ${s.T}, ${s.iters} steps)`,
    );
    out[`${key}_tok_s`] = s.tokS;
    out[`${key}_ms_per_iter`] = s.msPerIter;
    out[`${key}_gflops`] = s.gflops;
    out[`${key}_dispatches_per_step`] = s.dispatchesPerStep;
    if (s.products.length) log("    matrix products of one profiled step (GPU time):");
    for (const p of s.products) {
      log(
        `      ${p.label.padEnd(44)} x${String(p.count).padEnd(3)} ${
          p.ms.toFixed(1).padStart(7)
        } ` +
          `ms ${p.gflops.toFixed(1).padStart(6)} GFLOP/s = ${share(p.gflops).padStart(4)}`,
      );
      out[`${key}_gflops ${p.label}`] = p.gflops;
    }
  };
  log("training, f32 (forward, backward and AdamW in one submission per step):");
  show("baby shape", "train", await measureTraining(gpu, BABY, 12, 64, quick ? 20 : 200));
  if (quick) return;
  show("GPT-2 small shape", "train_small", await measureTraining(gpu, SMALL, 4, 64, 3));
}

/** The small models both decode paths are measured on: tokens of prompt, tokens decoded. */
const SMALL_MODELS = [
  { key: "tiny", dir: "data/tiny-gpt2", prompt: 16, tokens: 100 },
  { key: "char", dir: "data/shakespeare-char", prompt: 16, tokens: 47 },
];

/**
 * The Python of HF transformers' environment for --peer: $HF_VENV/bin/python (default
 * ~/.cache/hf-venv), checked before anything is measured.
 */
function peerPython(): string {
  const venv = Deno.env.get("HF_VENV") ?? `${Deno.env.get("HOME") ?? ""}/.cache/hf-venv`;
  const python = `${venv}/bin/python`;
  try {
    Deno.statSync(python);
  } catch {
    throw new Error(`--peer: no ${python} (set HF_VENV to a venv with torch and transformers)`);
  }
  return python;
}

/**
 * HF transformers' cached decode tok/s on `dir` (scripts/hf_decode_peer.py): `greedy_tok_s`,
 * and with `topK40` also `topk40_tok_s`.
 */
async function hfDecodePeer(
  python: string,
  dir: string,
  prompt: number,
  tokens: number,
  reps: number,
  topK40: boolean,
): Promise<Record<string, number>> {
  const script = new URL("../scripts/hf_decode_peer.py", import.meta.url).pathname;
  const args = [script, dir, "--prompt", `${prompt}`, "--tokens", `${tokens}`];
  args.push("--reps", `${Math.max(reps, 3)}`, ...(topK40 ? ["--top-k", "40"] : []));
  const r = await new Deno.Command(python, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(r.stdout).trim();
  if (!r.success || !text) {
    const err = new TextDecoder().decode(r.stderr).trim().split("\n").at(-1);
    throw new Error(`--peer: scripts/hf_decode_peer.py ${dir} failed: ${err}`);
  }
  const o = JSON.parse(text.split("\n").at(-1)!);
  return Object.fromEntries(
    Object.entries(o).filter(([k, v]) =>
      /^(greedy|topk40)_tok_s$/.test(k) && typeof v === "number"
    ),
  ) as Record<string, number>;
}

/** The targets: kvgpt's fused decode over HF's, per measurement. */
const TARGETS = [
  {
    what: "tiny fixture, greedy",
    ours: "tiny_greedy_fused_tok_s",
    peer: "peer_tiny_greedy_tok_s",
    x: 1.5,
  },
  {
    what: "char model, greedy",
    ours: "char_greedy_fused_tok_s",
    peer: "peer_char_greedy_tok_s",
    x: 2,
  },
  {
    what: "char model, top-k 40",
    ours: "char_topk40_fused_tok_s",
    peer: "peer_char_topk40_tok_s",
    x: 1,
  },
];

/** A table of kvgpt's fused decode (each weight format) against the peer of the same run. */
function peerTable(out: Record<string, string | number>, formats: WeightFormat[]): string {
  const lines = ["fused decode against HF transformers (same run):"];
  for (const t of TARGETS) {
    const peer = out[t.peer] as number | undefined;
    if (peer === undefined) continue;
    const cells = formats.map((f) => {
      const ours = out[f === "f32" ? t.ours : `${t.ours}_f16w`] as number | undefined;
      if (ours === undefined) return `${f}: no fused path here`;
      const ratio = ours / peer;
      return `${f} ${ours.toFixed(0)} tok/s = ${ratio.toFixed(2)}x (${
        ratio >= t.x ? "met" : "not met"
      })`;
    });
    lines.push(
      `  ${t.what.padEnd(21)} target ${t.x}x · HF ${peer.toFixed(0).padStart(5)} tok/s · ` +
        cells.join(" · "),
    );
  }
  return lines.join("\n");
}

/** The sampled decode measured on the char model: top-k 40 at temperature 1. */
const TOP_K_40 = { temperature: 1, topK: 40, topP: 1 };

/** What one decode path did: tok/s (median) and dispatches per token. */
interface PathRun {
  tokS: number;
  dispatchesPerToken: number;
}

/**
 * `tokens` tokens chained after a `prompt`-token prefill, greedy or top-k 40 sampled, timed
 * from the first step to the tokens read back (one wait): the path's own throughput.
 */
async function decodePath(
  model: Runner,
  prompt: number,
  tokens: number,
  reps: number,
  sampled: boolean,
): Promise<PathRun> {
  const { gpu } = model;
  const cache = model.newCache();
  const ids = promptOf(prompt, model.config.vocabSize);
  let dispatches = 0;
  const count = (plan: Plan) => dispatches += plan.filter((s) => "pipeline" in s).length;
  const once = async (counted = false) => {
    cache.reset();
    await model.forward(ids.slice(0, -1), cache);
    const run = gpu.run;
    if (counted) {
      gpu.run = (plan: Plan, options?: RunOptions) => (count(plan), run.call(gpu, plan, options));
    }
    const t = performance.now();
    try {
      const first = ids.at(-1)!;
      if (sampled) {
        await model.decodeSample(first, cache, tokens, TOP_K_40, new Rng(1));
      } else await model.decodeGreedy(first, cache, tokens);
    } finally {
      gpu.run = run;
    }
    return performance.now() - t;
  };
  await once(true); // the warm-up, counting the dispatches
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) ms.push(await once());
  cache.destroy();
  return { tokS: tokens / (median(ms) / 1000), dispatchesPerToken: dispatches / tokens };
}

main("bench", async () => {
  const { values } = parseOptions(USAGE, Deno.args, {
    json: { type: "boolean", default: false },
    quick: { type: "boolean", default: false },
    reps: { type: "string", default: "3" },
    weights: { type: "string", default: "both" },
    train: { type: "boolean", default: false },
    peer: { type: "boolean", default: false },
    ceiling: { type: "boolean", default: false },
  });
  const reps = integer("--reps", values.reps, 1, Infinity);
  if (!["f32", "f16", "both"].includes(values.weights)) {
    throw new UsageError(`--weights: expected f32, f16 or both, got "${values.weights}"`);
  }
  const formats: WeightFormat[] = values.weights === "both"
    ? ["f32", "f16"]
    : [values.weights as WeightFormat];
  const log = values.json ? () => {} : (s: string) => console.log(s);
  const python = values.peer ? peerPython() : null;
  const gpu = await openGpu();
  log(`adapter: ${gpu.description}`);
  const out: Record<string, string | number> = { adapter: gpu.description };
  if (values.ceiling) {
    await benchCeiling(gpu, out, log);
    if (values.json) console.log(JSON.stringify(out));
    return;
  }
  if (values.train) {
    await benchTraining(gpu, values.quick, out, log);
    if (values.json) console.log(JSON.stringify(out));
    return;
  }
  const record = (field: string, f: WeightFormat, v: number, what: string) => {
    out[f === "f32" ? field : `${field}_f16w`] = v;
    log(`  ${what}: ${v.toFixed(v < 100 ? 2 : 1)} tok/s`);
  };

  for (const f of formats) {
    const tiny = (await openModel(gpu, "data/tiny-gpt2", { weights: f })).model;
    await tiny.warmup();
    log(`tiny fixture, ${f} weights, decode with the cache:`);
    const cpu = await decodeTokS(tiny, 16, 64, true, reps, false);
    record("tiny_decode_cache_tok_s", f, cpu, "token chosen on the CPU");
    const onGpu = await decodeTokS(tiny, 16, 100, true, reps, true);
    record("tiny_decode_greedy_gpu_tok_s", f, onGpu, "greedy on the GPU      ");
    tiny.destroy();
  }

  for (const f of formats) {
    for (const { key, dir, prompt, tokens } of SMALL_MODELS) {
      let fusedLimit: string | null = null; // the general model says, before the fused one
      for (const path of ["general", "fused"] as DecodePath[]) {
        if (path === "fused" && fusedLimit) { // e.g. OpenGL's llvmpipe: too few storage bindings
          log(`  ${dir}: no fused path on this adapter: ${fusedLimit}`);
          continue;
        }
        const { model } = await openModel(gpu, dir, { weights: f, decode: path });
        fusedLimit = model.fusedLimit;
        await model.warmup();
        const modes = key === "char" ? [false, true] : [false];
        for (const sampled of modes) {
          const r = await decodePath(model, prompt, tokens, reps, sampled);
          const what = `${key}_${sampled ? "topk40" : "greedy"}_${path}`;
          record(`${what}_tok_s`, f, r.tokS, `${dir}, ${what.replaceAll("_", " ")}`);
          out[`${what}_dispatches_per_token${f === "f32" ? "" : "_f16w"}`] = r.dispatchesPerToken;
          log(`    ${r.dispatchesPerToken.toFixed(1)} dispatches per token`);
        }
        model.destroy();
      }
      if (values.peer && f === formats[0]) {
        log(`  HF transformers on ${dir} (same prompt and tokens, 2 threads):`);
        const peer = await hfDecodePeer(python!, dir, prompt, tokens, reps, key === "char");
        for (const [field, v] of Object.entries(peer)) {
          out[`peer_${key}_${field}`] = v;
          log(`    ${field.replace("_tok_s", "")}: ${v.toFixed(1)} tok/s`);
        }
      }
    }
  }
  if (values.peer) log(peerTable(out, formats));

  for (const f of values.quick ? [] : formats) {
    const { model } = await openModel(gpu, EMBEDDED, { weights: f });
    await model.warmup();
    log(`GPT-2 small shape (124M, random weights), ${f} weights:`);
    for (const T of [16, 128, 512]) {
      record(`prefill_${T}_tok_s`, f, await prefillTokS(model, T, reps), `prefill ${T} tokens`);
    }
    const cached = await decodeTokS(model, 16, 128, true, reps);
    record("decode_cache_tok_s", f, cached, "decode 128 tokens with the cache");
    const uncached = await decodeTokS(model, 16, 32, false, 1);
    record("decode_nocache_tok_s", f, uncached, "decode 32 tokens without the cache");
    model.destroy();
  }
  if (values.json) console.log(JSON.stringify(out));
});
