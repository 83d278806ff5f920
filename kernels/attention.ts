/**
 * Typed wrappers for `attention.wgsl`: writing this step's K/V into the cache and causal
 * attention of this step's queries over everything cached.
 *
 * @module
 */
import { type Dispatch, type Gpu, type Tensor, workgrid } from "./gpu.ts";
import { f32bits } from "./layernorm.ts";

const code = await Deno.readTextFile(new URL("./attention.wgsl", import.meta.url));
const WG = 64;

/** The shapes both kernels share. */
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
  return { T, C, nHead, headDim, P };
}

function params(gpu: Gpu, s: Shapes, writeProbs: boolean): GPUBuffer {
  return gpu.uniform([s.T, s.C, s.P, f32bits(1 / Math.sqrt(s.headDim)), writeProbs ? 1 : 0]);
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
  const bindings = [params(gpu, s, false), step, qkv, kCache, vCache];
  return gpu.dispatch(`store_kv ${s.T}x${s.C}`, pipeline, bindings, workgrid(s.T * s.C, 64));
}

/**
 * out[t] = softmax(q_t . K[0..pos0+t] * headDim^-0.5) @ V, per head.
 * qkv: [T, 3C]; caches: [nHead, P, headDim]; out: [T, C];
 * probs: [nHead, T, P] receives the softmax rows when given.
 */
export function attend(
  gpu: Gpu,
  step: Tensor,
  qkv: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  out: Tensor,
  probs: Tensor,
  writeProbs: boolean,
): Dispatch {
  const s = shapes(qkv, kCache, vCache);
  if (out.shape[0] !== s.T || out.shape[1] !== s.C) {
    throw new Error(`attention: out[${out.shape}] is not [${s.T}, ${s.C}]`);
  }
  if (writeProbs && probs.shape.join() !== [s.nHead, s.T, s.P].join()) {
    throw new Error(`attention: probs[${probs.shape}] is not [${s.nHead}, ${s.T}, ${s.P}]`);
  }
  const pipeline = gpu.pipeline(code, "attend", { HD: s.headDim, KEYS: s.P, WG });
  const bindings = [params(gpu, s, writeProbs), step, qkv, kCache, vCache, out, probs];
  return gpu.dispatch(`attend ${s.T}x${s.C}`, pipeline, bindings, [s.T, s.nHead, 1]);
}
