/**
 * Typed wrappers for `adamw.wgsl`: the global gradient norm and one AdamW step of every
 * parameter at once, as torch.optim.AdamW with torch.nn.utils.clip_grad_norm_, over
 * parameters, gradients and moments that each lie in one buffer of the same layout
 * (kernels/arena.ts). Two dispatches per step for any model that fits one binding (and two
 * per binding-sized chunk beyond).
 *
 * @module
 */
import { checkLoopTrips, type Dispatch, f32bits, type Gpu, numel, type Tensor } from "./gpu.ts";

import code from "./adamw.wgsl" with { type: "text" };

/** torch AdamW hyper-parameters that stay fixed over a run. */
export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Largest global gradient norm; gradients are scaled down to it. <= 0 disables. */
  gradClip: number;
}

/** Workgroups of one grad_sumsq dispatch: partial sums per chunk (PARTS in adamw.wgsl). */
const PARTS = 64;
/** Elements per adamw workgroup: 64 invocations of 16 (AWG · ELEMS in adamw.wgsl). */
const ADAMW_SPAN = 64 * 16;

/** The flat buffers one AdamW step reads and writes, all of one layout. */
export interface AdamWState {
  param: Tensor; // [n] parameters
  grad: Tensor; //  [n] their gradients
  m: Tensor; //     [n] first moments (start at 0)
  v: Tensor; //     [n] second moments (start at 0)
}

/**
 * The chunks of `n` elements that each fit a binding of `maxBytes`, each starting at an
 * aligned offset: [start, count] in elements.
 */
function chunks(gpu: Gpu, n: number, maxBytes: number): [number, number][] {
  const align = gpu.bindingAlignment / 4;
  const size = Math.floor(Math.min(maxBytes, gpu.maxBinding) / 4 / align) * align;
  if (size < align) throw new Error(`adamw: chunks of ${maxBytes} bytes hold nothing`);
  const out: [number, number][] = [];
  for (let start = 0; start < n; start += size) out.push([start, Math.min(size, n - start)]);
  return out;
}

const slice = (t: Tensor, start: number, count: number): Tensor => ({
  buffer: t.buffer,
  offset: t.offset + start * 4,
  shape: [count],
});

/** Partial sums that {@link adamwStep} needs room for in `partials`. */
export function adamwPartials(gpu: Gpu, n: number, maxBytes = gpu.maxBinding): number {
  return chunks(gpu, n, maxBytes).length * PARTS;
}

/**
 * One AdamW step of every element of `s`, in place: the global gradient norm (one dispatch
 * per chunk, into `partials`), then the update (one per chunk), which writes the norm to
 * norm[0] on the way. Clips with coef = min(1, gradClip / (norm + 1e-6)) (torch's
 * clip_grad_norm_; gradClip <= 0 disables), decays the first `decayEnd` elements
 * (p -= lr·weightDecay·p), then m = b1 m + (1-b1) g, v = b2 v + (1-b2) g²,
 * p -= (lr / (1-b1^t)) · m / (sqrt(v) / sqrt(1-b2^t) + eps), in torch's arithmetic order.
 * stepInfo: [4] f32 written by the CPU before each step: [lr, 1 - beta1^t, 1 - beta2^t, 0];
 * partials: [>= adamwPartials(n)] f32 scratch; norm: [1+] f32. `maxBytes` (default: the
 * largest binding) bounds each chunk.
 */
export function adamwStep(
  gpu: Gpu,
  s: AdamWState,
  stepInfo: Tensor,
  partials: Tensor,
  norm: Tensor,
  options: AdamWOptions,
  decayEnd: number,
  maxBytes = gpu.maxBinding,
): Dispatch[] {
  const n = numel(s.param);
  for (const [name, t] of [["grad", s.grad], ["m", s.m], ["v", s.v]] as const) {
    if (numel(t) !== n) throw new Error(`adamw: ${name}[${t.shape}] is not param's [${n}]`);
  }
  if (numel(stepInfo) < 3) throw new Error(`adamw: stepInfo[${stepInfo.shape}] is not [4]`);
  if (numel(norm) < 1) throw new Error(`adamw: norm[${norm.shape}] is empty`);
  const parts = chunks(gpu, n, maxBytes);
  if (numel(partials) < parts.length * PARTS) {
    throw new Error(`adamw: partials[${partials.shape}] has no room for ${parts.length * PARTS}`);
  }
  const sumsq = gpu.kernel(code, "grad_sumsq");
  const update = gpu.kernel(code, "adamw");
  const { beta1, beta2, eps, weightDecay, gradClip } = options;
  const hyper = [beta1, beta2, 1 - beta1, 1 - beta2, eps, weightDecay, gradClip].map(f32bits);
  const out: Dispatch[] = [];
  parts.forEach(([start, count], c) => {
    // Each invocation loops over a share of count / PARTS elements, 256 at a time.
    const span = Math.ceil(count / PARTS);
    checkLoopTrips(`adamw: ${count} elements`, Math.ceil(span / 256) * (1 + 1 / 64) + 2);
    const sq = gpu.uniform([count, c * PARTS]);
    const grad = slice(s.grad, start, count);
    out.push(gpu.dispatch(`grad_sumsq ${count}`, sumsq, { sq, grad, partials }, [PARTS]));
  });
  parts.forEach(([start, count], c) => {
    const end = Math.min(count, Math.max(0, decayEnd - start));
    const a = gpu.uniform([count, ...hyper, end, parts.length * PARTS, c === 0 ? 1 : 0]);
    const [param, grad, m, v] = [s.param, s.grad, s.m, s.v].map((t) => slice(t, start, count));
    const g = Math.ceil(count / ADAMW_SPAN);
    const grid = g <= 65535 ? [g] : [65535, Math.ceil(g / 65535)];
    const bindings = { a, grad, norm, param, m, v, stepInfo, sums: partials };
    out.push(gpu.dispatch(`adamw ${count}`, update, bindings, grid));
  });
  return out;
}
