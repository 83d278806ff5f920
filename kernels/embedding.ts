/**
 * Typed wrapper for `embedding.wgsl`.
 *
 * @module
 */
import { type Dispatch, type Gpu, type Tensor, workgrid } from "./gpu.ts";
import type { RowChunks } from "./matmul.ts";

import code from "./embedding.wgsl" with { type: "text" };

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
  const kernel = gpu.kernel(code, "embedding", { F16: wte.format === "f16" ? 1 : 0 });
  return wte.parts.map((part) => {
    const params = gpu.uniform([T, C / 4, part.row0, part.tensor.shape[0], positions ? 1 : 0]);
    // The kernel reads wte or wteh as F16 says, and positions only per row, but it names
    // all three, so each is bound.
    const bindings = {
      p: params,
      ids,
      step,
      wte: part.tensor,
      wteh: part.tensor,
      wpe,
      x,
      positions: positions ?? ids,
    };
    return gpu.dispatch(`embedding ${T}x${C}`, kernel, bindings, workgrid((T * C) / 4, 64));
  });
}
