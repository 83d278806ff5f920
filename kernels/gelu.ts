/**
 * Typed wrapper for `gelu.wgsl`.
 *
 * @module
 */
import { type Dispatch, type Gpu, numel, type Tensor, workgrid } from "./gpu.ts";

const code = await Deno.readTextFile(new URL("./gelu.wgsl", import.meta.url));

/** x = gelu_new(x) in place; x: any shape with a multiple of 4 elements. */
export function gelu(gpu: Gpu, x: Tensor): Dispatch {
  const n = numel(x);
  if (n % 4) throw new Error(`gelu: ${n} elements is not a multiple of 4`);
  const params = gpu.uniform([n / 4]);
  return gpu.dispatch(`gelu ${n}`, gpu.pipeline(code, "gelu"), [params, x], workgrid(n / 4, 64));
}
