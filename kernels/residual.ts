/**
 * Typed wrapper for `residual.wgsl`.
 *
 * @module
 */
import { type Dispatch, type Gpu, numel, type Tensor, workgrid } from "./gpu.ts";

const code = await Deno.readTextFile(new URL("./residual.wgsl", import.meta.url));

/** x += y in place; x, y: the same shape, a multiple of 4 elements. */
export function residual(gpu: Gpu, x: Tensor, y: Tensor): Dispatch {
  const n = numel(x);
  if (n !== numel(y) || n % 4) {
    throw new Error(`residual: x[${x.shape}] and y[${y.shape}] do not fit`);
  }
  const params = gpu.uniform([n / 4]);
  const pipeline = gpu.pipeline(code, "residual");
  return gpu.dispatch(`residual ${n}`, pipeline, [params, x, y], workgrid(n / 4, 64));
}
