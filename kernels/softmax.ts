/**
 * Typed wrapper for `softmax.wgsl`.
 *
 * @module
 */
import { type Dispatch, type Gpu, type Tensor, workgrid } from "./gpu.ts";

import code from "./softmax.wgsl" with { type: "text" };

/**
 * Causal softmax in place over x: [nHead, T, ld]: row (h, t) covers keys 0 .. pos0 + t
 * (pos0 = step[0]); with `zeroTail` the rest of each row is set to 0.
 */
export function causalSoftmax(gpu: Gpu, step: Tensor, x: Tensor, zeroTail: boolean): Dispatch {
  const [nHead, T, ld] = x.shape;
  const rows = nHead * T;
  const params = gpu.uniform([rows, T, ld, zeroTail ? 1 : 0]);
  const kernel = gpu.kernel(code, "softmax");
  return gpu.dispatch(`softmax ${rows}x${ld}`, kernel, { p: params, step, x }, workgrid(rows, 64));
}
