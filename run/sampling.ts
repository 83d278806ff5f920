/**
 * Choosing the next token from a row of logits: greedy, temperature, top-k
 * and top-p (nucleus) sampling, with a seeded random number generator.
 *
 * @module
 */
import type { Rng } from "../base/rng.ts";

/** How {@linkcode sampleToken} turns logits into a token. */
export interface SamplingOptions {
  /** Softmax temperature, `>= 0`; `0` means greedy (argmax). */
  temperature: number;
  /** Keep only the `topK` most likely tokens; `0` turns this off. */
  topK: number;
  /** Keep the smallest set of tokens with probability mass `>= topP`, in (0, 1]; `1` turns this off. */
  topP: number;
}

/**
 * Throws an error naming the first invalid option: `temperature` must be
 * finite and `>= 0`, `topK` an integer `>= 0`, `topP` in (0, 1].
 */
export function validateSampling(opts: SamplingOptions): void {
  if (typeof opts !== "object" || opts === null) {
    throw new TypeError(`sampling options must be an object, got ${opts}`);
  }
  const { temperature, topK, topP } = opts;
  if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature < 0) {
    throw new RangeError(`temperature must be a finite number >= 0, got ${temperature}`);
  }
  if (typeof topK !== "number" || !Number.isInteger(topK) || topK < 0) {
    throw new RangeError(`topK must be an integer >= 0 (0 = off), got ${topK}`);
  }
  if (typeof topP !== "number" || !(topP > 0 && topP <= 1)) {
    throw new RangeError(`topP must be in (0, 1] (1 = off), got ${topP}`);
  }
}

/** Index of the largest logit; the first one on ties. NaNs are skipped. */
export function argmax(logits: Float32Array): number {
  if (logits.length === 0) throw new RangeError("argmax: logits are empty");
  let best = 0;
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > max) {
      max = logits[i];
      best = i;
    }
  }
  return best;
}

/**
 * Next token from `logits`. Temperature 0 is greedy ({@linkcode argmax}).
 * Otherwise the distribution is softmax(logits / temperature), cut to the
 * `topK` most likely tokens (if set), then to the smallest most-likely set
 * whose mass, renormalised after top-k, reaches `topP` (if below 1); one
 * token is drawn from what is left, renormalised, using `rng`. Ties are
 * broken towards the lower id. This is the order of Hugging Face's
 * temperature, top-k and top-p warpers.
 *
 * Cost: a few passes over the vocabulary, plus a heap of size `topK` when
 * top-k is on; top-p alone uses a quickselect, never a full sort.
 */
export function sampleToken(logits: Float32Array, opts: SamplingOptions, rng: Rng): number {
  validateSampling(opts);
  if (logits.length === 0) throw new RangeError("sampleToken: logits are empty");
  if (opts.temperature === 0) return argmax(logits);
  checkLogits(logits);
  const { temperature, topK, topP } = opts;
  if (topK > 0 && topK < logits.length) {
    const ids = topKIndices(logits, topK);
    const weights = softmaxWeights(logits, ids, temperature);
    const kept = topP < 1 ? nucleusSize(weights, topP * sum(weights)) : ids.length;
    return ids[drawIndex(weights, kept, rng)];
  }
  const weights = softmaxWeights(logits, null, temperature);
  if (topP < 1) return sampleNucleus(weights, topP, rng);
  return drawIndex(weights, weights.length, rng);
}

/** Throws unless every logit is a number below +Infinity and one is finite. */
function checkLogits(logits: Float32Array): void {
  let anyFinite = false;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (Number.isNaN(v) || v === Infinity) {
      throw new RangeError(`sampleToken: logits[${i}] is ${v}; logits must be finite or -Infinity`);
    }
    anyFinite ||= v !== -Infinity;
  }
  if (!anyFinite) throw new RangeError("sampleToken: every logit is -Infinity");
}

/**
 * Unnormalised softmax weights `exp((logit - max) / temperature)` of `ids`
 * (all tokens when `null`); the best token gets weight 1.
 */
function softmaxWeights(
  logits: Float32Array,
  ids: Uint32Array | null,
  temperature: number,
): Float64Array {
  const n = ids ? ids.length : logits.length;
  const max = logits[ids ? ids[0] : argmax(logits)];
  const weights = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    weights[i] = Math.exp((logits[ids ? ids[i] : i] - max) / temperature);
  }
  return weights;
}

function sum(values: Float64Array, count = values.length): number {
  let total = 0;
  for (let i = 0; i < count; i++) total += values[i];
  return total;
}

/** Length of the shortest prefix of `weights` (sorted descending) whose sum reaches `target`. */
function nucleusSize(weights: Float64Array, target: number): number {
  let mass = 0;
  for (let i = 0; i < weights.length; i++) {
    mass += weights[i];
    if (mass >= target) return i + 1;
  }
  return weights.length;
}

/** Draws an index in `[0, count)` with probability proportional to `weights`. */
function drawIndex(weights: Float64Array, count: number, rng: Rng): number {
  let remaining = rng.next() * sum(weights, count);
  let last = 0;
  for (let i = 0; i < count; i++) {
    if (weights[i] <= 0) continue;
    last = i;
    remaining -= weights[i];
    if (remaining < 0) return i;
  }
  return last; // rounding left a sliver of mass past the end
}

/**
 * Top-p over the whole vocabulary without sorting it: find the weight at
 * which the nucleus ends, keep every token above it plus as many tied
 * tokens as needed (lowest ids first), and draw among those.
 */
function sampleNucleus(weights: Float64Array, topP: number, rng: Rng): number {
  const { threshold, ties } = nucleusThreshold(weights, topP * sum(weights));
  const ids = new Uint32Array(weights.length);
  const kept = new Float64Array(weights.length);
  let count = 0;
  let tiesLeft = ties;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i];
    if (w > threshold || (w === threshold && tiesLeft-- > 0)) {
      ids[count] = i;
      kept[count++] = w;
    }
  }
  return ids[drawIndex(kept, count, rng)];
}

/**
 * Quickselect on weight values: the nucleus holding `target` mass is every
 * weight above `threshold` plus `ties` weights equal to it. Expected O(n).
 */
function nucleusThreshold(
  weights: Float64Array,
  target: number,
): { threshold: number; ties: number } {
  let values = keepWhere(Float64Array.from(weights), (w) => w > 0);
  for (;;) {
    const pivot = medianOfThree(values);
    let above = 0;
    let aboveCount = 0;
    let equalCount = 0;
    for (let i = 0; i < values.length; i++) {
      const w = values[i];
      if (w > pivot) {
        above += w;
        aboveCount++;
      } else if (w === pivot) equalCount++;
    }
    if (above >= target) {
      values = keepWhere(values, (w) => w > pivot);
    } else if (above + equalCount * pivot >= target || aboveCount + equalCount === values.length) {
      return { threshold: pivot, ties: tiesNeeded(above, pivot, equalCount, target) };
    } else {
      target -= above + equalCount * pivot;
      values = keepWhere(values, (w) => w < pivot);
    }
  }
}

/** Moves the values passing `keep` to the front of `values`, in place; returns that part. */
function keepWhere(values: Float64Array, keep: (w: number) => boolean): Float64Array {
  let count = 0;
  for (let i = 0; i < values.length; i++) {
    if (keep(values[i])) values[count++] = values[i];
  }
  return values.subarray(0, count);
}

/** Fewest copies of `pivot` (at most `available`) that lift `above` to `target`. */
function tiesNeeded(above: number, pivot: number, available: number, target: number): number {
  let ties = Math.max(1, Math.min(available, Math.ceil((target - above) / pivot)));
  while (ties > 1 && above + (ties - 1) * pivot >= target) ties--;
  while (ties < available && above + ties * pivot < target) ties++;
  return ties;
}

function medianOfThree(values: Float64Array): number {
  const a = values[0];
  const b = values[values.length >> 1];
  const c = values[values.length - 1];
  return Math.max(Math.min(a, b), Math.min(Math.max(a, b), c));
}

/** Whether token `a` ranks above token `b`: larger logit, then lower id. */
function ranksAbove(logits: Float32Array, a: number, b: number): boolean {
  return logits[a] > logits[b] || (logits[a] === logits[b] && a < b);
}

/**
 * Indices of the `k` best logits, best first (ties: lower id first), found
 * with a size-`k` min-heap in O(n log k). `k` is capped at the vocabulary
 * size. Logits must not be NaN.
 */
export function topKIndices(logits: Float32Array, k: number): Uint32Array {
  if (!Number.isInteger(k) || k < 0) {
    throw new RangeError(`topKIndices: k must be an integer >= 0, got ${k}`);
  }
  const n = logits.length;
  k = Math.min(k, n);
  if (k === n) return sortIndices(logits, Uint32Array.from({ length: n }, (_, i) => i));
  const heap = new Uint32Array(k); // heap[0] is the worst of the kept
  for (let i = 0; i < k; i++) heap[i] = i;
  for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(logits, heap, i);
  for (let i = k; i < n; i++) {
    if (ranksAbove(logits, i, heap[0])) {
      heap[0] = i;
      siftDown(logits, heap, 0);
    }
  }
  return sortIndices(logits, heap);
}

/** Restores the min-heap property below `pos` (worst token at the root). */
function siftDown(logits: Float32Array, heap: Uint32Array, pos: number): void {
  const k = heap.length;
  for (;;) {
    const left = 2 * pos + 1;
    if (left >= k) return;
    const right = left + 1;
    const child = right < k && ranksAbove(logits, heap[left], heap[right]) ? right : left;
    if (!ranksAbove(logits, heap[pos], heap[child])) return;
    [heap[pos], heap[child]] = [heap[child], heap[pos]];
    pos = child;
  }
}

/** Sorts `indices` in place, best logit first, ties by lower id. */
function sortIndices(logits: Float32Array, indices: Uint32Array): Uint32Array {
  return indices.sort((a, b) => (logits[a] === logits[b] ? a - b : logits[b] - logits[a]));
}
