/**
 * Typed wrappers for `embedding.wgsl`: the forward and, for training, the backward.
 *
 * @module
 */
import { checkLoopTrips, type Dispatch, type Gpu, groups, type Tensor, workgrid } from "./gpu.ts";
import type { RowChunks } from "./matmul.ts";

import code from "./embedding.wgsl" with { type: "text" };

/**
 * x = wte[ids] + wpe[pos0 .. pos0+T].
 * ids: [T] u32; start: [1+] u32 holding pos0 (or `positions`: [T] u32, each row's own); wte: [V, C] in row chunks; wpe: [P, C]; x: [T, C].
 */
export function embedding(
  gpu: Gpu,
  ids: Tensor,
  start: Tensor,
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
      start,
      wte: part.tensor,
      wteh: part.tensor,
      wpe,
      x,
      positions: positions ?? ids,
    };
    return gpu.dispatch(`embedding ${T}x${C}`, kernel, bindings, workgrid((T * C) / 4, 64));
  });
}

/**
 * Backward of x = wte[ids] + wpe[t] for B sequences of T tokens (row n = b*T + t, position t):
 * dwte += scatter of dx rows by token id (accumulates: the lm_head's gradient is already
 * there); dwpe[t] = sum_b dx[b*T + t] for t < T, and 0 for rows t >= T (written).
 * ids: [B*T] u32 (or longer: the first B*T are read), dx: [B*T, C], dwte: [V, C] RowChunks f32
 * (same chunking as wte), dwpe: [P, C], links: [>= B*T] u32 scratch (each row's next row of
 * the same token). Deterministic: each token's rows are added in row order, each vec4 column
 * by one invocation, which loops at most B*T times (so B*T may not pass about 65,500: see
 * MAX_LOOP_TRIPS in gpu.ts). Dispatches: the links, dwpe, then one per chunk of dwte.
 */
export function embeddingBackward(
  gpu: Gpu,
  ids: Tensor,
  dx: Tensor,
  T: number,
  dwte: RowChunks,
  dwpe: Tensor,
  links: Tensor,
): Dispatch[] {
  if (dwte.format !== "f32") {
    throw new Error(`embeddingBackward: dwte is stored ${dwte.format}; gradients need f32`);
  }
  const [N, C] = dx.shape;
  const P = dwpe.shape[0];
  if (
    C % 4 || dwte.cols !== C || dwpe.shape[1] !== C || ids.shape[0] < N || T < 1 || N % T ||
    T > P || links.shape[0] < N
  ) {
    throw new Error(
      `embeddingBackward: ids[${ids.shape}] dx[${dx.shape}] T=${T} ` +
        `dwte[${dwte.rows},${dwte.cols}] dwpe[${dwpe.shape}] links[${links.shape}] do not fit`,
    );
  }
  // Per invocation: embedding_links looks over the other N - 1 rows (and its SIMD batch's
  // neighbours' reach, 8 rows more); embedding_backward walks at most N rows.
  checkLoopTrips(`embeddingBackward: dx[${dx.shape}]`, N + 8);
  // Small workgroups on a CPU adapter, so that a few hundred rows spread over every core.
  const WG = gpu.design === "cpu" ? 8 : 64;
  const kernel = (entry: string) => gpu.kernel(code, entry, { WG });
  const C4 = C / 4;
  const label = `embedding backward ${N}x${C}`;
  const params = (row0: number, rows: number) => gpu.uniform([N, T, P, C4, row0, rows]);
  const gp = params(0, 0);
  return [
    gpu.dispatch(`${label} links`, kernel("embedding_links"), { gp, ids, links }, [
      groups(N, WG),
    ]),
    gpu.dispatch(
      `${label} dwpe`,
      kernel("embedding_positions"),
      { gp, dx, dwpe },
      workgrid(P * C4, WG),
    ),
    ...dwte.parts.map((part) =>
      gpu.dispatch(
        `${label} dwte`,
        kernel("embedding_backward"),
        { gp: params(part.row0, part.tensor.shape[0]), ids, dx, dwte: part.tensor, next: links },
        workgrid(N * C4, WG),
      )
    ),
  ];
}
