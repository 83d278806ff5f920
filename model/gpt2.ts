/**
 * GPT-2, top to bottom as in the diagram: token + position embeddings, n_layer blocks of
 * x = x + attn(ln_1(x)) and x = x + mlp(ln_2(x)), a final LayerNorm and the lm_head (tied to
 * the token embedding, as GPT-2's checkpoints have it, or the checkpoint's own). Every number
 * comes from a WGSL kernel: each module's `forward` returns the kernels it runs as a
 * {@link Plan}, and {@link GPT2.record} returns the whole pass's; each `backward` beside it
 * returns its gradient's. The model holds weights and says what is computed from what; where
 * the activations live, which rows belong to which sequence, and submitting the plan and
 * reading back numbers is run/'s business (`Runner` in run/runner.ts).
 *
 * Shapes name their sizes as nanoGPT does: B sequences of T tokens each, N = B·T rows in a
 * pass (a forward's N is all its rows, whatever B is), C = n_embd.
 *
 * @module
 */
import { TensorArena, type Uploader } from "../kernels/arena.ts";
import { attend, attendBackward, type QueryRows, storeKv } from "../kernels/attention.ts";
import { embedding, embeddingBackward } from "../kernels/embedding.ts";
import type { Copy, Gpu, Plan, Tensor } from "../kernels/gpu.ts";
import { layerNorm, layerNormBackward } from "../kernels/layernorm.ts";
import {
  type Epilogue,
  lmHead,
  lmHeadBackward,
  matmul,
  matmulBackwardInput,
  matmulBackwardWeight,
  type RowChunks,
  transpose,
  uploadRowChunks,
  uploadWeight,
  type Weight,
  type WeightFormat,
} from "../kernels/matmul.ts";
import { checkConfigFits, type GPT2Config } from "./config.ts";
import { KVCache, type KVCacheOptions, type LayerCache } from "./kv_cache.ts";
import {
  type BlockWeights,
  type GPT2Weights,
  type LayerNormWeights,
  type Linear as LinearWeights,
  loadCheckpoint,
} from "./weights.ts";

/** How a model is put on the GPU. */
export interface ModelOptions {
  /**
   * Storage of the matrices (every Linear, wte and lm_head): "f32" (default, HF parity) or
   * "f16", half the bytes per decode step with each weight rounded to f16. LayerNorms,
   * biases and wpe stay f32.
   */
  weights?: WeightFormat;
}

/**
 * One sequence's share of a layer's attention: its rows of the activations, the cache its
 * keys and values go to, the [pos0] its rows start at, and where its softmax rows land.
 */
export interface SequenceRows {
  readonly rows: QueryRows;
  readonly cache: LayerCache; //  K, V: [seqs · nHead, capacity, words]
  readonly start: Tensor; //      [pos0] u32
  readonly probs: Tensor; //      [seqs · nHead, T, capacity]
  /** Zero each softmax row past its causal limit (when the rows are returned). */
  readonly zeroTail: boolean;
}

/** What one block reads and writes, for the N rows of a pass. */
export interface BlockActivations {
  readonly ln1: Tensor; //   [N, C]  ln_1(x)
  readonly qkv: Tensor; //   [N, 3C] q | k | v
  readonly att: Tensor; //   [N, C]  attention output, heads side by side
  readonly mid: Tensor; //   [N, C]  x + attn(ln_1(x)); x itself when the block runs in place
  readonly ln2: Tensor; //   [N, C]  ln_2(mid)
  readonly fcPre: Tensor | null; // [N, nInner] c_fc before GELU, kept for backward; null: fused
  readonly fc: Tensor; //    [N, nInner] gelu(c_fc(ln2))
  readonly out: Tensor; //   [N, C]  mid + mlp(ln_2(mid)); x itself in place
  /** [N, 2] each row's LayerNorm mean and rstd, kept for the backward (training only). */
  readonly ln1Stats?: Tensor;
  readonly ln2Stats?: Tensor;
}

/**
 * The activations of one pass over N rows, laid out by the runner: the input ids, where each
 * layer reads and writes, which rows are which sequence, and the logits.
 */
export interface Pass {
  readonly ids: Tensor; //       [N] u32 token ids
  readonly start: Tensor; //     [pos0] u32: row t is at position pos0 + t ...
  readonly positions?: Tensor; // [N] u32: ... unless each row has its own position
  readonly x: Tensor; //         [N, C] embeddings, block 0's input
  /** Block i's activations. */
  layer(i: number): BlockActivations;
  /** The sequences whose rows block i's attention covers. */
  sequences(i: number): readonly SequenceRows[];
  readonly lnF: Tensor; //       [N, C] ln_f(last block's out)
  readonly lnFStats?: Tensor; // [N, 2] ln_f's mean and rstd per row, kept for the backward
  readonly logits: Tensor; //    [rows, ldy]: the logits of rows logitsRow0 ..
  readonly logitsRow0: number;
  /** Copies hidden state i (0: embeddings, i: block i-1's output, L+1: ln_f) if kept. */
  keep(i: number, t: Tensor): Copy[];
}

/**
 * Gradient scratch of a training pass over N rows, reused by every layer. The residual
 * gradient `x` carries d(block output) into a block's backward and d(block input) out of it.
 */
export interface ActivationGrads {
  readonly x: Tensor; //     [N, C] the residual stream's gradient
  readonly ln: Tensor; //    [N, C] d(LayerNorm output)
  readonly qkv: Tensor; //   [N, 3C]
  readonly att: Tensor; //   [N, C]
  readonly fcPre: Tensor; // [N, nInner] d c_fc output (GELU's backward is c_proj's epilogue)
  readonly probs: Tensor; // [B · nHead, T, T] scratch of the attention backward
  readonly links: Tensor; // [N] u32 scratch of the embedding backward: next row of each token
}

/** Where each parameter's gradient goes: a tensor shaped like it, or chunks like its. */
export interface Gradients {
  of(parameter: Tensor): Tensor;
  chunks(parameter: RowChunks): RowChunks;
}

/** A parameter as HF names and shapes it, and where it lives on the GPU. */
export interface Parameter {
  /** HF's name, e.g. `transformer.h.0.attn.c_attn.weight`. */
  readonly name: string;
  /** HF's shape: Conv1D weights are [in, out]. */
  readonly shape: readonly number[];
  /** The tensors holding it: one, or wte's row chunks. */
  readonly parts: readonly Tensor[];
  /** Stored [out, in], the transpose of HF's Conv1D layout. */
  readonly transposed: boolean;
}

/** torch.nn.LayerNorm over n_embd. */
class LayerNorm {
  readonly weight: Tensor; // [C]
  readonly bias: Tensor; //   [C]
  constructor(
    readonly gpu: Gpu,
    w: LayerNormWeights,
    readonly eps: number,
    name: string,
    to: Uploader,
  ) {
    this.weight = to.upload(w.weight, [w.weight.length], `${name}.weight`);
    this.bias = to.upload(w.bias, [w.bias.length], `${name}.bias`);
  }

  // x: [N, C] -> y: [N, C]; each row's mean and rstd to stats ([N, 2]) when given
  forward(x: Tensor, y: Tensor, stats?: Tensor): Plan {
    return [layerNorm(this.gpu, x, this.weight, this.bias, y, this.eps, stats)];
  }

  // dy: [N, C] -> dx += d x: [N, C]; d weight, d bias: [C]; stats: [N, 2] the forward's
  backward(x: Tensor, dy: Tensor, dx: Tensor, stats: Tensor, g: Gradients): Plan {
    const { gpu, weight, bias, eps } = this;
    return layerNormBackward(gpu, x, weight, dy, dx, g.of(weight), g.of(bias), eps, stats);
  }

  parameters(name: string): Parameter[] {
    return [
      { name: `${name}.weight`, shape: this.weight.shape, parts: [this.weight], transposed: false },
      { name: `${name}.bias`, shape: this.bias.shape, parts: [this.bias], transposed: false },
    ];
  }
}

/** HF Conv1D: y = x @ W + b; W arrives [in, out] and is kept transposed, [out, in]. */
class Linear {
  readonly weight: Weight; // [out, in]
  readonly bias: Tensor; //   [out]
  constructor(
    readonly gpu: Gpu,
    w: LinearWeights,
    name: string,
    format: WeightFormat,
    to: Uploader,
  ) {
    const { inFeatures: n, outFeatures: m } = w;
    const weight = transpose(w.weight, n, m);
    this.weight = uploadWeight(gpu, weight, m, n, `${name}.weight`, format, to);
    this.bias = to.upload(w.bias, [m], `${name}.bias`);
  }

  // x: [N, in] -> y: [N, out]; `then` gelu: y = gelu(x @ W + b) (and pre = x @ W + b when
  // given); add: y += x @ W + b
  forward(x: Tensor, y: Tensor, then: Epilogue = "none", pre: Tensor | null = null): Plan {
    return [matmul(this.gpu, x, this.weight, this.bias, y, then, pre)];
  }

  // dy: [N, out] -> dx: [N, in]; d W: [out, in], d b: [out]. With geluOf, x = gelu(geluOf)
  // and dx is d geluOf: GELU's backward in the same pass.
  backward(x: Tensor, dy: Tensor, dx: Tensor, g: Gradients, geluOf: Tensor | null = null): Plan {
    const { gpu, weight, bias } = this;
    return [
      ...matmulBackwardWeight(gpu, dy, x, g.of(weight.tensor), g.of(bias)),
      matmulBackwardInput(gpu, dy, weight, dx, false, geluOf),
    ];
  }

  parameters(name: string): Parameter[] {
    const { rows, cols, tensor } = this.weight;
    return [
      { name: `${name}.weight`, shape: [cols, rows], parts: [tensor], transposed: true },
      { name: `${name}.bias`, shape: this.bias.shape, parts: [this.bias], transposed: false },
    ];
  }
}

/** Multi-head causal self-attention that appends to and reads from the KV cache. */
class CausalSelfAttention {
  readonly cAttn: Linear;
  readonly cProj: Linear;
  constructor(
    readonly gpu: Gpu,
    w: BlockWeights["attn"],
    name: string,
    f: WeightFormat,
    to: Uploader,
  ) {
    this.cAttn = new Linear(gpu, w.cAttn, `${name}.c_attn`, f, to);
    this.cProj = new Linear(gpu, w.cProj, `${name}.c_proj`, f, to);
  }

  // x: [N, C] -> residual += attn(x): [N, C]; each sequence's K/V go to its cache at pos0 ..
  forward(x: Tensor, a: BlockActivations, seqs: readonly SequenceRows[], residual: Tensor): Plan {
    const { gpu } = this;
    return [
      ...this.cAttn.forward(x, a.qkv), // qkv: [N, 3C]
      ...seqs.flatMap(({ rows, cache: c, start, probs, zeroTail }) => [
        storeKv(gpu, start, a.qkv, c.k, c.v, c.scales, rows), // cache: [nHead, P, words]
        ...attend(gpu, start, a.qkv, c.k, c.v, a.att, probs, zeroTail, c.scales, rows), // [N, C]
      ]),
      ...this.cProj.forward(a.att, residual, "add"),
    ];
  }

  // d residual: [N, C] -> dx: [N, C] (d of x, the LayerNorm output attention read)
  backward(
    x: Tensor,
    a: BlockActivations,
    seqs: readonly SequenceRows[],
    dResidual: Tensor,
    dx: Tensor,
    d: ActivationGrads,
    g: Gradients,
  ): Plan {
    const { gpu } = this;
    return [
      ...this.cProj.backward(a.att, dResidual, d.att, g), // d att: [N, C]
      ...seqs.flatMap(({ rows, cache: c, probs }) =>
        attendBackward(gpu, a.qkv, c.k, c.v, probs, d.att, d.qkv, d.probs, rows)
      ), // d qkv: [N, 3C]
      ...this.cAttn.backward(x, d.qkv, dx, g),
    ];
  }
}

/** The feed-forward network: c_fc → gelu_new → c_proj. */
class MLP {
  readonly cFc: Linear;
  readonly cProj: Linear;
  constructor(
    readonly gpu: Gpu,
    w: BlockWeights["mlp"],
    name: string,
    f: WeightFormat,
    to: Uploader,
  ) {
    this.cFc = new Linear(gpu, w.cFc, `${name}.c_fc`, f, to);
    this.cProj = new Linear(gpu, w.cProj, `${name}.c_proj`, f, to);
  }

  // x: [N, C] -> residual += mlp(x): [N, C], through fc = gelu(x @ W_fc + b): [N, nInner]
  // (training keeps c_fc's output before the GELU, fcPre, for the backward)
  forward(x: Tensor, a: BlockActivations, residual: Tensor): Plan {
    return [
      ...this.cFc.forward(x, a.fc, "gelu", a.fcPre),
      ...this.cProj.forward(a.fc, residual, "add"),
    ];
  }

  // d residual: [N, C] -> dx: [N, C] (d of x, the LayerNorm output the MLP read)
  backward(
    x: Tensor,
    a: BlockActivations,
    dResidual: Tensor,
    dx: Tensor,
    d: ActivationGrads,
    g: Gradients,
  ): Plan {
    return [
      ...this.cProj.backward(a.fc, dResidual, d.fcPre, g, a.fcPre!), // d fcPre: [N, nInner]
      ...this.cFc.backward(x, d.fcPre, dx, g),
    ];
  }
}

/** One transformer block (pre-LayerNorm). */
class Block {
  readonly ln1: LayerNorm;
  readonly attn: CausalSelfAttention;
  readonly ln2: LayerNorm;
  readonly mlp: MLP;
  constructor(
    readonly gpu: Gpu,
    w: BlockWeights,
    eps: number,
    name: string,
    f: WeightFormat,
    to: Uploader,
  ) {
    this.ln1 = new LayerNorm(gpu, w.ln1, eps, `${name}.ln_1`, to);
    this.attn = new CausalSelfAttention(gpu, w.attn, `${name}.attn`, f, to);
    this.ln2 = new LayerNorm(gpu, w.ln2, eps, `${name}.ln_2`, to);
    this.mlp = new MLP(gpu, w.mlp, `${name}.mlp`, f, to);
  }

  // x: [N, C] -> a.out: [N, C]
  forward(x: Tensor, a: BlockActivations, seqs: readonly SequenceRows[]): Plan {
    const { ln1, attn, ln2, mlp } = this;
    return [
      ...ln1.forward(x, a.ln1, a.ln1Stats),
      ...residual(x, a.mid, attn.forward(a.ln1, a, seqs, a.mid)), // mid = x + attn(ln_1(x))
      ...ln2.forward(a.mid, a.ln2, a.ln2Stats),
      ...residual(a.mid, a.out, mlp.forward(a.ln2, a, a.out)), //    out = mid + mlp(ln_2(mid))
    ];
  }

  // d.x: d out [N, C] -> d.x: d x [N, C]; each residual add passes d.x through unchanged
  backward(
    x: Tensor,
    a: BlockActivations,
    seqs: readonly SequenceRows[],
    d: ActivationGrads,
    g: Gradients,
  ): Plan {
    const { ln1, attn, ln2, mlp } = this;
    return [
      ...mlp.backward(a.ln2, a, d.x, d.ln, d, g), //    d ln2 = d out · ∂mlp
      ...ln2.backward(a.mid, d.ln, d.x, a.ln2Stats!, g), //         d mid = d out + d ln2 · ∂ln_2
      ...attn.backward(a.ln1, a, seqs, d.x, d.ln, d, g), // d ln1 = d mid · ∂attn
      ...ln1.backward(x, d.ln, d.x, a.ln1Stats!, g), //             d x = d mid + d ln1 · ∂ln_1
    ];
  }

  parameters(name: string): Parameter[] {
    const { ln1, attn, ln2, mlp } = this;
    return [
      ...ln1.parameters(`${name}.ln_1`),
      ...attn.cAttn.parameters(`${name}.attn.c_attn`),
      ...attn.cProj.parameters(`${name}.attn.c_proj`),
      ...ln2.parameters(`${name}.ln_2`),
      ...mlp.cFc.parameters(`${name}.mlp.c_fc`),
      ...mlp.cProj.parameters(`${name}.mlp.c_proj`),
    ];
  }
}

/**
 * to = from + f, where `added` adds f into `to`: `to` starts as a copy of `from` unless the
 * two are one tensor (the residual stream updated in place).
 */
function residual(from: Tensor, to: Tensor, added: Plan): Plan {
  return from === to ? added : [{ label: "residual copy", from, to }, ...added];
}

/** GPT-2 language model whose every kernel runs on the GPU. */
export class GPT2 {
  readonly wte: RowChunks; // [vocab, C], in chunks that fit a binding
  readonly wpe: Tensor; //    [nPositions, C]
  readonly blocks: Block[];
  readonly lnF: LayerNorm;
  readonly lmHead: RowChunks; // wte itself unless the checkpoint has its own lm_head
  /** How the matrices are stored on the GPU. */
  readonly weightFormat: WeightFormat;
  /** Every parameter, in one buffer (each tensor a view of it; matrices first). */
  readonly arena: TensorArena;
  /**
   * Bumped by whatever writes the weights in place (train/trainer.ts), so that copies of them
   * (the fused decode step's packed matrices) know to refresh.
   */
  weightsVersion = 0;

  constructor(
    readonly gpu: Gpu,
    readonly config: GPT2Config,
    w: GPT2Weights,
    options: ModelOptions = {},
  ) {
    const { vocabSize: V, nEmbd: C, nPositions: P, layerNormEpsilon: eps } = config;
    checkConfigFits(config, gpu.maxBinding, "the model's config");
    const f = this.weightFormat = options.weights ?? "f32";
    const arena = this.arena = new TensorArena(gpu, "parameters");
    this.wte = uploadRowChunks(gpu, w.wte, V, C, "wte", gpu.maxBinding, f, arena);
    this.wpe = arena.upload(w.wpe, [P, C], "wpe");
    this.blocks = w.blocks.map((b, i) => new Block(gpu, b, eps, `h.${i}`, f, arena));
    this.lnF = new LayerNorm(gpu, w.lnF, eps, "ln_f", arena);
    this.lmHead = w.lmHead
      ? uploadRowChunks(gpu, w.lmHead, V, C, "lm_head", gpu.maxBinding, f, arena)
      : this.wte;
    arena.allocate();
  }

  /** Loads a HuggingFace checkpoint folder (config.json + *.safetensors) onto the GPU. */
  static async load(gpu: Gpu, dir: string, options: ModelOptions = {}): Promise<GPT2> {
    const { config, weights } = await loadCheckpoint(dir);
    return new GPT2(gpu, config, weights, options);
  }

  /** The whole forward pass over the rows of `p`, as the kernels to run. */
  record(p: Pass): Plan {
    const { gpu } = this;
    const L = this.blocks.length;
    const input = (i: number) => i === 0 ? p.x : p.layer(i - 1).out;
    return [
      ...embedding(gpu, p.ids, p.start, this.wte, this.wpe, p.x, p.positions), // x: [N, C]
      ...p.keep(0, p.x),
      ...this.blocks.flatMap((block, i) => [
        ...block.forward(input(i), p.layer(i), p.sequences(i)),
        ...p.keep(i + 1, p.layer(i).out),
      ]),
      ...this.lnF.forward(input(L), p.lnF, p.lnFStats),
      ...p.keep(L + 1, p.lnF),
      ...lmHead(gpu, p.lnF, p.logitsRow0, this.lmHead, p.logits), // logits: [rows, V]
    ];
  }

  /**
   * The backward of {@link GPT2.record} over a training pass of B sequences of T rows each
   * (N = B·T), from d logits (in `p.logits`, [N, ldy]) to every parameter's gradient in `g`.
   * The activations are the forward's; `d` is scratch.
   */
  backward(p: Pass, T: number, d: ActivationGrads, g: Gradients): Plan {
    const { gpu } = this;
    const L = this.blocks.length;
    const input = (i: number) => i === 0 ? p.x : p.layer(i - 1).out;
    const tied = this.lmHead === this.wte;
    return [
      ...lmHeadBackward(gpu, p.logits, p.lnF, this.lmHead, d.ln, g.chunks(this.lmHead)), // d lnF
      { label: "clear d x", clear: d.x },
      ...this.lnF.backward(input(L), d.ln, d.x, p.lnFStats!, g), // d x: d(last block's out), [N, C]
      ...this.blocks.toReversed().flatMap((block, r) => {
        const i = L - 1 - r;
        return block.backward(input(i), p.layer(i), p.sequences(i), d, g);
      }), // d x: d embeddings
      ...(tied
        ? []
        : g.chunks(this.wte).parts.map((c) => ({ label: "clear d wte", clear: c.tensor }))),
      ...embeddingBackward(gpu, p.ids, d.x, T, g.chunks(this.wte), g.of(this.wpe), d.links), // d wte +=
    ];
  }

  /** Every parameter, named and shaped as HF's `named_parameters()` gives them. */
  parameters(): Parameter[] {
    const prefix = "transformer.";
    const chunks = (name: string, w: RowChunks): Parameter => ({
      name,
      shape: [w.rows, w.cols],
      parts: w.parts.map((c) => c.tensor),
      transposed: false,
    });
    return [
      chunks(`${prefix}wte.weight`, this.wte),
      { name: `${prefix}wpe.weight`, shape: this.wpe.shape, parts: [this.wpe], transposed: false },
      ...this.blocks.flatMap((b, i) => b.parameters(`${prefix}h.${i}`)),
      ...this.lnF.parameters(`${prefix}ln_f`),
      ...(this.lmHead === this.wte ? [] : [chunks("lm_head.weight", this.lmHead)]),
    ];
  }

  /** A new, empty KV cache for this model (preallocated unless `options` say "grow"). */
  newCache(options?: KVCacheOptions): KVCache {
    return new KVCache(this.gpu, this.config, options);
  }

  /** Frees the model's weights on the GPU (caches, and a runner's scratch, are freed on their own). */
  destroy(): void {
    this.gpu.destroy(this.arena.whole);
  }

  /** `using model = …` frees it at the end of the scope. */
  [Symbol.dispose](): void {
    this.destroy();
  }
}
