/**
 * Typed wrapper for `argmax.wgsl`: greedy decoding's pick on the GPU ({@link greedyPick}); the
 * CPU's argmax of a logits row is run/sampling.ts's `argmax`.
 *
 * @module
 */
import { type Dispatch, type Gpu, type Tensor } from "./gpu.ts";

import code from "./argmax.wgsl" with { type: "text" };

/**
 * Invocations of a pick's one workgroup (greedyPick here, sample.ts's samplePick), per kernel
 * design. On a CPU adapter a workgroup runs on one thread whatever its size, and the OpenGL
 * backend builds the 64-wide kernels faster, since their workgroup arrays shrink with it:
 * argmax in 0.15 s against 0.77 s at 256, samplePick in ~1.7 s against ~6 s (with Mesa's
 * shader cache off; the cache keeps them).
 */
export const PICK_WG = { cpu: 64, gpu: 256 };

/**
 * Picks the largest of the first `n` logits: writes it to ids[0] and tokens[start[1]], then
 * advances start[0] (pos0) and start[1] (tokens chosen).
 * logits: [1, >= n]; ids: [>= 1] u32; start: [>= 2] u32; tokens: [*] u32.
 */
export function greedyPick(
  gpu: Gpu,
  logits: Tensor,
  n: number,
  ids: Tensor,
  start: Tensor,
  tokens: Tensor,
): Dispatch {
  if (logits.shape.at(-1)! < n || start.shape[0] < 2) {
    throw new Error(`greedyPick: logits[${logits.shape}] n=${n} start[${start.shape}] do not fit`);
  }
  const kernel = gpu.kernel(code, "argmax", { WG: PICK_WG[gpu.design] });
  const bindings = { p: gpu.uniform([n]), logits, ids, start, tokens };
  return gpu.dispatch(`argmax ${n}`, kernel, bindings, [1]);
}
