/**
 * Typed wrappers for `attention.wgsl`: writing this step's K/V into the cache, and causal
 * attention of this step's queries over everything cached (scores, softmax, values).
 *
 * @module
 */
import { type Dispatch, type Gpu, groups, type Tensor, workgrid } from "./gpu.ts";
import { f32bits } from "./layernorm.ts";
import { causalSoftmax } from "./softmax.ts";

const code = await Deno.readTextFile(new URL("./attention.wgsl", import.meta.url));

/** The shapes the kernels share. */
interface Shapes {
  T: number;
  C: number;
  nHead: number;
  headDim: number;
  P: number;
}

function shapes(qkv: Tensor, kCache: Tensor, vCache: Tensor): Shapes {
  const [T, C3] = qkv.shape;
  const [nHead, P, headDim] = kCache.shape;
  const C = C3 / 3;
  if (C3 % 3 || nHead * headDim !== C || vCache.shape.join() !== kCache.shape.join()) {
    throw new Error(`attention: qkv[${qkv.shape}] and cache[${kCache.shape}] do not fit`);
  }
  if (headDim % 4) throw new Error(`attention: head_dim ${headDim} is not a multiple of 4`);
  return { T, C, nHead, headDim, P };
}

function params(gpu: Gpu, s: Shapes): GPUBuffer {
  return gpu.uniform([s.T, s.C, s.P, f32bits(1 / Math.sqrt(s.headDim))]);
}

/** Queries per invocation: one for decode, a register tile for prefill. */
function queryTile(T: number): number {
  return T === 1 ? 1 : T < 8 ? 4 : 8;
}

/**
 * Writes K and V of this step into the cache at rows pos0 .. pos0+T-1.
 * step: [1+] u32 holding pos0; qkv: [T, 3C]; kCache, vCache: [nHead, P, headDim].
 */
export function storeKv(
  gpu: Gpu,
  step: Tensor,
  qkv: Tensor,
  kCache: Tensor,
  vCache: Tensor,
): Dispatch {
  const s = shapes(qkv, kCache, vCache);
  const pipeline = gpu.pipeline(code, "store_kv", { HD: s.headDim });
  const bindings = [params(gpu, s), step, qkv, kCache, vCache];
  return gpu.dispatch(`store_kv ${s.T}x${s.C}`, pipeline, bindings, workgrid(s.T * s.C, 64));
}

/**
 * out[t] = softmax(q_t . K[0..pos0+t] * headDim^-0.5) @ V, per head, as three dispatches.
 * qkv: [T, 3C]; caches: [nHead, P, headDim]; out: [T, C]; probs: [nHead, T, P] scratch that
 * ends up holding the softmax rows (with `zeroTail`, zeros past each row's causal limit).
 */
export function attend(
  gpu: Gpu,
  step: Tensor,
  qkv: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  out: Tensor,
  probs: Tensor,
  zeroTail: boolean,
): Dispatch[] {
  const s = shapes(qkv, kCache, vCache);
  if (out.shape[0] !== s.T || out.shape[1] !== s.C) {
    throw new Error(`attention: out[${out.shape}] is not [${s.T}, ${s.C}]`);
  }
  if (probs.shape.join() !== [s.nHead, s.T, s.P].join()) {
    throw new Error(`attention: probs[${probs.shape}] is not [${s.nHead}, ${s.T}, ${s.P}]`);
  }
  const TM = queryTile(s.T);
  const consts = { HD: s.headDim, TM };
  const u = params(gpu, s);
  const none = undefined;
  const rowTiles = Math.ceil(s.T / TM);
  return [
    gpu.dispatch(
      `attend.scores ${s.T}x${s.C}`,
      gpu.pipeline(code, "scores", consts),
      [u, step, none, none, none, qkv, kCache, none, probs],
      [groups(s.P / 4, 64), rowTiles, s.nHead],
    ),
    causalSoftmax(gpu, step, probs, zeroTail),
    gpu.dispatch(
      `attend.values ${s.T}x${s.C}`,
      gpu.pipeline(code, "values", consts),
      [u, step, none, none, none, none, none, vCache, probs, out],
      [1, rowTiles, s.nHead],
    ),
  ];
}
