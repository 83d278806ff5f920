/**
 * Typed wrapper for `layernorm.wgsl`.
 *
 * @module
 */
import { type Dispatch, f32bits, type Gpu, groups, type Tensor } from "./gpu.ts";

import code from "./layernorm.wgsl" with { type: "text" };

/** y = LayerNorm(x) * weight + bias. x, y: [T, C]; weight, bias: [C]. */
export function layerNorm(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  y: Tensor,
  eps: number,
): Dispatch {
  const [T, C] = x.shape;
  if (C % 4 || weight.shape[0] !== C || bias.shape[0] !== C || y.shape[0] !== T) {
    throw new Error(`layernorm: x[${x.shape}] weight[${weight.shape}] y[${y.shape}] do not fit`);
  }
  const params = gpu.uniform([T, C, f32bits(eps)]);
  const kernel = gpu.kernel(code, "layernorm");
  return gpu.dispatch(`layernorm ${T}x${C}`, kernel, { p: params, x, weight, bias, y }, [
    groups(T, 64),
  ]);
}
