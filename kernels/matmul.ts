/**
 * Typed wrappers for `matmul.wgsl`: the Conv1D projections and the lm_head, both as
 * y = x @ w^T (+ b) with w stored [out, in].
 *
 * @module
 */
import { type Dispatch, type Gpu, groups, type Tensor } from "./gpu.ts";

const code = await Deno.readTextFile(new URL("./matmul.wgsl", import.meta.url));
const WG = 16;

/** A [rows, cols] f32 matrix stored as row ranges, each small enough to bind. */
export interface RowChunks {
  readonly rows: number;
  readonly cols: number;
  readonly parts: readonly { readonly row0: number; readonly tensor: Tensor }[];
}

/**
 * Uploads a [rows, cols] matrix in row chunks that each fit one storage binding (of at most
 * `maxBytes`); chunks start at multiples of 4 rows.
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

/** [rows, cols] -> [cols, rows], e.g. HF Conv1D's [in, out] weight to [out, in]. */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  }
  return out;
}

/** One dispatch of y[:, yCol0 ..] = x[xRow0 .., :] @ w^T (+ b); M from the rows of y. */
function product(
  gpu: Gpu,
  label: string,
  x: Tensor,
  xRow0: number,
  w: Tensor,
  b: Tensor | null,
  y: Tensor,
  yCol0: number,
): Dispatch {
  const [N, K] = w.shape;
  const [M, ldy] = y.shape;
  const params = gpu.uniform([M, N, K, xRow0, yCol0, ldy, b ? 1 : 0]);
  // Without a bias the kernel never reads b; w stands in for the binding.
  const bindings = [params, x, w, b ?? w, y];
  if (M < 4) {
    const pipeline = gpu.pipeline(code, "matmul_row", { WG: 64 });
    return gpu.dispatch(label, pipeline, bindings, [groups(Math.ceil(N / 4), 64), M]);
  }
  const pipeline = gpu.pipeline(code, "matmul_rows16", { WG: 16 });
  return gpu.dispatch(label, pipeline, bindings, [
    groups(Math.ceil(N / 16), 16),
    Math.ceil(M / 16),
  ]);
}

/**
 * y = x @ w^T + b, an HF Conv1D with its weight stored transposed.
 * x: [M, K], w: [N, K] (stored [out, in]), b: [N], y: [M, N]. K a multiple of 4.
 */
export function matmul(gpu: Gpu, x: Tensor, w: Tensor, b: Tensor, y: Tensor): Dispatch {
  const [M, K] = x.shape;
  const N = w.shape[0];
  if (w.shape[1] !== K || b.shape[0] !== N || y.shape[0] !== M || y.shape[1] !== N) {
    throw new Error(
      `matmul: shapes x[${x.shape}] w[${w.shape}] b[${b.shape}] y[${y.shape}] do not fit`,
    );
  }
  if (K % 4) throw new Error(`matmul: K=${K} must be a multiple of 4`);
  return product(gpu, `matmul ${M}x${K}x${N}`, x, 0, w, b, y, 0);
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
    const block: Tensor = {
      buffer: logits.buffer,
      offset: logits.offset + r0 * ldy * 4,
      shape: [rows, ldy],
    };
    for (const part of w.parts) {
      const label = `lm_head ${rows}x${K}x${part.tensor.shape[0]}`;
      out.push(product(gpu, label, x, xRow0 + r0, part.tensor, null, block, part.row0));
    }
  }
  return out;
}
