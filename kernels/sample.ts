/**
 * Sampling on the GPU (`sampler.wgsl`): drawing a token from a row of logits as run/sampling.ts's
 * `sampleToken` draws it, from the same xoshiro128** generator state. The fused decode step
 * includes the sampler; {@link samplePick} (`sample_pick.wgsl`) is the general decode path's
 * sampled counterpart of argmax.ts's greedyPick.
 *
 * @module
 */
import { PICK_WG } from "./argmax.ts";
import { type Dispatch, f32bits, type Gpu, type Tensor } from "./gpu.ts";

import sampler from "./sampler.wgsl" with { type: "text" };
import pickKernel from "./sample_pick.wgsl" with { type: "text" };

/** The sampler's WGSL, with no entry point: the kernel that includes it declares its inputs. */
export const SAMPLER_CODE: string = sampler;

/** How a token is drawn on the GPU (as run/sampling.ts's SamplingOptions, temperature > 0). */
export interface GpuSampling {
  readonly temperature: number; // > 0
  readonly topK: number; //        0 off
  readonly topP: number; //        1 off
}

/** Most candidates the sampler sorts (sampler.wgsl's MAXK): top-k, or the vocabulary for top-p. */
export const MAX_SAMPLE_CANDIDATES = 256;

/** Bins of the sampler's radix select (8 bits of a key a pass; sampler.wgsl's BINS). */
export const SAMPLE_BINS = 256;

/**
 * Largest vocabulary the sampler draws from: at 64 invocations (the fused step's smallest
 * workgroup) its loops stay near half of the 65,535 iterations after which llvmpipe silently
 * ends an invocation's loops ({@link samplerLoopIterations}).
 */
export const MAX_SAMPLE_VOCAB = 262144;

/** Throws unless the sampler can draw with `o` over a vocabulary of `V`; `who` names the caller. */
export function checkSampling(o: GpuSampling, V: number, who: string): void {
  if (!(o.temperature > 0) || !Number.isFinite(o.temperature)) {
    throw new RangeError(`${who}: temperature ${o.temperature} must be > 0 to sample`);
  }
  if (V > MAX_SAMPLE_VOCAB) {
    throw new RangeError(`${who}: a vocabulary of ${V} is over the sampler's ${MAX_SAMPLE_VOCAB}`);
  }
  const candidates = o.topK > 0 && o.topK < V ? o.topK : o.topP < 1 ? V : 0;
  if (candidates > MAX_SAMPLE_CANDIDATES) {
    throw new RangeError(
      `${who}: sampling sorts ${candidates} candidates (top-k, or top-p over the ` +
        `vocabulary), at most ${MAX_SAMPLE_CANDIDATES}`,
    );
  }
}

/** Whether the GPU sampler handles these settings over a vocabulary of `V`. */
export function gpuSamples(o: GpuSampling, V: number): boolean {
  try {
    checkSampling(o, V, "gpuSamples");
    return true;
  } catch {
    return false;
  }
}

/** Words of the sampler's workgroup memory with `wg` invocations (its var<workgroup>s). */
export function samplerWorkgroupWords(wg: number): number {
  return MAX_SAMPLE_CANDIDATES + 2 * wg + SAMPLE_BINS;
}

/**
 * An upper bound on the loop iterations one invocation of the sampler runs over a vocabulary
 * of `V` with `wg` invocations (llvmpipe silently ends an invocation's loops past 65,535).
 */
export function samplerLoopIterations(V: number, wg: number): number {
  const spread = (work: number) => Math.ceil(work / wg); // a loop shared by the workgroup
  const block = Math.ceil(V / wg); // each invocation's share of the vocabulary
  const K = MAX_SAMPLE_CANDIDATES;
  return 7 * block + 4 * (SAMPLE_BINS + spread(SAMPLE_BINS)) + 3 * wg + spread(K) * K + 4 * K +
    (V <= K ? V : 0);
}

/**
 * Draws a token from the first `V` logits as `sampleToken(logits, sampling, rng)` would, the
 * generator's state being state[4..8): writes it to ids[0] and tokens[state[1]], advances the
 * generator by one draw, and state[0] (pos0) and state[1] (tokens chosen) by one.
 * logits: [1, >= V]; ids: [>= 1] u32; state: [>= 8] u32 (greedyPick's start, then the
 * generator); tokens: [*] u32.
 */
export function samplePick(
  gpu: Gpu,
  logits: Tensor,
  V: number,
  sampling: GpuSampling,
  ids: Tensor,
  state: Tensor,
  tokens: Tensor,
): Dispatch {
  checkSampling(sampling, V, "samplePick");
  if (logits.shape.at(-1)! < V || state.shape[0] < 8) {
    throw new Error(`samplePick: logits[${logits.shape}] V=${V} state[${state.shape}] do not fit`);
  }
  const kernel = gpu.kernel(`${pickKernel}\n${SAMPLER_CODE}`, "sample_pick", {
    WG: PICK_WG[gpu.design],
    MAXK: MAX_SAMPLE_CANDIDATES,
    BINS: SAMPLE_BINS,
  });
  const params = gpu.uniform([
    V,
    f32bits(sampling.temperature),
    sampling.topK,
    f32bits(sampling.topP),
  ]);
  const bindings = { p: params, logits, ids, state, tokens };
  return gpu.dispatch(`sample ${V}`, kernel, bindings, [1]);
}
