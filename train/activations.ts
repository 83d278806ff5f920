/**
 * Everything a training step keeps on the GPU for B sequences of T tokens (N = B·T rows):
 * the forward's activations of every layer (the backward reads them), each layer's keys and
 * values and softmax rows, the logits that become their gradient in place, and the gradient
 * scratch that every layer reuses. Allocated once per (B, T); a step allocates nothing.
 *
 * @module
 */
import type { Copy, Gpu, Tensor } from "../kernels/gpu.ts";
import type { GPT2Config } from "../model/config.ts";
import type { ActivationGrads, BlockActivations, Pass, SequenceRows } from "../model/gpt2.ts";

/** The activations and gradient scratch of one training shape. */
export class TrainingActivations {
  /** Rows of the pass, B · T. */
  readonly N: number;
  readonly ids: Tensor; //       [N] u32 input tokens
  readonly targets: Tensor; //   [N] u32 the next token of each row
  readonly losses: Tensor; //    [N] cross-entropy of each row
  readonly start: Tensor; //     [4] u32 zeros: every sequence starts at position 0
  readonly positions: Tensor; // [N] u32: row b·T + t is at position t
  readonly x: Tensor; //         [N, C] embeddings
  readonly layers: readonly BlockActivations[]; // each [N, ·], see BlockActivations
  readonly sequences: readonly SequenceRows[]; //  per layer: K, V [B·nHead, T, headDim] and probs
  readonly lnF: Tensor; //       [N, C]
  readonly lnFStats: Tensor; //  [N, 2] ln_f's mean and rstd per row
  readonly logits: Tensor; //    [N, ldy] logits, then d logits
  readonly grads: ActivationGrads;
  readonly #tensors: Tensor[] = [];

  constructor(
    readonly gpu: Gpu,
    readonly config: GPT2Config,
    readonly B: number,
    readonly T: number,
  ) {
    const { nEmbd: C, nInner: I, nHead: H, headDim, nLayer, vocabSize, nPositions } = config;
    if (!Number.isInteger(B) || B < 1 || !Number.isInteger(T) || T < 1 || T > nPositions) {
      throw new RangeError(
        `training batch: ${B} sequences of ${T} tokens; need B >= 1 and 1 <= T <= n_positions ` +
          `(${nPositions})`,
      );
    }
    const N = this.N = B * T;
    const align = gpu.bindingAlignment / 4;
    const ldy = Math.ceil(vocabSize / align) * align;
    if (N * ldy * 4 > gpu.maxBinding) {
      throw new RangeError(
        `training batch: ${N} rows of ${vocabSize} logits exceed one binding ` +
          `(${(gpu.maxBinding / 2 ** 20).toFixed(0)} MiB); use fewer rows`,
      );
    }
    const make = (shape: number[], name: string) => {
      const t = gpu.tensor(shape, `${name}[${shape}]`);
      this.#tensors.push(t);
      return t;
    };
    this.ids = make([N], "ids");
    this.targets = make([N], "targets");
    this.losses = make([N], "losses");
    this.start = make([4], "start");
    this.positions = make([N], "positions");
    gpu.write(this.positions, Uint32Array.from({ length: N }, (_, n) => n % T));
    this.x = make([N, C], "x");
    this.layers = Array.from({ length: nLayer }, (_, i) => ({
      ln1: make([N, C], `h.${i}.ln1`),
      qkv: make([N, 3 * C], `h.${i}.qkv`),
      att: make([N, C], `h.${i}.att`),
      mid: make([N, C], `h.${i}.mid`),
      ln2: make([N, C], `h.${i}.ln2`),
      fcPre: make([N, I], `h.${i}.fc_pre`),
      fc: make([N, I], `h.${i}.fc`),
      out: make([N, C], `h.${i}.out`),
      ln1Stats: make([N, 2], `h.${i}.ln1 stats`),
      ln2Stats: make([N, 2], `h.${i}.ln2 stats`),
    }));
    this.sequences = Array.from({ length: nLayer }, (_, i) => ({
      rows: { row0: 0, T, seqs: B },
      cache: { k: make([B * H, T, headDim], `h.${i}.k`), v: make([B * H, T, headDim], `h.${i}.v`) },
      start: this.start,
      probs: make([B * H, T, T], `h.${i}.probs`),
      zeroTail: false,
    }));
    this.lnF = make([N, C], "ln_f");
    this.lnFStats = make([N, 2], "ln_f stats");
    this.logits = make([N, ldy], "logits");
    this.grads = {
      x: make([N, C], "d x"),
      ln: make([N, C], "d ln"),
      qkv: make([N, 3 * C], "d qkv"),
      att: make([N, C], "d att"),
      fcPre: make([N, I], "d fc_pre"),
      probs: make([B * H, T, T], "d probs"),
      links: make([N], "embedding links"),
    };
  }

  /** The forward pass over these activations: every row's logits, nothing kept besides. */
  pass(): Pass {
    return {
      ids: this.ids,
      start: this.start,
      positions: this.positions,
      x: this.x,
      layer: (i) => this.layers[i],
      sequences: (i) => [this.sequences[i]],
      lnF: this.lnF,
      lnFStats: this.lnFStats,
      logits: this.logits,
      logitsRow0: 0,
      keep: (): Copy[] => [],
    };
  }

  /** Bytes of every buffer held. */
  get bytes(): number {
    return this.#tensors.reduce((sum, t) => sum + t.buffer.size, 0);
  }

  /** Frees every buffer. */
  destroy(): void {
    for (const t of this.#tensors.splice(0)) this.gpu.destroy(t);
  }
}
