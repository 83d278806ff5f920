/**
 * Typed wrapper for `argmax.wgsl`.
 *
 * @module
 */
import { type Dispatch, type Gpu, type Tensor } from "./gpu.ts";

const code = await Deno.readTextFile(new URL("./argmax.wgsl", import.meta.url));

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
  const pipeline = gpu.pipeline(code, "argmax");
  return gpu.dispatch(`argmax ${n}`, pipeline, [gpu.uniform([n]), logits, ids, step, tokens], [1]);
}
