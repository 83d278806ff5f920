/**
 * A plain CPU reference of every kernel's math, in float64, and a whole GPT-2 forward built
 * from it. It exists only to test the WGSL kernels and the model against; nothing outside
 * `tests/` uses it. Inputs are usually f32 arrays (exact in f64); results are Float64Array.
 *
 * Shapes use T = tokens, C = n_embd, V = vocab, P = n_positions, H = n_head, D = head_dim.
 *
 * @module
 */
import type { GPT2Config } from "../model/config.ts";
import type { GPT2Weights } from "../model/weights.ts";

type Vec = ArrayLike<number>;

/** y[M, N] = x[M, K] @ w[K, N] + b[N]  (HF Conv1D, weight stored [in, out]). */
export function matmulRef(x: Vec, w: Vec, b: Vec, M: number, K: number, N: number): Float64Array {
  const y = new Float64Array(M * N);
  const acc = new Float64Array(N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) acc[n] = b[n];
    for (let k = 0; k < K; k++) {
      const xv = x[m * K + k];
      const row = k * N;
      for (let n = 0; n < N; n++) acc[n] += xv * w[row + n];
    }
    y.set(acc, m * N);
  }
  return y;
}

/** y[M, V] = x[M, K] @ w[V, K]^T  (the lm_head over wte). */
export function lmHeadRef(x: Vec, w: Vec, M: number, K: number, V: number): Float64Array {
  const y = new Float64Array(M * V);
  for (let m = 0; m < M; m++) {
    for (let v = 0; v < V; v++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += x[m * K + k] * w[v * K + k];
      y[m * V + v] = acc;
    }
  }
  return y;
}

/** y[T, C] = (x - mean) / sqrt(var + eps) * weight + bias per row; var biased (torch). */
export function layerNormRef(
  x: Vec,
  weight: Vec,
  bias: Vec,
  T: number,
  C: number,
  eps: number,
): Float64Array {
  const y = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[t * C + c];
    mean /= C;
    let variance = 0;
    for (let c = 0; c < C; c++) variance += (x[t * C + c] - mean) ** 2;
    variance /= C;
    const rstd = 1 / Math.sqrt(variance + eps);
    for (let c = 0; c < C; c++) y[t * C + c] = (x[t * C + c] - mean) * rstd * weight[c] + bias[c];
  }
  return y;
}

/** HF gelu_new, element-wise: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
export function geluNewRef(x: Vec): Float64Array {
  const y = new Float64Array(x.length);
  const k = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    y[i] = 0.5 * v * (1 + Math.tanh(k * (v + 0.044715 * v * v * v)));
  }
  return y;
}

/** x[T, C] = wte[ids[t]] + wpe[pos0 + t];  wte: [V, C], wpe: [P, C]. */
export function embeddingRef(
  ids: ArrayLike<number>,
  wte: Vec,
  wpe: Vec,
  C: number,
  pos0: number,
): Float64Array {
  const T = ids.length;
  const x = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) x[t * C + c] = wte[ids[t] * C + c] + wpe[(pos0 + t) * C + c];
  }
  return x;
}

/** x + y, element-wise (the residual connection). */
export function residualRef(x: Vec, y: Vec): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] + y[i];
  return out;
}

/**
 * Copies the K and V thirds of qkv [T, 3C] into caches [H, P, D] at rows pos0 .. pos0+T-1,
 * in place (what store_kv does).
 */
export function storeKvRef(
  qkv: Vec,
  kCache: Float32Array | Float64Array,
  vCache: Float32Array | Float64Array,
  T: number,
  H: number,
  D: number,
  P: number,
  pos0: number,
): void {
  const C = H * D;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      for (let d = 0; d < D; d++) {
        const at = (h * P + pos0 + t) * D + d;
        kCache[at] = qkv[t * 3 * C + C + h * D + d];
        vCache[at] = qkv[t * 3 * C + 2 * C + h * D + d];
      }
    }
  }
}

/** Output of {@link attentionRef}. */
export interface AttentionRef {
  /** [T, C], heads side by side. */
  out: Float64Array;
  /** [H, T, P] softmax rows; 0 past key pos0 + t. */
  probs: Float64Array;
}

/**
 * Causal attention of this step's queries over a cache that already holds this step's keys:
 * per head h and query t, scores_s = q_t · k_s · D^-0.5 for s = 0 .. pos0+t, softmax,
 * out = Σ p_s v_s.  qkv: [T, 3C] (q is the first third); kCache, vCache: [H, P, D].
 */
export function attentionRef(
  qkv: Vec,
  kCache: Vec,
  vCache: Vec,
  T: number,
  H: number,
  D: number,
  P: number,
  pos0: number,
): AttentionRef {
  const C = H * D;
  const scale = 1 / Math.sqrt(D);
  const out = new Float64Array(T * C);
  const probs = new Float64Array(H * T * P);
  const scores = new Float64Array(P);
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < T; t++) {
      const keys = pos0 + t + 1;
      const q = t * 3 * C + h * D;
      let max = -Infinity;
      for (let s = 0; s < keys; s++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += qkv[q + d] * kCache[(h * P + s) * D + d];
        scores[s] = dot * scale;
        max = Math.max(max, scores[s]);
      }
      let sum = 0;
      for (let s = 0; s < keys; s++) sum += scores[s] = Math.exp(scores[s] - max);
      const row = (h * T + t) * P;
      for (let s = 0; s < keys; s++) probs[row + s] = scores[s] / sum;
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let s = 0; s < keys; s++) acc += probs[row + s] * vCache[(h * P + s) * D + d];
        out[t * C + h * D + d] = acc;
      }
    }
  }
  return { out, probs };
}

/** Output of {@link gpt2Ref}. */
export interface GPT2Ref {
  /** [nLayer + 2, T, C]: embeddings, each block's output, ln_f's output. */
  hidden: Float64Array;
  /** [T, V] */
  logits: Float64Array;
  /** Per layer, K and V caches [H, P, D] (rows 0 .. T-1 filled). */
  cache: { k: Float64Array; v: Float64Array }[];
  /** Per layer, the softmax rows [H, T, P] (0 past key t). */
  probs: Float64Array[];
}

/** The whole GPT-2 forward over `ids` from position 0, in float64, from the functions above. */
export function gpt2Ref(config: GPT2Config, w: GPT2Weights, ids: readonly number[]): GPT2Ref {
  const { nEmbd: C, nHead: H, headDim: D, nPositions: P, nInner: I, vocabSize: V } = config;
  const eps = config.layerNormEpsilon;
  const T = ids.length;
  const L = w.blocks.length;
  const hidden = new Float64Array((L + 2) * T * C);
  let x = embeddingRef(ids, w.wte, w.wpe, C, 0); // [T, C]
  hidden.set(x, 0);
  const cache = [];
  const probs = [];
  for (let l = 0; l < L; l++) {
    const b = w.blocks[l];
    let ln = layerNormRef(x, b.ln1.weight, b.ln1.bias, T, C, eps); // [T, C]
    const qkv = matmulRef(ln, b.attn.cAttn.weight, b.attn.cAttn.bias, T, C, 3 * C); // [T, 3C]
    const k = new Float64Array(H * P * D);
    const v = new Float64Array(H * P * D);
    storeKvRef(qkv, k, v, T, H, D, P, 0);
    cache.push({ k, v });
    const att = attentionRef(qkv, k, v, T, H, D, P, 0); // out: [T, C]
    probs.push(att.probs);
    x = residualRef(x, matmulRef(att.out, b.attn.cProj.weight, b.attn.cProj.bias, T, C, C));
    ln = layerNormRef(x, b.ln2.weight, b.ln2.bias, T, C, eps);
    const fc = geluNewRef(matmulRef(ln, b.mlp.cFc.weight, b.mlp.cFc.bias, T, C, I)); // [T, I]
    x = residualRef(x, matmulRef(fc, b.mlp.cProj.weight, b.mlp.cProj.bias, T, I, C));
    hidden.set(x, (l + 1) * T * C);
  }
  const lnF = layerNormRef(x, w.lnF.weight, w.lnF.bias, T, C, eps);
  hidden.set(lnF, (L + 1) * T * C);
  const logits = lmHeadRef(lnF, w.lmHead ?? w.wte, T, C, V); // [T, V]
  return { hidden, logits, cache, probs };
}

/**
 * Backward of causal attention over one sequence from position 0, in float64:
 * out = softmax(q k^T · D^-0.5, causal) @ v per head. Recomputes the softmax from qkv.
 * qkv: [T, 3C]; dout: [T, C]; returns dqkv [T, 3C] (dq | dk | dv in qkv's layout).
 */
export function attentionBackwardRef(
  qkv: Vec,
  dout: Vec,
  T: number,
  H: number,
  D: number,
): Float64Array {
  const C = H * D;
  const scale = 1 / Math.sqrt(D);
  const dqkv = new Float64Array(T * 3 * C);
  const q = (t: number, h: number, d: number) => t * 3 * C + h * D + d; // k: +C, v: +2C
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < T; t++) {
      // Forward row: probabilities over keys 0..t.
      const probs = new Float64Array(t + 1);
      for (let j = 0; j <= t; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += qkv[q(t, h, d)] * qkv[q(j, h, d) + C];
        probs[j] = dot * scale;
      }
      const max = Math.max(...probs);
      let sum = 0;
      for (let j = 0; j <= t; j++) sum += probs[j] = Math.exp(probs[j] - max);
      for (let j = 0; j <= t; j++) probs[j] /= sum;
      // dP = dout v^T, dS = P (dP - Σ P dP), then dq, dk, dv.
      const dp = new Float64Array(t + 1);
      let pdp = 0;
      for (let j = 0; j <= t; j++) {
        for (let d = 0; d < D; d++) dp[j] += dout[t * C + h * D + d] * qkv[q(j, h, d) + 2 * C];
        pdp += probs[j] * dp[j];
      }
      for (let j = 0; j <= t; j++) {
        const ds = probs[j] * (dp[j] - pdp) * scale;
        for (let d = 0; d < D; d++) {
          dqkv[q(t, h, d)] += ds * qkv[q(j, h, d) + C];
          dqkv[q(j, h, d) + C] += ds * qkv[q(t, h, d)];
          dqkv[q(j, h, d) + 2 * C] += probs[j] * dout[t * C + h * D + d];
        }
      }
    }
  }
  return dqkv;
}

/** Output of {@link crossEntropyRef}. */
export interface CrossEntropyRef {
  /** [N]: logsumexp(row) - row[target]. */
  losses: Float64Array;
  /** [N, V]: (softmax(row) - onehot(target)) · scale. */
  dlogits: Float64Array;
}

/**
 * Softmax cross-entropy of each row of logits [N, ld] over its first V columns, and its
 * gradient scaled by `scale`, in float64. targets: [N].
 */
export function crossEntropyRef(
  logits: Vec,
  ld: number,
  V: number,
  targets: ArrayLike<number>,
  scale: number,
): CrossEntropyRef {
  const N = targets.length;
  const losses = new Float64Array(N);
  const dlogits = new Float64Array(N * V);
  for (let n = 0; n < N; n++) {
    let max = -Infinity;
    for (let j = 0; j < V; j++) max = Math.max(max, logits[n * ld + j]);
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[n * ld + j] - max);
    losses[n] = Math.log(sum) + max - logits[n * ld + targets[n]];
    for (let j = 0; j < V; j++) {
      const p = Math.exp(logits[n * ld + j] - max) / sum;
      dlogits[n * V + j] = (p - (j === targets[n] ? 1 : 0)) * scale;
    }
  }
  return { losses, dlogits };
}

/** The global L2 norm of every gradient together: sqrt(Σ over tensors Σ g²), in float64. */
export function gradNormRef(grads: readonly Vec[]): number {
  let sum = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sum += g[i] * g[i];
  return Math.sqrt(sum);
}

/** One AdamW step's settings for {@link adamwStepRef}. */
export interface AdamWStepRef {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Step number, from 1. */
  t: number;
  /** Whether weight decay applies to this tensor. */
  decay: boolean;
  /** The gradient's factor from global-norm clipping (1 when not clipped). */
  clipCoef: number;
}

/**
 * One torch.optim.AdamW step in place, in float64: g = grad · clipCoef,
 * p *= 1 - lr·wd (when decay), m = β1 m + (1-β1) g, v = β2 v + (1-β2) g²,
 * p -= lr / (1-β1^t) · m / (sqrt(v) / sqrt(1-β2^t) + eps). param, m, v: same length as grad.
 */
export function adamwStepRef(
  param: Float64Array,
  m: Float64Array,
  v: Float64Array,
  grad: Vec,
  s: AdamWStepRef,
): void {
  const bc1 = 1 - s.beta1 ** s.t;
  const bc2 = 1 - s.beta2 ** s.t;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i] * s.clipCoef;
    if (s.decay) param[i] *= 1 - s.lr * s.weightDecay;
    m[i] = s.beta1 * m[i] + (1 - s.beta1) * g;
    v[i] = s.beta2 * v[i] + (1 - s.beta2) * g * g;
    param[i] -= (s.lr / bc1) * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + s.eps);
  }
}

// ---- Backward passes (training), in float64 ----

/** dx[M, K] = dy[M, N] @ w[N, K]: the input gradient of y = x @ w^T (w stored [out, in]). */
export function matmulBackwardInputRef(
  dy: Vec,
  w: Vec,
  M: number,
  N: number,
  K: number,
): Float64Array {
  const dx = new Float64Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const d = dy[m * N + n];
      for (let k = 0; k < K; k++) dx[m * K + k] += d * w[n * K + k];
    }
  }
  return dx;
}

/** dw[N, K] = dy[M, N]^T @ x[M, K]: the weight gradient of y = x @ w^T. */
export function matmulBackwardWeightRef(
  dy: Vec,
  x: Vec,
  M: number,
  N: number,
  K: number,
): Float64Array {
  const dw = new Float64Array(N * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const d = dy[m * N + n];
      for (let k = 0; k < K; k++) dw[n * K + k] += d * x[m * K + k];
    }
  }
  return dw;
}

/** db[N] = Σ_m dy[m, n]: the bias gradient. */
export function biasBackwardRef(dy: Vec, M: number, N: number): Float64Array {
  const db = new Float64Array(N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) db[n] += dy[m * N + n];
  }
  return db;
}

/** Gradients of {@link layerNormRef}: dx [T, C], dweight [C], dbias [C]. */
export interface LayerNormGradRef {
  dx: Float64Array;
  dweight: Float64Array;
  dbias: Float64Array;
}

/**
 * The gradients of y = (x - mean) / sqrt(var + eps) * weight + bias given dy, from the chain
 * rule written out: with xhat = (x - mean)·rstd and g = dy·weight,
 * dx = rstd·(g - mean(g) - xhat·mean(g·xhat)), dweight = Σ_t dy·xhat, dbias = Σ_t dy.
 */
export function layerNormBackwardRef(
  x: Vec,
  weight: Vec,
  dy: Vec,
  T: number,
  C: number,
  eps: number,
): LayerNormGradRef {
  const dx = new Float64Array(T * C);
  const dweight = new Float64Array(C);
  const dbias = new Float64Array(C);
  const xhat = new Float64Array(C);
  for (let t = 0; t < T; t++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[t * C + c];
    mean /= C;
    let variance = 0;
    for (let c = 0; c < C; c++) variance += (x[t * C + c] - mean) ** 2;
    const rstd = 1 / Math.sqrt(variance / C + eps);
    let gMean = 0;
    let gxMean = 0;
    for (let c = 0; c < C; c++) {
      xhat[c] = (x[t * C + c] - mean) * rstd;
      const g = dy[t * C + c] * weight[c];
      gMean += g / C;
      gxMean += (g * xhat[c]) / C;
      dweight[c] += dy[t * C + c] * xhat[c];
      dbias[c] += dy[t * C + c];
    }
    for (let c = 0; c < C; c++) {
      const g = dy[t * C + c] * weight[c];
      dx[t * C + c] = rstd * (g - gMean - xhat[c] * gxMean);
    }
  }
  return { dx, dweight, dbias };
}

/** dx = dy · gelu_new'(x), element-wise, with gelu_new as in {@link geluNewRef}. */
export function geluNewBackwardRef(x: Vec, dy: Vec): Float64Array {
  const dx = new Float64Array(x.length);
  const k = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const t = Math.tanh(k * (v + 0.044715 * v * v * v));
    const du = k * (1 + 3 * 0.044715 * v * v);
    dx[i] = dy[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * du);
  }
  return dx;
}

/** Gradients of x = wte[ids] + wpe[t]: dwte [V, C] and dwpe [P, C]. */
export interface EmbeddingGradRef {
  dwte: Float64Array;
  dwpe: Float64Array;
}

/**
 * Backward of x[b·T + t] = wte[ids[b·T + t]] + wpe[t]: dwte = dwte0 + each row of dx added at
 * its token's row, dwpe[t] = Σ_b dx[b·T + t] (0 from row T on). dx: [ids.length, C].
 */
export function embeddingBackwardRef(
  ids: ArrayLike<number>,
  dx: Vec,
  T: number,
  dwte0: Vec,
  P: number,
  C: number,
): EmbeddingGradRef {
  const dwte = Float64Array.from(dwte0);
  const dwpe = new Float64Array(P * C);
  for (let n = 0; n < ids.length; n++) {
    for (let c = 0; c < C; c++) {
      dwte[ids[n] * C + c] += dx[n * C + c];
      dwpe[(n % T) * C + c] += dx[n * C + c];
    }
  }
  return { dwte, dwpe };
}
