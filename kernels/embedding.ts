/**
 * Typed wrapper for `embedding.wgsl`.
 *
 * @module
 */
import { type Dispatch, type Gpu, type Tensor, workgrid } from "./gpu.ts";
import type { RowChunks } from "./matmul.ts";

const code = await Deno.readTextFile(new URL("./embedding.wgsl", import.meta.url));

/**
 * x = wte[ids] + wpe[pos0 .. pos0+T].
 * ids: [T] u32; step: [1+] u32 holding pos0 (or `positions`: [T] u32, each row's own); wte: [V, C] in row chunks; wpe: [P, C]; x: [T, C].
 */
export function embedding(
  gpu: Gpu,
  ids: Tensor,
  step: Tensor,
  wte: RowChunks,
  wpe: Tensor,
  x: Tensor,
  positions?: Tensor,
): Dispatch[] {
  const [T, C] = x.shape;
  if (C % 4 || wte.cols !== C || wpe.shape[1] !== C || ids.shape[0] < T) {
    throw new Error(
      `embedding: ids[${ids.shape}] wte[${wte.rows},${wte.cols}] ` +
        `wpe[${wpe.shape}] x[${x.shape}] do not fit`,
    );
  }
  const pipeline = gpu.pipeline(code, "embedding", { F16: wte.format === "f16" ? 1 : 0 });
  return wte.parts.map((part) => {
    const params = gpu.uniform([T, C / 4, part.row0, part.tensor.shape[0], positions ? 1 : 0]);
    // Both wte bindings (f32, f16 pairs) get the chunk: the kernel reads the one of F16.
    const bindings = [params, ids, step, part.tensor, wpe, x, positions ?? ids, part.tensor];
    return gpu.dispatch(`embedding ${T}x${C}`, pipeline, bindings, workgrid((T * C) / 4, 64));
  });
}
