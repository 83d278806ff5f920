/**
 * The learning-rate schedule of nanoGPT: a linear warm-up, then a cosine decay to a floor.
 *
 * @module
 */

/** Warm-up and cosine decay settings. */
export interface Schedule {
  /** Peak learning rate, reached at the end of the warm-up. */
  lr: number;
  /** The floor the cosine decays to. */
  minLr: number;
  /** Linear warm-up steps. */
  warmup: number;
  /** The step where the decay reaches minLr (and stays). */
  decayIters: number;
}

/**
 * The learning rate of step `it` (from 0): lr·(it+1)/(warmup+1) during the warm-up, then
 * minLr + ½(1 + cos(π·r))·(lr − minLr) with r the fraction of the decay done, then minLr.
 */
export function cosineLr(s: Schedule, it: number): number {
  if (it < s.warmup) return (s.lr * (it + 1)) / (s.warmup + 1);
  if (it > s.decayIters) return s.minLr;
  const ratio = s.decayIters > s.warmup ? (it - s.warmup) / (s.decayIters - s.warmup) : 1;
  return s.minLr + 0.5 * (1 + Math.cos(Math.PI * ratio)) * (s.lr - s.minLr);
}
