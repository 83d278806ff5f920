/**
 * Typed wrappers for `softmax.wgsl`: the causal softmax of attention, and the vocabulary
 * softmax fused with cross-entropy and its gradient for training.
 *
 * @module
 */
import {
  checkLoopTrips,
  type Dispatch,
  f32bits,
  type Gpu,
  groups,
  MAX_LOOP_TRIPS,
  numel,
  type Tensor,
  workgrid,
} from "./gpu.ts";

import code from "./softmax.wgsl" with { type: "text" };

/**
 * Loop iterations of one causalSoftmax invocation over rows of `ld` keys: three loops over a
 * row's keys and one over the rest; the 8 rows of a SIMD batch differ by up to 7 keys, and the
 * longest of them counts in each loop.
 */
function softmaxTrips(ld: number): number {
  return 3 * ld + 11;
}

/**
 * The longest row causalSoftmax takes within {@link MAX_LOOP_TRIPS} (21,841 keys): a model's
 * n_positions may not pass it.
 */
export const MAX_SOFTMAX_ROW = Math.floor((MAX_LOOP_TRIPS - softmaxTrips(0)) / 3);

/**
 * Causal softmax in place over x: [nHead, T, ld]: row (h, t) covers keys 0 .. pos0 + t
 * (pos0 = start[0]); with `zeroTail` the rest of each row is set to 0. An invocation per row
 * loops about 3·ld times, so ld may not pass about 21,800 (see MAX_LOOP_TRIPS in gpu.ts).
 */
export function causalSoftmax(gpu: Gpu, start: Tensor, x: Tensor, zeroTail: boolean): Dispatch {
  const [nHead, T, ld] = x.shape;
  checkLoopTrips(`causalSoftmax: x[${x.shape}]`, softmaxTrips(ld));
  const rows = nHead * T;
  const params = gpu.uniform([rows, T, ld, zeroTail ? 1 : 0]);
  const kernel = gpu.kernel(code, "softmax");
  return gpu.dispatch(`softmax ${rows}x${ld}`, kernel, { p: params, start, x }, workgrid(rows, 64));
}

/** Most workgroups one dispatch of cross_entropy runs (a row each): WebGPU's default limit. */
const MAX_ROWS_PER_DISPATCH = 65535;

/** Columns up to which one invocation computes a whole row (a char model's vocabulary). */
const SMALL_VOCAB = 1024;

/**
 * Cross-entropy and its gradient in one pass, the gradient written over the logits (hence the
 * name). For each row n < N of logits [N, ldy] (first V columns): losses[n] = logsumexp(row) -
 * row[targets[n]], and the row is overwritten in place with dlogits =
 * (softmax(row) - onehot(targets[n])) * scale (columns >= V untouched). A workgroup per row,
 * reducing in workgroup memory, or up to SMALL_VOCAB columns an invocation per row; a
 * dispatch per 65535 rows. A target >= V gives a NaN loss.
 * targets: [N] u32, losses: [N] f32.
 */
export function crossEntropyGradInPlace(
  gpu: Gpu,
  logits: Tensor,
  V: number,
  targets: Tensor,
  losses: Tensor,
  scale: number,
): Dispatch[] {
  const [N, ldy] = logits.shape;
  if (logits.shape.length !== 2 || !(V >= 1 && V <= ldy)) {
    throw new Error(`crossEntropyGradInPlace: V ${V} does not fit logits[${logits.shape}]`);
  }
  if (numel(targets) !== N) {
    throw new Error(`crossEntropyGradInPlace: targets[${targets.shape}] is not [${N}]`);
  }
  if (numel(losses) !== N) {
    throw new Error(`crossEntropyGradInPlace: losses[${losses.shape}] is not [${N}]`);
  }
  // A workgroup per row reduces a wide row; up to SMALL_VOCAB columns one invocation does.
  const small = V <= SMALL_VOCAB;
  const kernel = gpu.kernel(code, small ? "cross_entropy_rows" : "cross_entropy");
  const dispatches = [];
  for (let row0 = 0; row0 < N; row0 += MAX_ROWS_PER_DISPATCH) {
    const rows = Math.min(MAX_ROWS_PER_DISPATCH, N - row0);
    const ce = gpu.uniform([row0, ldy, V, f32bits(scale), rows]);
    const bindings = { ce, logits, targets, losses };
    const grid = [small ? groups(rows, 64) : rows];
    dispatches.push(gpu.dispatch(`cross_entropy ${rows}x${V}`, kernel, bindings, grid));
  }
  return dispatches;
}
