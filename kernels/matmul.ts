/**
 * Typed wrappers for `matmul.wgsl`: the Conv1D projections and the lm_head.
 *
 * @module
 */
import { type Dispatch, type Gpu, groups, type Tensor } from "./gpu.ts";

const code = await Deno.readTextFile(new URL("./matmul.wgsl", import.meta.url));
const WG = 64;
const TN = 2;

/** A [rows, cols] f32 matrix stored as row ranges, each small enough to bind. */
export interface RowChunks {
  readonly rows: number;
  readonly cols: number;
  readonly parts: readonly { readonly row0: number; readonly tensor: Tensor }[];
}

/**
 * Uploads a [rows, cols] matrix in row chunks that each fit one storage binding
 * (`maxBytes`, the device's binding limit unless a test asks for smaller chunks).
 */
export function uploadRowChunks(
  gpu: Gpu,
  data: Float32Array,
  rows: number,
  cols: number,
  label: string,
  maxBytes: number = gpu.maxBinding,
): RowChunks {
  const perPart = Math.max(4, Math.floor(maxBytes / (cols * 4) / 4) * 4);
  const parts = [];
  for (let row0 = 0; row0 < rows; row0 += perPart) {
    const n = Math.min(perPart, rows - row0);
    const slice = data.subarray(row0 * cols, (row0 + n) * cols);
    parts.push({ row0, tensor: gpu.upload(slice, [n, cols], `${label}[${row0}:${row0 + n}]`) });
  }
  return { rows, cols, parts };
}

/** Rows per invocation: one for the decode shape, a register tile for prefill. */
function rowTile(m: number): number {
  return m === 1 ? 1 : m < 8 ? 4 : 8;
}

/**
 * y = x @ w + b, HF Conv1D.
 * x: [M, K], w: [K, N] (stored [in, out]), b: [N], y: [M, N]. K and N multiples of 4.
 */
export function matmul(gpu: Gpu, x: Tensor, w: Tensor, b: Tensor, y: Tensor): Dispatch {
  const [M, K] = x.shape;
  const N = w.shape[1];
  if (w.shape[0] !== K || b.shape[0] !== N || y.shape[0] !== M || y.shape[1] !== N) {
    throw new Error(
      `matmul: shapes x[${x.shape}] w[${w.shape}] b[${b.shape}] y[${y.shape}] do not fit`,
    );
  }
  if (K % 4 || N % 4) throw new Error(`matmul: K=${K} and N=${N} must be multiples of 4`);
  const TM = rowTile(M);
  const pipeline = gpu.pipeline(code, "matmul", { TM, TN, WG });
  const params = gpu.uniform([M, N, K, 0, 0, N]);
  return gpu.dispatch(`matmul ${M}x${K}x${N}`, pipeline, [params, x, w, b, y], [
    groups(Math.ceil(N / 4 / TN), WG),
    Math.ceil(M / TM),
  ]);
}

/**
 * logits = x[row0 .. row0+M] @ w^T, the lm_head over a chunked [V, K] weight.
 * x: [*, K], w: [V, K] in row chunks, logits: [M, ldy] with ldy >= V (row stride).
 * Returns one dispatch per weight chunk and per block of logits rows that fits a binding.
 */
export function matmulTransposed(
  gpu: Gpu,
  x: Tensor,
  xRow0: number,
  w: RowChunks,
  logits: Tensor,
): Dispatch[] {
  const K = x.shape[1];
  const [M, ldy] = logits.shape;
  if (w.cols !== K || ldy < w.rows || xRow0 + M > x.shape[0]) {
    throw new Error(
      `lm_head: x[${x.shape}] row ${xRow0}, w[${w.rows},${w.cols}], ` +
        `logits[${logits.shape}] do not fit`,
    );
  }
  if (K % 4 || (ldy * 4) % gpu.bindingAlignment) {
    throw new Error(`lm_head: K=${K} must be a multiple of 4 and the logits stride aligned`);
  }
  const blockRows = Math.max(1, Math.floor(gpu.maxBinding / (ldy * 4)));
  const out: Dispatch[] = [];
  for (let r0 = 0; r0 < M; r0 += blockRows) {
    const rows = Math.min(blockRows, M - r0);
    const TM = rowTile(rows);
    const pipeline = gpu.pipeline(code, "matmul_wt", { TM, TN, WG });
    const block: Tensor = {
      buffer: logits.buffer,
      offset: logits.offset + r0 * ldy * 4,
      shape: [rows, ldy],
    };
    for (const part of w.parts) {
      const n = part.tensor.shape[0];
      const params = gpu.uniform([rows, n, K, xRow0 + r0, part.row0, ldy]);
      out.push(gpu.dispatch(`lm_head ${rows}x${K}x${n}`, pipeline, [
        params,
        x,
        part.tensor,
        undefined,
        undefined,
        block,
      ], [
        groups(Math.ceil(n / 4), WG),
        Math.ceil(rows / TM),
      ]));
    }
  }
  return out;
}
