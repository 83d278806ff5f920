/**
 * The soak run: `deno task soak [--generations N] [--model-cycles M]` runs N generations
 * (default 1,000) of the tiny fixture in one process, in a mix of greedy on the GPU, sampling,
 * growing caches, batches, snapshot save/load and the no-cache baseline, then M model
 * open/destroy cycles (default 100; three in four bare, one with a forward), and reports whether memory stayed flat: RSS after warm-up against the end of each
 * phase, and `Gpu.bytesAllocated` and the live cache bytes back at their start once the model
 * is destroyed. Exits 1 when the RSS growth of a phase passes its margin or bytes are held.
 * Run it with `--v8-flags=--expose-gc` (the task does) so that RSS is measured after a full
 * collection; without it, garbage V8 has not collected yet shows as growth.
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Gpu } from "../kernels/gpu.ts";
import { GPT2 } from "../model/gpt2.ts";
import { Runner } from "../run/runner.ts";
import { KVCache } from "../model/kv_cache.ts";
import { loadSnapshot, saveSnapshot } from "../model/snapshot.ts";
import { generate, generateBatch, type GenerateOptions, greedyOptions } from "../run/generate.ts";
import { Rng } from "../base/rng.ts";
import { parseConfig } from "../model/config.ts";
import { gpt2Init } from "../model/weights.ts";
import { Trainer } from "../train/trainer.ts";

/** The model every phase runs. */
const FIXTURE = new URL("../data/tiny-gpt2", import.meta.url).pathname;

/** RSS growth allowed per phase after warm-up, in MiB (a leak of one cache per generation
 * would pass it within ~40 generations; a leaked model within 3 cycles). */
export const RSS_MARGIN_MIB = 40;

/** What {@link soak} runs. */
export interface SoakOptions {
  /** Generations in the first phase (the first tenth, at least 5, warm up). */
  generations: number;
  /** Model open/destroy cycles in the second phase (the first 8 warm up). */
  modelCycles: number;
  /** Training cycles in the third phase: a model and trainer made, stepped, destroyed. */
  trainingCycles?: number;
  /** Called with a progress line now and then. */
  log?: (line: string) => void;
  /** For testing the check itself: keep one undestroyed cache per generation. */
  leak?: boolean;
}

/** RSS at the end of a phase's warm-up and at its end. */
export interface PhaseMemory {
  /** Operations after warm-up. */
  operations: number;
  /** RSS after warm-up, MiB. */
  startMiB: number;
  /** RSS at the end, MiB. */
  endMiB: number;
  /** Highest RSS seen after warm-up, MiB. */
  peakMiB: number;
  /** endMiB - startMiB. */
  growthMiB: number;
}

/** What {@link soak} measured. */
export interface SoakReport {
  generations: PhaseMemory;
  modelCycles: PhaseMemory;
  training: PhaseMemory;
  /** Snapshot save/load round trips done among the generations. */
  snapshots: number;
  /** Tokens generated in all. */
  tokens: number;
  /** `gpu.bytesAllocated` before the model was opened and after it was destroyed. */
  bytesAllocated: { start: number; end: number };
  /** {@link KVCache.liveBytes} before and after. */
  liveCacheBytes: { start: number; end: number };
  seconds: number;
}

/**
 * Resident set size in MiB, after the GPU is idle and, when the process runs with
 * `--v8-flags=--expose-gc` (as `deno task soak` does), after a full collection: what is
 * measured is memory still reachable, not garbage V8 has not collected yet.
 */
async function rssMiB(gpu: Gpu): Promise<number> {
  await gpu.sync();
  (globalThis as { gc?: () => void }).gc?.();
  return Deno.memoryUsage().rss / 2 ** 20;
}

/** Tracks RSS over a phase: warm-up first, then start, peak and end. */
class Phase {
  #start = 0;
  #peak = 0;
  #operations = 0;
  constructor(readonly gpu: Gpu, readonly warmup: number) {}

  /** Call after each operation `i` (0-based). */
  async after(i: number): Promise<void> {
    if (i + 1 < this.warmup) return;
    const rss = await rssMiB(this.gpu);
    if (i + 1 === this.warmup) this.#start = rss;
    else this.#operations++;
    this.#peak = Math.max(this.#peak, rss);
  }

  async end(): Promise<PhaseMemory> {
    const endMiB = await rssMiB(this.gpu);
    return {
      operations: this.#operations,
      startMiB: this.#start,
      endMiB,
      peakMiB: Math.max(this.#peak, endMiB),
      growthMiB: endMiB - this.#start,
    };
  }
}

/** One generation of the mix: which kind is chosen by `i`. */
async function oneGeneration(
  model: Runner,
  i: number,
  dir: string,
): Promise<{ tokens: number; snapshots: number }> {
  const rng = new Rng(i);
  const V = model.config.vocabSize;
  const prompt = Array.from({ length: 1 + (rng.nextUint32() % 24) }, () => rng.nextUint32() % V);
  const maxTokens = 4 + (i % 13);
  const sampled: GenerateOptions = {
    ...greedyOptions(maxTokens),
    temperature: 0.8,
    topK: 40,
    topP: 0.95,
    seed: i,
  };
  switch (i % 5) {
    case 0: { // greedy with the argmax on the GPU, preallocated cache
      using cache = model.newCache();
      return {
        tokens: (await generate(model, cache, prompt, greedyOptions(maxTokens))).ids.length,
        snapshots: 0,
      };
    }
    case 1: { // sampling on the CPU, growing cache
      using cache = model.newCache({ policy: "grow", initialCapacity: 4 });
      return { tokens: (await generate(model, cache, prompt, sampled)).ids.length, snapshots: 0 };
    }
    case 2: { // a batch of three
      const prompts = [prompt, prompt.slice(0, 1), [...prompt, 7]];
      const result = await generateBatch(model, prompts, sampled);
      return { tokens: result.ids.reduce((n, ids) => n + ids.length, 0), snapshots: 0 };
    }
    case 3: { // a snapshot saved, restored and continued
      using cache = model.newCache();
      await model.forward(prompt, cache);
      const path = join(dir, "soak.safetensors");
      await saveSnapshot(path, cache, prompt, model.model);
      using restored = (await loadSnapshot(path, model.model)).cache;
      const { logits } = await model.forward([prompt[0]], restored);
      return { tokens: logits.length > 0 ? 1 : 0, snapshots: 1 };
    }
    default: { // the no-cache baseline
      using cache = model.newCache({ policy: "grow", initialCapacity: 1 });
      const result = await generate(model, cache, prompt, { ...greedyOptions(4), useCache: false });
      return { tokens: result.ids.length, snapshots: 0 };
    }
  }
}

/** Runs both phases on `gpu` and reports what memory did. */
export async function soak(gpu: Gpu, options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? (() => {});
  const t0 = performance.now();
  // One model run first: the device keeps a few small buffers for its whole life (the
  // attention kernels' 32 bytes of scale placeholders), which are not a leak.
  const first = await Runner.load(gpu, FIXTURE);
  {
    using cache = first.newCache();
    await first.forward([1, 2], cache);
  }
  first.destroy();
  await gpu.sync();
  const bytesStart = gpu.bytesAllocated;
  const liveStart = KVCache.liveBytes;
  const dir = await Deno.makeTempDir({ prefix: "kvgpt-soak-" });
  let tokens = 0;
  let snapshots = 0;
  try {
    // Phase 1: generations in one process with one model.
    const model = await Runner.load(gpu, FIXTURE);
    const generations = new Phase(gpu, Math.max(5, Math.round(options.generations / 10)));
    const leaked: KVCache[] = [];
    for (let i = 0; i < options.generations; i++) {
      if (options.leak) leaked.push(model.newCache());
      const done = await oneGeneration(model, i, dir);
      tokens += done.tokens;
      snapshots += done.snapshots;
      await generations.after(i);
      if ((i + 1) % 100 === 0) {
        log(`  ${i + 1} generations, RSS ${(await rssMiB(gpu)).toFixed(1)} MiB`);
      }
    }
    const genMemory = await generations.end();
    model.destroy();

    // Phase 2: the model opened, run and destroyed again and again.
    const cycles = new Phase(gpu, 8);
    for (let i = 0; i < options.modelCycles; i++) {
      const opened = await Runner.load(gpu, FIXTURE);
      if (i % 4 === 0) { // mostly bare cycles, as a forward's submission also frees memory
        using cache = opened.newCache();
        await opened.forward([1, 2, 3, 4], cache);
      }
      opened.destroy();
      await cycles.after(i);
      if ((i + 1) % 20 === 0) {
        log(`  ${i + 1} model cycles, RSS ${(await rssMiB(gpu)).toFixed(1)} MiB`);
      }
    }
    const cycleMemory = await cycles.end();

    // Phase 3: training: a small model and its trainer, a few steps, both destroyed.
    const training = new Phase(gpu, 4);
    const config = parseConfig({
      vocab_size: 65,
      n_positions: 16,
      n_embd: 32,
      n_layer: 2,
      n_head: 4,
      bos_token_id: 0,
      eos_token_id: 0,
    }, "soak training config");
    const rng = new Rng(11);
    const batch = () =>
      Array.from(
        { length: 4 },
        () => Array.from({ length: 17 }, () => Math.floor(rng.next() * 65)),
      );
    for (let i = 0; i < (options.trainingCycles ?? 40); i++) {
      {
        using model = new GPT2(gpu, config, gpt2Init(config, i));
        using trainer = new Trainer(model, { B: 4, T: 16 });
        for (let s = 0; s < 3; s++) await trainer.step(batch(), { loss: s === 2 });
      }
      await training.after(i);
    }
    const trainingMemory = await training.end();
    await gpu.sync();
    return {
      generations: genMemory,
      modelCycles: cycleMemory,
      training: trainingMemory,
      snapshots,
      tokens,
      bytesAllocated: { start: bytesStart, end: gpu.bytesAllocated },
      liveCacheBytes: { start: liveStart, end: KVCache.liveBytes },
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Problems in a report: RSS growth past the margin, bytes not returned. */
export function soakProblems(report: SoakReport, marginMiB = RSS_MARGIN_MIB): string[] {
  const problems: string[] = [];
  for (
    const [name, phase] of [
      ["generations", report.generations],
      ["model cycles", report.modelCycles],
      ["training", report.training],
    ] as const
  ) {
    if (phase.growthMiB > marginMiB) {
      problems.push(
        `${name}: RSS grew ${phase.growthMiB.toFixed(1)} MiB after warm-up (margin ${marginMiB})`,
      );
    }
  }
  if (report.bytesAllocated.end !== report.bytesAllocated.start) {
    problems.push(
      `bytesAllocated ${report.bytesAllocated.end}, started at ${report.bytesAllocated.start}`,
    );
  }
  if (report.liveCacheBytes.end !== report.liveCacheBytes.start) {
    problems.push(
      `live cache bytes ${report.liveCacheBytes.end}, started at ${report.liveCacheBytes.start}`,
    );
  }
  return problems;
}

/** A phase as one line. */
function describePhase(name: string, p: PhaseMemory): string {
  const per100 = p.operations ? (100 * p.growthMiB) / p.operations : 0;
  return `${name}: ${p.operations} after warm-up; RSS ${p.startMiB.toFixed(1)} -> ` +
    `${p.endMiB.toFixed(1)} MiB (${p.growthMiB >= 0 ? "+" : ""}${p.growthMiB.toFixed(1)} MiB, ` +
    `${per100.toFixed(2)} MiB per 100), peak ${p.peakMiB.toFixed(1)} MiB`;
}

/** The report as text. */
export function formatReport(r: SoakReport): string {
  return [
    describePhase("generations", r.generations),
    describePhase("model cycles", r.modelCycles),
    describePhase("training cycles", r.training),
    `tokens generated: ${r.tokens}; snapshot round trips: ${r.snapshots}`,
    `bytesAllocated: ${r.bytesAllocated.start} before, ${r.bytesAllocated.end} after; ` +
    `live cache bytes: ${r.liveCacheBytes.start} before, ${r.liveCacheBytes.end} after`,
    `took ${r.seconds.toFixed(0)} s`,
  ].join("\n");
}

/**
 * `deno task soak [--generations N] [--model-cycles M] [--training-cycles T] [--json]`: `--json` prints the
 * {@link SoakReport} as one JSON line instead of text.
 */
async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      generations: { type: "string", default: "1000" },
      "model-cycles": { type: "string", default: "100" },
      "training-cycles": { type: "string", default: "100" },
      json: { type: "boolean", default: false },
      leak: { type: "boolean", default: false },
    },
  });
  const generations = Number(values.generations);
  const modelCycles = Number(values["model-cycles"]);
  const trainingCycles = Number(values["training-cycles"]);
  for (
    const [name, n] of [
      ["--generations", generations],
      ["--model-cycles", modelCycles],
      ["--training-cycles", trainingCycles],
    ] as const
  ) {
    if (!Number.isSafeInteger(n) || n < 1) {
      throw new Error(`soak: ${name} must be a positive integer`);
    }
  }
  using gpu = await Gpu.open();
  const log = values.json ? () => {} : (line: string) => console.log(line);
  log(
    `soak: ${generations} generations, ${modelCycles} model cycles, ${trainingCycles} training ` +
      `cycles; ${gpu.description}`,
  );
  const report = await soak(gpu, {
    generations,
    modelCycles,
    trainingCycles,
    log,
    leak: values.leak,
  });
  if (values.json) {
    console.log(JSON.stringify(report));
    return soakProblems(report).length ? 1 : 0;
  }
  console.log(formatReport(report));
  const problems = soakProblems(report);
  for (const p of problems) console.log(`NOT FLAT: ${p}`);
  if (!problems.length) {
    console.log(`flat: every phase within ${RSS_MARGIN_MIB} MiB, every byte returned`);
  }
  return problems.length ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
