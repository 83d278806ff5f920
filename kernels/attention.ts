/**
 * Typed wrappers for `attention.wgsl`: writing this step's K/V into the cache, causal
 * attention of this step's queries over everything cached (scores, softmax, values), and
 * its backward for training.
 *
 * @module
 */
import { type Dispatch, f32bits, type Gpu, groups, type Tensor, workgrid } from "./gpu.ts";
import { causalSoftmax } from "./softmax.ts";

import codec from "./kv_codec.wgsl" with { type: "text" };
import kernels from "./attention.wgsl" with { type: "text" };

/** attention.wgsl behind the cache encoding it shares with fused_decode.wgsl. */
const code = `${codec}\n${kernels}`;

/** How the cache stores K and V: f32, f16 (two per u32 word) or int8 (four, plus scales). */
export type CacheDType = "f32" | "f16" | "int8";

/** u32 words per cache row of `headDim` values. */
export function cacheWords(dtype: CacheDType, headDim: number): number {
  return headDim / { f32: 1, f16: 2, int8: 4 }[dtype];
}

/** int8 caches: the scale of every [head, position] row of K and of V, [seqs*nHead, P] each. */
export interface CacheScales {
  readonly k: Tensor;
  readonly v: Tensor;
}

/** The shapes the kernels share. */
interface Shapes {
  T: number;
  C: number;
  nHead: number;
  headDim: number;
  P: number;
  KV: number; // 0 f32, 1 f16, 2 int8
  row0: number;
  seqs: number;
}

/**
 * Rows of qkv (and out) a dispatch takes: `seqs` sequences (default 1) of `T` queries each,
 * sequence b at rows row0 + b*T .. row0 + b*T + T-1 (default: one sequence of all rows).
 */
export interface QueryRows {
  row0: number;
  T: number;
  seqs?: number;
}

// Caches are [seqs*nHead, P, words] (slab b*nHead + h); the words per row tell how values
// are stored.
function shapes(qkv: Tensor, kCache: Tensor, vCache: Tensor, rows?: QueryRows): Shapes {
  const C3 = qkv.shape[1];
  const T = rows?.T ?? qkv.shape[0];
  const row0 = rows?.row0 ?? 0;
  const seqs = rows?.seqs ?? 1;
  if (!Number.isInteger(seqs) || seqs < 1) throw new Error(`attention: seqs ${seqs} is not >= 1`);
  if (row0 + seqs * T > qkv.shape[0] || T < 1) {
    throw new Error(
      `attention: rows ${row0}..${row0 + seqs * T - 1} are not in qkv[${qkv.shape}]`,
    );
  }
  const [slabs, P, words] = kCache.shape;
  const nHead = slabs / seqs;
  const C = C3 / 3;
  const headDim = C / nHead;
  if (
    C3 % 3 || !Number.isInteger(nHead) || !Number.isInteger(headDim) ||
    vCache.shape.join() !== kCache.shape.join()
  ) {
    throw new Error(`attention: qkv[${qkv.shape}] and cache[${kCache.shape}] do not fit`);
  }
  if (headDim % 4) throw new Error(`attention: head_dim ${headDim} is not a multiple of 4`);
  const KV = (["f32", "f16", "int8"] as const).findIndex((d) => cacheWords(d, headDim) === words);
  if (KV < 0) {
    throw new Error(`attention: qkv[${qkv.shape}] and cache[${kCache.shape}] do not fit`);
  }
  return { T, C, nHead, headDim, P, KV, row0, seqs };
}

// Scale bindings: an int8 cache's own, else placeholders the kernels never read.
function scaleBindings(gpu: Gpu, s: Shapes, scales: CacheScales | undefined): CacheScales {
  if (s.KV === 2) {
    const shape = [s.seqs * s.nHead, s.P];
    if (!scales || scales.k.shape.join() !== shape.join()) {
      throw new Error(`attention: an int8 cache needs scales [${shape}]`);
    }
    return scales;
  }
  return { k: gpu.unused("no k scales"), v: gpu.unused("no v scales") };
}

function params(gpu: Gpu, s: Shapes, zeroTail = false): GPUBuffer {
  const scale = f32bits(1 / Math.sqrt(s.headDim));
  return gpu.uniform([s.T, s.C, s.P, scale, s.row0, zeroTail ? 1 : 0]);
}

/** What dispatch labels add for a batch of sequences: nothing for one. */
function seqsLabel(s: Shapes): string {
  return s.seqs > 1 ? ` (${s.seqs} seqs)` : "";
}

/** Queries per invocation: one for decode, a register tile for prefill. */
function queryTile(T: number): number {
  return T === 1 ? 1 : T < 8 ? 4 : 8;
}

/**
 * Writes K and V of this step into the cache at rows pos0 .. pos0+T-1, as f32, f16 or int8
 * with a scale per row (the cache's words per row say which); with `rows.seqs`, sequence b's
 * into cache slabs b*nHead .. b*nHead + nHead-1.
 * start: [1+] u32 holding pos0; qkv: [N, 3C]; kCache, vCache: [seqs*nHead, P, words].
 */
export function storeKv(
  gpu: Gpu,
  start: Tensor,
  qkv: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  scales?: CacheScales,
  rows?: QueryRows,
): Dispatch {
  const s = shapes(qkv, kCache, vCache, rows);
  const sc = scaleBindings(gpu, s, scales);
  const kernel = gpu.kernel(code, "store_kv", { HD: s.headDim, KV: s.KV });
  const bindings = { p: params(gpu, s), start, qkv, kCache, vCache, kScale: sc.k, vScale: sc.v };
  const words = s.T * s.C / [1, 2, 4][s.KV];
  const [x, y] = workgrid(words, 64);
  return gpu.dispatch(`store_kv ${s.T}x${s.C}${seqsLabel(s)}`, kernel, bindings, [x, y, s.seqs]);
}

/**
 * out[t] = softmax(q_t . K[0..pos0+t] * headDim^-0.5) @ V, per head: three dispatches
 * (scores, softmax, values), or for one query per sequence (decode) a single one,
 * attend_one. With `rows.seqs`, each sequence attends over its own cache slabs.
 * qkv: [N, 3C]; caches: [seqs*nHead, P, words] (f32, f16 or int8 with `scales`); out: [N, C];
 * probs: [seqs*nHead, T, P] scratch that ends up holding the softmax rows (with `zeroTail`,
 * zeros past each row's causal limit).
 */
export function attend(
  gpu: Gpu,
  start: Tensor,
  qkv: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  out: Tensor,
  probs: Tensor,
  zeroTail: boolean,
  scales?: CacheScales,
  rows?: QueryRows,
): Dispatch[] {
  const s = shapes(qkv, kCache, vCache, rows);
  const sc = scaleBindings(gpu, s, scales);
  if (out.shape[0] !== qkv.shape[0] || out.shape[1] !== s.C) {
    throw new Error(`attention: out[${out.shape}] is not [${qkv.shape[0]}, ${s.C}]`);
  }
  const slabs = s.seqs * s.nHead;
  if (probs.shape.join() !== [slabs, s.T, s.P].join()) {
    throw new Error(`attention: probs[${probs.shape}] is not [${slabs}, ${s.T}, ${s.P}]`);
  }
  // Queries are read as vec4s (q4); the cache as vec4s (k4, v4) when f32, else as words
  // (kw, vw) decoded with their scales. Each kernel names every view; KV picks the ones read.
  const cache = { k4: kCache, kw: kCache, kScale: sc.k, v4: vCache, vw: vCache, vScale: sc.v };
  if (s.T === 1 && s.headDim <= 256) {
    const kernel = gpu.kernel(code, "attend_one", { HD: s.headDim, KV: s.KV });
    const bindings = { p: params(gpu, s, zeroTail), start, q4: qkv, ...cache, out4: out, probs };
    return [gpu.dispatch(`attend.one ${s.C}${seqsLabel(s)}`, kernel, bindings, [slabs])];
  }
  const TM = queryTile(s.T);
  const consts = { HD: s.headDim, TM, KV: s.KV };
  const u = params(gpu, s);
  const rowTiles = Math.ceil(s.T / TM);
  return [
    gpu.dispatch(
      `attend.scores ${s.T}x${s.C}${seqsLabel(s)}`,
      gpu.kernel(code, "scores", consts),
      { p: u, start, q4: qkv, ...cache, probs },
      [groups(s.P / 4, 64), rowTiles, slabs],
    ),
    causalSoftmax(gpu, start, probs, zeroTail),
    gpu.dispatch(
      `attend.values ${s.T}x${s.C}${seqsLabel(s)}`,
      gpu.kernel(code, "values", consts),
      { p: u, start, ...cache, out4: out, probs },
      [1, rowTiles, slabs],
    ),
  ];
}

/**
 * Backward of out = softmax(q k^T * headDim^-0.5, causal) @ v for `rows.seqs` sequences of
 * `rows.T` rows, from position 0 (training: f32 caches, pos0 = 0, P >= T), in three
 * dispatches: dscores (dS = P * (dout v^T - rowsum) * scale into dprobs), dq, then dk and dv.
 * qkv: [N, 3C] (forward input), kCache/vCache: [seqs*nHead, P, headDim] f32 as storeKv wrote
 * them, probs: [seqs*nHead, T, P] softmax rows from the forward, dout: [N, C],
 * dqkv: [N, 3C] (written: dq | dk | dv in qkv's layout, rows of `rows` only),
 * dprobs: [seqs*nHead, T, P] scratch.
 */
export function attendBackward(
  gpu: Gpu,
  qkv: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  probs: Tensor,
  dout: Tensor,
  dqkv: Tensor,
  dprobs: Tensor,
  rows: QueryRows,
): Dispatch[] {
  const s = shapes(qkv, kCache, vCache, rows);
  if (s.KV !== 0) throw new Error(`attendBackward: cache[${kCache.shape}] is not f32`);
  if (s.P < s.T) throw new Error(`attendBackward: cache rows ${s.P} < T ${s.T}`);
  const slabs = s.seqs * s.nHead;
  for (const [name, t] of [["probs", probs], ["dprobs", dprobs]] as const) {
    if (t.shape.join() !== [slabs, s.T, s.P].join()) {
      throw new Error(`attendBackward: ${name}[${t.shape}] is not [${slabs}, ${s.T}, ${s.P}]`);
    }
  }
  if (dout.shape.join() !== [qkv.shape[0], s.C].join()) {
    throw new Error(`attendBackward: dout[${dout.shape}] is not [${qkv.shape[0]}, ${s.C}]`);
  }
  if (dqkv.shape.join() !== qkv.shape.join()) {
    throw new Error(`attendBackward: dqkv[${dqkv.shape}] is not [${qkv.shape}]`);
  }
  const TM = queryTile(s.T);
  const consts = { HD: s.headDim, TM, KV: 0 };
  const u = params(gpu, s);
  const rowTiles = Math.ceil(s.T / TM);
  const label = `${s.T}x${s.C}${seqsLabel(s)}`;
  return [
    gpu.dispatch(
      `attend_back.dscores ${label}`,
      gpu.kernel(code, "back_dscores", consts),
      { p: u, dout4: dout, v4: vCache, probs, dprobs },
      [groups(s.T, 64), 1, slabs],
    ),
    gpu.dispatch(
      `attend_back.dq ${label}`,
      gpu.kernel(code, "back_dq", consts),
      { p: u, k4: kCache, dprobs, dqkv4: dqkv },
      [1, rowTiles, slabs],
    ),
    gpu.dispatch(
      `attend_back.dkv ${label}`,
      gpu.kernel(code, "back_dkv", consts),
      { p: u, q4: qkv, dout4: dout, probs, dprobs, dqkv4: dqkv },
      [1, rowTiles, slabs],
    ),
  ];
}
