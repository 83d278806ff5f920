/**
 * Typed wrappers for `adamw.wgsl`: the global gradient norm and one AdamW step per
 * parameter tensor, as torch.optim.AdamW with torch.nn.utils.clip_grad_norm_.
 *
 * @module
 */
import { type Dispatch, f32bits, type Gpu, numel, type Tensor, workgrid } from "./gpu.ts";

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

/**
 * Elements one grad_sumsq dispatch sums: each invocation of its workgroup of 256 loops
 * 32,768 times over them (and 512 over their blocks), half the 65,535 loop iterations that
 * llvmpipe runs (MAX_LOOP_TRIPS in gpu.ts).
 */
const SUMSQ_SLICE = 2 ** 23;

/**
 * The global L2 norm of all gradients, on the GPU: norm[0] = sqrt(sum of squares of every
 * tensor), as torch's norm of the per-tensor norms: a dispatch per tensor (per 2^23 elements
 * of it) writes its norm to partials[i] (one workgroup, fixed order), then one more combines
 * them. Deterministic. grads: any shapes; partials: [>= grads.length] f32 scratch; norm: [1+]
 * f32.
 */
export function gradNorm(
  gpu: Gpu,
  grads: readonly Tensor[],
  partials: Tensor,
  norm: Tensor,
): Dispatch[] {
  if (grads.length === 0) throw new Error("gradNorm: no gradients");
  if (numel(partials) < grads.length) {
    throw new Error(`gradNorm: partials[${partials.shape}] has no room for ${grads.length}`);
  }
  if (numel(norm) < 1) throw new Error(`gradNorm: norm[${norm.shape}] is empty`);
  const sumsq = gpu.kernel(code, "grad_sumsq");
  const dispatches = grads.flatMap((grad, index) => {
    const n = numel(grad);
    return Array.from({ length: Math.max(1, Math.ceil(n / SUMSQ_SLICE)) }, (_, k) => {
      const [start, end] = [k * SUMSQ_SLICE, Math.min(n, (k + 1) * SUMSQ_SLICE)];
      const sq = gpu.uniform([n, index, start, end]);
      const label = `grad_sumsq ${n}${n > SUMSQ_SLICE ? ` [${start}:${end}]` : ""}`;
      return gpu.dispatch(label, sumsq, { sq, grad, partials }, [1]);
    });
  });
  const total = gpu.uniform([grads.length]);
  const kernel = gpu.kernel(code, "grad_norm");
  dispatches.push(
    gpu.dispatch(`grad_norm ${grads.length}`, kernel, { total, partials, norm }, [1]),
  );
  return dispatches;
}

/**
 * One AdamW step of one parameter tensor, in place: clips with coef = min(1, gradClip /
 * (norm[0] + 1e-6)) (torch's clip_grad_norm_, gradClip <= 0 disables), then
 * p -= lr*weightDecay*p (only when `decay`), m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
 * p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps), in torch's arithmetic order.
 * stepInfo: [4] f32 written by the CPU before each step: [lr, 1 - beta1^t, 1 - beta2^t, 0];
 * norm: [1+] f32 from {@link gradNorm}; param, grad, m, v: same shape (m and v start at 0).
 */
export function adamw(
  gpu: Gpu,
  param: Tensor,
  grad: Tensor,
  m: Tensor,
  v: Tensor,
  stepInfo: Tensor,
  norm: Tensor,
  options: AdamWOptions,
  decay: boolean,
): Dispatch {
  const n = numel(param);
  for (const [name, t] of [["grad", grad], ["m", m], ["v", v]] as const) {
    if (t.shape.join() !== param.shape.join()) {
      throw new Error(`adamw: ${name}[${t.shape}] is not param's shape [${param.shape}]`);
    }
  }
  if (numel(stepInfo) < 3) throw new Error(`adamw: stepInfo[${stepInfo.shape}] is not [4]`);
  if (numel(norm) < 1) throw new Error(`adamw: norm[${norm.shape}] is empty`);
  const { beta1, beta2, eps, weightDecay, gradClip } = options;
  const a = gpu.uniform([
    n,
    ...[beta1, beta2, 1 - beta1, 1 - beta2, eps, weightDecay, gradClip].map(f32bits),
    decay ? 1 : 0,
  ]);
  const kernel = gpu.kernel(code, "adamw");
  const bindings = { a, grad, norm, param, m, v, stepInfo };
  return gpu.dispatch(`adamw ${n}`, kernel, bindings, workgrid(n, 64));
}
