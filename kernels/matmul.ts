/**
 * Typed wrappers for `matmul.wgsl`: the Conv1D projections and the lm_head, both as
 * y = x @ w^T (+ b) with w stored [out, in].
 *
 * @module
 */
import { type Dispatch, type Gpu, groups, type Tensor } from "./gpu.ts";

import code from "./matmul.wgsl" with { type: "text" };

/**
 * How a weight matrix is stored on the GPU: `f32` exactly as the checkpoint has it, or `f16`
 * packed two per u32 word, which halves the bytes (and, on llvmpipe, the reads) of every
 * product at the cost of rounding each weight to f16 (11 significant bits).
 */
export type WeightFormat = "f32" | "f16";

/** A [rows, cols] weight matrix on the GPU, stored [out, in] in a {@link WeightFormat}. */
export interface Weight {
  readonly tensor: Tensor; // [rows, cols] f32, or [rows, cols / 2] u32 words of f16 pairs
  readonly rows: number;
  readonly cols: number;
  readonly format: WeightFormat;
}

/** A [rows, cols] weight matrix stored as row ranges, each small enough to bind. */
export interface RowChunks {
  readonly rows: number;
  readonly cols: number;
  readonly format: WeightFormat;
  readonly parts: readonly { readonly row0: number; readonly tensor: Tensor }[];
}

/** The u32 words of `data` rounded to f16, two per word (element 2i in the low half). */
export function packHalves(data: Float32Array): Uint32Array {
  if (data.length % 2) throw new Error(`packHalves: ${data.length} values, not an even count`);
  return new Uint32Array(new Float16Array(data).buffer);
}

/** Uploads a [rows, cols] matrix (already [out, in]) in `format`. */
export function uploadWeight(
  gpu: Gpu,
  data: Float32Array,
  rows: number,
  cols: number,
  label: string,
  format: WeightFormat = "f32",
): Weight {
  if (format === "f16" && cols % 4) {
    throw new Error(`${label}: f16 weights need rows of a multiple of 4 values, not ${cols}`);
  }
  const tensor = format === "f16"
    ? gpu.upload(packHalves(data), [rows, cols / 2], label)
    : gpu.upload(data, [rows, cols], label);
  return { tensor, rows, cols, format };
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
  format: WeightFormat = "f32",
): RowChunks {
  const rowBytes = cols * (format === "f16" ? 2 : 4);
  const perPart = Math.max(4, Math.floor(maxBytes / rowBytes / 4) * 4);
  const parts = [];
  for (let row0 = 0; row0 < rows; row0 += perPart) {
    const n = Math.min(perPart, rows - row0);
    const slice = data.subarray(row0 * cols, (row0 + n) * cols);
    const { tensor } = uploadWeight(gpu, slice, n, cols, `${label}[${row0}:${row0 + n}]`, format);
    parts.push({ row0, tensor });
  }
  return { rows, cols, format, parts };
}

/** [rows, cols] -> [cols, rows], e.g. HF Conv1D's [in, out] weight to [out, in]. */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  }
  return out;
}

/**
 * What a product's value v = x @ w^T + b becomes as it is stored: `none`, y = v; `gelu`,
 * y = gelu_new(v) (the MLP's activation); `add`, y = y + v (the residual connection).
 */
export type Epilogue = "none" | "gelu" | "add";

const EPILOGUES: Record<Epilogue, number> = { none: 0, gelu: 1, add: 2 };

/** One dispatch of y[:, yCol0 ..] = x[xRow0 .., :] @ w^T (+ b); M from the rows of y. */
function product(
  gpu: Gpu,
  label: string,
  x: Tensor,
  xRow0: number,
  w: Weight,
  b: Tensor | null,
  y: Tensor,
  yCol0: number,
  epilogue: Epilogue = "none",
): Dispatch {
  const { rows: N, cols: K, tensor } = w;
  const [M, ldy] = y.shape;
  const params = gpu.uniform([M, N, K, xRow0, yCol0, ldy, b ? 1 : 0, EPILOGUES[epilogue]]);
  // Without a bias the kernel never reads b; the weights stand in for the binding. The
  // kernels name the weights as f32 (w) and as f16 pairs (wh) and read the one F16 picks;
  // matmul_row_f16 reads f16 eights (wh8) alone.
  const f16 = w.format === "f16";
  const F16 = f16 ? 1 : 0;
  const bias = b ?? tensor;
  const weights = { w: tensor, wh: tensor };
  if (gpu.design === "gpu") {
    const entry = M < 4 ? "matmul_gemv" : "matmul_tiled";
    const grid = M < 4
      ? [Math.min(N, 65535), M, Math.ceil(N / 65535)]
      : [Math.ceil(N / 64), Math.ceil(M / 64)];
    const bindings = { p: params, x, ...weights, b: bias, y };
    return gpu.dispatch(label, gpu.kernel(code, entry, { F16 }), bindings, grid);
  }
  // Design "cpu": register tiles, in small workgroups so that even a 768-output product
  // (48 invocations of 16 x 16 tiles in a 16-token prefill) spreads over both cores.
  const [entry, cols, rows, wg] = M >= 4
    ? ["matmul_rows16", 16, 16, 8]
    : M > 1
    ? ["matmul_rows4", 4, 4, 16]
    : f16 && K % 8 === 0
    ? ["matmul_row_f16", 4, 1, 16]
    : ["matmul_row", 4, 1, 16];
  const bindings = { p: params, x, ...(entry === "matmul_row_f16" ? { wh8: tensor } : weights) };
  const kernel = gpu.kernel(code, entry, { WG: wg, F16 });
  const grid = [groups(Math.ceil(N / cols), wg), Math.ceil(M / rows)];
  return gpu.dispatch(label, kernel, { ...bindings, b: bias, y }, grid);
}

/**
 * y = x @ w^T + b, an HF Conv1D with its weight stored transposed; with `epilogue` gelu,
 * y = gelu_new(x @ w^T + b), and with add, y += x @ w^T + b.
 * x: [M, K], w: [N, K] (stored [out, in]), b: [N], y: [M, N]. K a multiple of 4.
 */
export function matmul(
  gpu: Gpu,
  x: Tensor,
  w: Weight,
  b: Tensor,
  y: Tensor,
  epilogue: Epilogue = "none",
): Dispatch {
  const [M, K] = x.shape;
  const N = w.rows;
  if (w.cols !== K || b.shape[0] !== N || y.shape[0] !== M || y.shape[1] !== N) {
    throw new Error(
      `matmul: shapes x[${x.shape}] w[${w.rows},${w.cols}] b[${b.shape}] y[${y.shape}] ` +
        `do not fit`,
    );
  }
  if (K % 4) throw new Error(`matmul: K=${K} must be a multiple of 4`);
  const label = `matmul ${M}x${K}x${N}${epilogue === "none" ? "" : ` ${epilogue}`}`;
  return product(gpu, label, x, 0, w, b, y, 0, epilogue);
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
    for (const { row0, tensor } of w.parts) {
      const part: Weight = { tensor, rows: tensor.shape[0], cols: K, format: w.format };
      const label = `lm_head ${rows}x${K}x${part.rows}`;
      out.push(product(gpu, label, x, xRow0 + r0, part, null, block, row0));
    }
  }
  return out;
}
