/**
 * Scratch activations of one forward shape (T tokens and the outputs asked for), allocated
 * once and reused by every call of that shape, so a decode loop allocates nothing.
 *
 * @module
 */
import type { Gpu, Tensor } from "../kernels/gpu.ts";
import type { GPT2Config } from "../model/config.ts";

/** What a forward pass returns besides the cache update. */
export interface ForwardOptions {
  /** Logits for every position ("all") or only the last one ("last", the default). */
  logits?: "last" | "all";
  /** Also return the hidden states (embeddings, every block's output, ln_f's output). */
  hidden?: boolean;
  /** Also return every layer's attention probabilities. */
  attention?: boolean;
  /**
   * Time every kernel with GPU timestamps and return them (needs `timestamp-query`). The
   * dispatches then run one compute pass each, so the forward itself is slower.
   */
  profile?: boolean;
}

/** The options that decide a workspace's buffers (all but `profile`). */
export type ShapeOptions = Required<Omit<ForwardOptions, "profile">>;

/** The activations of a forward over T tokens; shapes in the field comments. */
export class Workspace {
  readonly x: Tensor; //      [T, C]  the residual stream
  readonly ln: Tensor; //     [T, C]  LayerNorm output
  readonly qkv: Tensor; //    [T, 3C] q | k | v
  readonly att: Tensor; //    [T, C]  attention output, heads side by side
  readonly fc: Tensor; //     [T, nInner] MLP hidden
  readonly logits: Tensor; // [rows, ldy], rows = T or 1, ldy = vocab padded for alignment
  readonly hidden: Tensor | null; // [nLayer + 2, T, C]
  readonly probs: readonly Tensor[]; // [nHead, T, nPositions] per layer, or one shared
  readonly tensors: Tensor[] = [];

  constructor(
    readonly gpu: Gpu,
    readonly config: GPT2Config,
    readonly T: number,
    readonly options: ShapeOptions,
    /** The model's [pos0] buffer that the kernels read. */
    readonly step: Tensor,
  ) {
    const { nEmbd: C, nInner, nLayer, nHead, nPositions, vocabSize } = config;
    const make = (shape: number[], name: string) => {
      const t = gpu.tensor(shape, `${name}[${shape}]`);
      this.tensors.push(t);
      return t;
    };
    this.x = make([T, C], "x");
    this.ln = make([T, C], "ln");
    this.qkv = make([T, 3 * C], "qkv");
    this.att = make([T, C], "att");
    this.fc = make([T, nInner], "fc");
    const align = gpu.bindingAlignment / 4;
    const ldy = Math.ceil(vocabSize / align) * align;
    this.logits = make([options.logits === "all" ? T : 1, ldy], "logits");
    this.hidden = options.hidden ? make([nLayer + 2, T, C], "hidden") : null;
    // Attention scores and then softmax rows: one per layer when they are returned, else one
    // scratch that every layer reuses.
    this.probs = Array.from(
      { length: options.attention ? nLayer : 1 },
      (_, i) => make([nHead, T, nPositions], `probs.${i}`),
    );
  }

  /** Row `i` of the hidden-state stack, [T, C]. */
  hiddenAt(i: number): Tensor {
    const h = this.hidden!;
    const [, T, C] = h.shape;
    return { buffer: h.buffer, offset: h.offset + i * T * C * 4, shape: [T, C] };
  }

  /** Layer `i`'s softmax rows for a cache of `capacity` rows: [nHead, T, capacity]. */
  probsFor(i: number, capacity: number): Tensor {
    const t = this.probs[this.options.attention ? i : 0];
    const [nHead, T] = t.shape;
    return { buffer: t.buffer, offset: t.offset, shape: [nHead, T, capacity] };
  }

  /** Frees every buffer. */
  destroy(): void {
    for (const t of this.tensors) this.gpu.destroy(t);
  }
}
