/**
 * Training speed: steps per second of a {@link Trainer} on random token batches, as tokens
 * per second and as the arithmetic rate its matrix products reach.
 *
 * @module
 */
import type { Gpu } from "../kernels/gpu.ts";
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
    return {
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
