/**
 * Typed wrapper for `argmax.wgsl`.
 *
 * @module
 */
import { type Dispatch, type Gpu, type Tensor } from "./gpu.ts";

import code from "./argmax.wgsl" with { type: "text" };

/**
 * Picks the largest of the first `n` logits: writes it to ids[0] and tokens[step[1]], then
 * advances step[0] (pos0) and step[1] (tokens chosen).
 * logits: [1, >= n]; ids: [>= 1] u32; step: [>= 2] u32; tokens: [*] u32.
 */
export function argmax(
  gpu: Gpu,
  logits: Tensor,
  n: number,
  ids: Tensor,
  step: Tensor,
  tokens: Tensor,
): Dispatch {
  if (logits.shape.at(-1)! < n || step.shape[0] < 2) {
    throw new Error(`argmax: logits[${logits.shape}] n=${n} step[${step.shape}] do not fit`);
  }
  const kernel = gpu.kernel(code, "argmax");
  const bindings = { p: gpu.uniform([n]), logits, ids, step, tokens };
  return gpu.dispatch(`argmax ${n}`, kernel, bindings, [1]);
}
