/**
 * Training speed: steps per second of a {@link Trainer} on random token batches, as tokens
 * per second and as the arithmetic rate its matrix products reach.
 *
 * @module
 */
import type { Gpu, KernelTime } from "../kernels/gpu.ts";
import type { GPT2Config } from "../model/config.ts";
import { GPT2 } from "../model/gpt2.ts";
import { gpt2Init } from "../model/weights.ts";
import { Rng } from "../base/rng.ts";
import { Trainer } from "./trainer.ts";

/** One measured training shape. */
export interface TrainingSpeed {
  B: number;
  T: number;
  /** Parameters trained. */
  parameters: number;
  /** Steps timed (after two warm-up steps). */
  iters: number;
  msPerIter: number;
  tokS: number;
  /** Multiply-adds ×2 of the forward and backward per second, in GFLOP. */
  gflops: number;
  /** Compute dispatches per step. */
  dispatchesPerStep: number;
  /** Each matrix product shape's rate in one profiled step (empty without timestamps). */
  products: ProductRate[];
}

/** The GPU time and rate of one matrix product shape within a step. */
export interface ProductRate {
  /** The dispatch label, e.g. `matmul 768x128x384` (M x K x N in some order). */
  label: string;
  /** Dispatches of this label in the step. */
  count: number;
  /** GPU milliseconds of all of them. */
  ms: number;
  /** 2·M·N·K·count FLOP over that time, in GFLOP/s. */
  gflops: number;
}

/**
 * Groups the profiled dispatches that are matrix products (labels with three dimensions
 * `AxBxC`: matmul, lm_head and their backward) by label, largest total time first.
 */
export function productRates(times: readonly KernelTime[]): ProductRate[] {
  const byLabel = new Map<string, { count: number; ns: number; flop: number }>();
  for (const { label, ns } of times) {
    const dims = /^(matmul|lm_head)\b.*?(\d+)x(\d+)x(\d+)/.exec(label);
    if (!dims) continue;
    const flop = 2 * Number(dims[2]) * Number(dims[3]) * Number(dims[4]);
    const e = byLabel.get(label) ?? { count: 0, ns: 0, flop: 0 };
    byLabel.set(label, { count: e.count + 1, ns: e.ns + ns, flop: e.flop + flop });
  }
  return [...byLabel].map(([label, e]) => ({
    label,
    count: e.count,
    ms: e.ns / 1e6,
    gflops: e.flop / e.ns,
  })).sort((a, b) => b.ms - a.ms);
}

/**
 * FLOP of one training step (forward and backward, 3× the forward): every matrix product,
 * the lm_head, and causal attention's scores and values.
 */
export function trainingFlops(c: GPT2Config, B: number, T: number): number {
  const { nEmbd: C, nInner: I, nLayer: L, vocabSize: V } = c;
  const perToken = 2 * (L * (C * 3 * C + C * C + 2 * C * I) + V * C) +
    L * 2 * 2 * C * (T + 1) / 2; // q·k and p·v over the (T + 1) / 2 keys a query sees on average
  return 3 * perToken * B * T;
}

/** Times `iters` steps of a GPT-2 of `config` (GPT-2's init) on batches of B × T. */
export async function measureTraining(
  gpu: Gpu,
  config: GPT2Config,
  B: number,
  T: number,
  iters: number,
): Promise<TrainingSpeed> {
  const model = new GPT2(gpu, config, gpt2Init(config, 1));
  const trainer = new Trainer(model, { B, T });
  const rng = new Rng(2);
  const batch = () =>
    Array.from(
      { length: B },
      () => Array.from({ length: T + 1 }, () => Math.floor(rng.next() * config.vocabSize)),
    );
  try {
    for (let i = 0; i < 2; i++) await trainer.step(batch());
    const batches = Array.from({ length: iters }, batch);
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) await trainer.step(batches[i], { loss: i === iters - 1 });
    const msPerIter = (performance.now() - t0) / iters;
    let products: ProductRate[] = [];
    if (gpu.hasTimestamps) {
      await trainer.step(batch(), { profile: true });
      products = productRates(await gpu.readProfile());
    }
    return {
      dispatchesPerStep: trainer.dispatchesPerStep,
      products,
      B,
      T,
      parameters: trainer.parameterCount,
      iters,
      msPerIter,
      tokS: (B * T * 1000) / msPerIter,
      gflops: trainingFlops(config, B, T) / msPerIter / 1e6,
    };
  } finally {
    trainer.destroy();
    model.destroy();
  }
}
