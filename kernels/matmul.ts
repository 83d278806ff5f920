/**
 * Typed wrappers for `matmul.wgsl`: the Conv1D projections and the lm_head, both as
 * y = x @ w^T (+ b) with w stored [out, in], and, for training, their backward passes.
 *
 * @module
 */
import type { Uploader } from "./arena.ts";
import { checkLoopTrips, type Dispatch, type Gpu, groups, type Tensor } from "./gpu.ts";

import formula from "./gelu_formula.wgsl" with { type: "text" };
import kernels from "./matmul.wgsl" with { type: "text" };
import row from "./matmul_row.wgsl" with { type: "text" };

/** matmul.wgsl behind the GELU its epilogue calls and the row loop it shares with fused_decode.wgsl. */
const code = `${formula}\n${row}\n${kernels}`;

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

/** Uploads a [rows, cols] matrix (already [out, in]) in `format`, with `to` (or `gpu`). */
export function uploadWeight(
  gpu: Gpu,
  data: Float32Array,
  rows: number,
  cols: number,
  label: string,
  format: WeightFormat = "f32",
  to: Uploader = gpu,
): Weight {
  if (format === "f16" && cols % 4) {
    throw new Error(`${label}: f16 weights need rows of a multiple of 4 values, not ${cols}`);
  }
  const tensor = format === "f16"
    ? to.upload(packHalves(data), [rows, cols / 2], label)
    : to.upload(data, [rows, cols], label);
  return { tensor, rows, cols, format };
}

/**
 * Uploads a [rows, cols] matrix in row chunks that each fit one storage binding (of at most
 * `maxBytes`); chunks start at multiples of 4 rows. Uploaded with `to` (or `gpu`).
 */
export function uploadRowChunks(
  gpu: Gpu,
  data: Float32Array,
  rows: number,
  cols: number,
  label: string,
  maxBytes: number = gpu.maxBinding,
  format: WeightFormat = "f32",
  to: Uploader = gpu,
): RowChunks {
  const rowBytes = cols * (format === "f16" ? 2 : 4);
  const perPart = Math.max(4, Math.floor(maxBytes / rowBytes / 4) * 4);
  const parts = [];
  for (let row0 = 0; row0 < rows; row0 += perPart) {
    const n = Math.min(perPart, rows - row0);
    const slice = data.subarray(row0 * cols, (row0 + n) * cols);
    const name = `${label}[${row0}:${row0 + n}]`;
    const { tensor } = uploadWeight(gpu, slice, n, cols, name, format, to);
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
/** The `gelu` epilogue that also stores v itself (matmul.wgsl's epilogue 3). */
const GELU_KEEPING_PRE = 3;

/**
 * How the cpu design tiles a product of M >= 4 rows: 16 x 16 register tiles per invocation,
 * `wg` invocations per workgroup on consecutive output tiles (`matmul_rows16`) or on
 * consecutive row tiles (`matmul_rows16_by_rows`). (8 x 16 tiles lost to them: BENCHMARKS.md.)
 */
export interface Tiling {
  readonly entry: "matmul_rows16" | "matmul_rows16_by_rows";
  readonly wg: number;
}

/** The cpu design's tiling of an M x K x N product (M >= 4). */
export function tilingFor(_M: number, _K: number, _N: number): Tiling {
  return { entry: "matmul_rows16", wg: 8 };
}

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
  pre: Tensor | null = null,
  tiling: Tiling | null = null,
): Dispatch {
  const { rows: N, cols: K, tensor } = w;
  const [M, ldy] = y.shape;
  const code3 = pre ? GELU_KEEPING_PRE : EPILOGUES[epilogue];
  const params = gpu.uniform([M, N, K, xRow0, yCol0, ldy, b ? 1 : 0, code3]);
  // Without a bias the kernel never reads b; the weights stand in for the binding. The
  // kernels name the weights as f32 (w) and as f16 pairs (wh) and read the one F16 picks;
  // matmul_row_f16 reads f16 eights (wh8) alone.
  const f16 = w.format === "f16";
  const F16 = f16 ? 1 : 0;
  const bias = b ?? tensor;
  const weights = { w: tensor, wh: tensor, pre: pre ?? gpu.unused("no pre-activation") };
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
  if (M >= 4) {
    const { entry, wg } = tiling ?? tilingFor(M, K, N);
    const kernel = gpu.kernel(code, entry, { WG: wg, F16 });
    const [tilesN, tilesM] = [Math.ceil(N / 16), Math.ceil(M / 16)];
    const grid = entry === "matmul_rows16_by_rows"
      ? [groups(tilesM, wg), tilesN]
      : [groups(tilesN, wg), tilesM];
    return gpu.dispatch(label, kernel, { p: params, x, ...weights, b: bias, y }, grid);
  }
  const [entry, cols, rows, wg] = M > 1
    ? ["matmul_rows4", 4, 4, 16]
    : f16 && K % 8 === 0
    ? ["matmul_row_f16", 4, 1, 16]
    : ["matmul_row", 4, 1, 16];
  const bindings = {
    p: params,
    x,
    pre: weights.pre,
    ...(entry === "matmul_row_f16" ? { wh8: tensor } : weights),
  };
  const kernel = gpu.kernel(code, entry, { WG: wg, F16 });
  const grid = [groups(Math.ceil(N / cols), wg), Math.ceil(M / rows)];
  return gpu.dispatch(label, kernel, { ...bindings, b: bias, y }, grid);
}

/**
 * y = x @ w^T + b, an HF Conv1D with its weight stored transposed; with `epilogue` gelu,
 * y = gelu_new(x @ w^T + b), and with add, y += x @ w^T + b. With gelu and `pre` (training),
 * pre = x @ w^T + b too, the value before the activation, in the same pass.
 * x: [M, K], w: [N, K] (stored [out, in]), b: [N], y and pre: [M, N]. K a multiple of 4.
 */
export function matmul(
  gpu: Gpu,
  x: Tensor,
  w: Weight,
  b: Tensor,
  y: Tensor,
  epilogue: Epilogue = "none",
  pre: Tensor | null = null,
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
  if (pre && (epilogue !== "gelu" || `${pre.shape}` !== `${y.shape}`)) {
    throw new Error(`matmul: pre[${pre.shape}] needs the gelu epilogue and y's shape`);
  }
  const label = `matmul ${M}x${K}x${N}${epilogue === "none" ? "" : ` ${epilogue}`}`;
  return product(gpu, label, x, 0, w, b, y, 0, epilogue, pre);
}

/**
 * {@link matmul} (no epilogue) in the cpu design with a given tiling, for comparing tilings
 * (scripts/matmul_ab.ts); M >= 4.
 */
export function matmulTiled(
  gpu: Gpu,
  x: Tensor,
  w: Weight,
  b: Tensor,
  y: Tensor,
  tiling: Tiling,
): Dispatch {
  const [M, K] = x.shape;
  if (gpu.design !== "cpu" || M < 4 || w.cols !== K || y.shape[1] !== w.rows) {
    throw new Error(`matmulTiled: cpu design, M >= 4 and fitting shapes only`);
  }
  const label = `matmul ${M}x${K}x${w.rows} ${tiling.entry} wg ${tiling.wg}`;
  return product(gpu, label, x, 0, w, b, y, 0, "none", null, tiling);
}

/**
 * logits = x[row0 .. row0+M] @ w^T, the lm_head over a chunked [V, K] weight.
 * x: [*, K], w: [V, K] in row chunks, logits: [M, ldy] with ldy >= V (row stride).
 * Returns one dispatch per weight chunk and per block of logits rows that fits a binding.
 */
export function lmHead(
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

// ---- Backward, for training ----

/** Throws unless a weight the backward pass multiplies by or writes is stored f32. */
function requireF32(what: string, format: WeightFormat): void {
  if (format !== "f32") {
    throw new Error(`${what} is stored ${format}; the backward pass needs f32 weights`);
  }
}

/**
 * The parameters and dy bindings of a backward kernel: dy [M, ldy] read from column col0 for
 * N weight rows, read as vec4s when col0 and ldy allow.
 */
function gradInputs(
  gpu: Gpu,
  dy: Tensor,
  col0: number,
  N: number,
  K: number,
  accumulate: boolean,
  hasBias: boolean,
  gelu = false,
) {
  const [M, ldy] = dy.shape;
  // The kernels name dy as vec4s too, and a binding holds at least one.
  if (M * ldy < 4) throw new Error(`matmul backward: dy[${dy.shape}] has fewer than 4 values`);
  const params = [M, N, K, ldy, col0, accumulate ? 1 : 0, hasBias ? 1 : 0, gelu ? 1 : 0];
  const DY_VEC4 = ldy % 4 === 0 && col0 % 4 === 0 ? 1 : 0;
  return { M, DY_VEC4, bindings: { gp: gpu.uniform(params), dy, dy4: dy } };
}

/**
 * One dispatch of dx (+)= dy[:, col0 .. col0+N] @ w, times gelu_new'(geluOf) when given;
 * w: [N, K] f32, dx and geluOf: [M, K].
 */
function inputGradient(
  gpu: Gpu,
  label: string,
  dy: Tensor,
  col0: number,
  w: Tensor,
  dx: Tensor,
  accumulate: boolean,
  geluOf: Tensor | null = null,
): Dispatch {
  const [N, K] = w.shape;
  const { M, DY_VEC4, bindings } = gradInputs(gpu, dy, col0, N, K, accumulate, false, !!geluOf);
  // An invocation loops over the N weight rows, 16 (gpu) or 4 (cpu) at a time.
  checkLoopTrips(`${label}: w[${w.shape}]`, Math.ceil(N / (gpu.design === "gpu" ? 16 : 4)) + 1);
  const all = { ...bindings, w, dx, gelu_x: geluOf ?? gpu.unused("no gelu backward") };
  if (gpu.design === "gpu") {
    const kernel = gpu.kernel(code, "matmul_backward_input_tiled", { DY_VEC4 });
    return gpu.dispatch(label, kernel, all, [Math.ceil(K / 64), Math.ceil(M / 64)]);
  }
  const kernel = gpu.kernel(code, "matmul_backward_input_rows16", { WG: 8, DY_VEC4 });
  return gpu.dispatch(label, kernel, all, [groups(Math.ceil(M / 16), 8), Math.ceil(K / 16)]);
}

/**
 * One dispatch of dw (+)= dy[:, col0 .. col0+N]^T @ x and, with db, db = the column sums of
 * the same columns of dy. x: [M, K], dw: [N, K], db: [N].
 */
function weightGradient(
  gpu: Gpu,
  label: string,
  dy: Tensor,
  col0: number,
  x: Tensor,
  dw: Tensor,
  db: Tensor | null,
  accumulate: boolean,
): Dispatch {
  const [N, K] = dw.shape;
  const { M, DY_VEC4, bindings } = gradInputs(gpu, dy, col0, N, K, accumulate, db !== null);
  // An invocation loops over the M rows of dy and x, 16 (gpu) or 1 (cpu) at a time.
  checkLoopTrips(`${label}: dy[${dy.shape}]`, Math.ceil(M / (gpu.design === "gpu" ? 16 : 1)) + 1);
  // Without a bias the kernel never writes db, but names it: a small tensor stands in (not
  // dw, since two writable bindings of one buffer are invalid on some WebGPU implementations).
  const all = { ...bindings, x, dw, db: db ?? gpu.unused("no bias gradient") };
  if (gpu.design === "gpu") {
    const kernel = gpu.kernel(code, "matmul_backward_weight_tiled", { DY_VEC4 });
    return gpu.dispatch(label, kernel, all, [Math.ceil(K / 64), Math.ceil(N / 64)]);
  }
  const kernel = gpu.kernel(code, "matmul_backward_weight_rows16", { WG: 8, DY_VEC4 });
  return gpu.dispatch(label, kernel, all, [groups(Math.ceil(K / 16), 8), Math.ceil(N / 16)]);
}

/**
 * dx = dy @ w, or dx += dy @ w with `accumulate`: the input gradient of y = x @ w^T + b.
 * With `geluOf` (not with accumulate), dx = (dy @ w) · gelu_new'(geluOf): the gradient
 * carried on through the GELU whose output x was, geluOf being its input (GELU's backward in
 * the same pass). dy: [M, N] (row stride may exceed N: dy.shape = [M, ldy], only the first
 * w.rows columns are read), w: [N, K] f32 Weight, dx and geluOf: [M, K]. K a multiple of 4.
 * An invocation loops over the N weight rows, 4 (cpu design) or 16 (gpu) at a time: see
 * MAX_LOOP_TRIPS in gpu.ts.
 */
export function matmulBackwardInput(
  gpu: Gpu,
  dy: Tensor,
  w: Weight,
  dx: Tensor,
  accumulate = false,
  geluOf: Tensor | null = null,
): Dispatch {
  requireF32("matmulBackwardInput: w", w.format);
  const [M, ldy] = dy.shape;
  const { rows: N, cols: K } = w;
  if (ldy < N || dx.shape[0] !== M || dx.shape[1] !== K) {
    throw new Error(
      `matmulBackwardInput: shapes dy[${dy.shape}] w[${N},${K}] dx[${dx.shape}] do not fit`,
    );
  }
  if (K % 4) throw new Error(`matmulBackwardInput: K=${K} must be a multiple of 4`);
  if (geluOf && (accumulate || `${geluOf.shape}` !== `${dx.shape}`)) {
    throw new Error(`matmulBackwardInput: geluOf[${geluOf.shape}] needs dx's shape, no +=`);
  }
  const label = `matmul backward input ${M}x${N}x${K}${accumulate ? " +=" : ""}${
    geluOf ? " gelu" : ""
  }`;
  return inputGradient(gpu, label, dy, 0, w.tensor, dx, accumulate, geluOf);
}

/**
 * dw = dy^T @ x ([N, K], written, not accumulated) and, when db is given, db = sum over rows
 * of dy ([N]): the weight and bias gradients of y = x @ w^T + b.
 * dy: [M, N] (row stride may exceed N: dy.shape = [M, ldy]; then N comes from dw.shape[0] and
 * `col0` picks the first column of dy that belongs to dw's row 0), x: [M, K], dw: [N, K] f32,
 * db: [N] or null. K a multiple of 4. One dispatch: db is summed by the same kernel. An
 * invocation loops over the M rows, 1 (cpu design) or 16 (gpu) at a time: M may not pass about
 * 65,500 on the cpu design (see MAX_LOOP_TRIPS in gpu.ts).
 */
export function matmulBackwardWeight(
  gpu: Gpu,
  dy: Tensor,
  x: Tensor,
  dw: Tensor,
  db: Tensor | null,
  col0 = 0,
): Dispatch[] {
  const [M, ldy] = dy.shape;
  const [N, K] = dw.shape;
  if (
    x.shape[0] !== M || x.shape[1] !== K || col0 < 0 || col0 + N > ldy ||
    (db && db.shape[0] !== N)
  ) {
    throw new Error(
      `matmulBackwardWeight: shapes dy[${dy.shape}] col0 ${col0} x[${x.shape}] dw[${dw.shape}]` +
        `${db ? ` db[${db.shape}]` : ""} do not fit`,
    );
  }
  if (K % 4) throw new Error(`matmulBackwardWeight: K=${K} must be a multiple of 4`);
  const label = `matmul backward weight ${M}x${N}x${K}${db ? " +bias" : ""}`;
  return [weightGradient(gpu, label, dy, col0, x, dw, db, false)];
}

/**
 * The lm_head's backward over a weight stored in row chunks (GPT-2's 50257-row wte does not
 * fit one binding): dx = dlogits[:, :V] @ w (summed over every chunk), and each chunk's rows of
 * dw = dlogits[:, rows]^T @ x. dlogits: [M, ldy] (ldy >= V), x: [M, K], w: [V, K] RowChunks
 * f32, dx: [M, K] (written), dw: [V, K] RowChunks f32 of the same chunking as w (written).
 * Two dispatches per chunk (and per block of dlogits rows, when they exceed one binding).
 */
export function lmHeadBackward(
  gpu: Gpu,
  dlogits: Tensor,
  x: Tensor,
  w: RowChunks,
  dx: Tensor,
  dw: RowChunks,
): Dispatch[] {
  requireF32("lmHeadBackward: w", w.format);
  requireF32("lmHeadBackward: dw", dw.format);
  const [M, ldy] = dlogits.shape;
  const { rows: V, cols: K } = w;
  const sameChunks = dw.rows === V && dw.cols === K && dw.parts.length === w.parts.length &&
    dw.parts.every((p, i) =>
      p.row0 === w.parts[i].row0 && p.tensor.shape[0] === w.parts[i].tensor.shape[0]
    );
  if (!sameChunks) throw new Error("lmHeadBackward: dw must be chunked as w is");
  if (ldy < V || x.shape[0] !== M || x.shape[1] !== K || dx.shape[0] !== M || dx.shape[1] !== K) {
    throw new Error(
      `lmHeadBackward: shapes dlogits[${dlogits.shape}] x[${x.shape}] w[${V},${K}] ` +
        `dx[${dx.shape}] do not fit`,
    );
  }
  if (K % 4) throw new Error(`lmHeadBackward: K=${K} must be a multiple of 4`);
  // Rows of dlogits in blocks that each fit a binding (x and dx are cut the same way).
  const blockRows = Math.min(M, Math.max(1, Math.floor(gpu.maxBinding / (ldy * 4))));
  const aligned = (ldy * 4) % gpu.bindingAlignment === 0 && (K * 4) % gpu.bindingAlignment === 0;
  if (blockRows < M && !aligned) {
    throw new Error(
      `lmHeadBackward: dlogits[${dlogits.shape}] needs row blocks, and rows of ${ldy} and ` +
        `${K} floats are not aligned to ${gpu.bindingAlignment} bytes`,
    );
  }
  const rowsOf = (t: Tensor, r0: number, rows: number): Tensor => ({
    buffer: t.buffer,
    offset: t.offset + r0 * t.shape[1] * 4,
    shape: [rows, t.shape[1]],
  });
  const out: Dispatch[] = [];
  for (let r0 = 0; r0 < M; r0 += blockRows) {
    const rows = Math.min(blockRows, M - r0);
    const [dyBlock, xBlock, dxBlock] = [dlogits, x, dx].map((t) => rowsOf(t, r0, rows));
    w.parts.forEach(({ row0, tensor }, i) => {
      const n = tensor.shape[0];
      const label = `lm_head backward ${rows}x${n}x${K}`;
      out.push(inputGradient(gpu, `${label} dx`, dyBlock, row0, tensor, dxBlock, i > 0));
      const dwPart = dw.parts[i].tensor;
      out.push(weightGradient(gpu, `${label} dw`, dyBlock, row0, xBlock, dwPart, null, r0 > 0));
    });
  }
  return out;
}
