/**
 * Scratch activations of one inference shape (T rows and the outputs asked for), allocated
 * once and reused by every call of that shape, so a decode loop allocates nothing; and the
 * {@link Pass} that lays a forward over them: one sequence of T tokens, or B sequences of
 * one token each (a batched decode step).
 *
 * @module
 */
import type { Copy, Gpu, Tensor } from "../kernels/gpu.ts";
import type { GPT2Config } from "../model/config.ts";
import type { BlockActivations, Pass, SequenceRows } from "../model/gpt2.ts";
import type { KVCache } from "../model/kv_cache.ts";

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

/** Where a pass's token ids and positions come from: buffers the runner writes. */
export interface PassInputs {
  readonly ids: Tensor; //        [T] u32
  readonly positions: Tensor; //  [T] u32, each row's position in a batched step
}

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

  /**
   * The pass of one sequence (`caches` of one, its T rows from `starts[0]`'s pos0) or of B
   * sequences of one row each (row b at `starts[b]`'s pos0 in `caches[b]`). Every block
   * updates the residual stream x in place and shares the other scratch.
   */
  pass(inputs: PassInputs, caches: readonly KVCache[], starts: readonly Tensor[]): Pass {
    const one = caches.length === 1;
    const block: BlockActivations = {
      ln1: this.ln,
      qkv: this.qkv,
      att: this.att,
      mid: this.x,
      ln2: this.ln,
      fcPre: null,
      fc: this.fc,
      out: this.x,
    };
    const zeroTail = this.options.attention;
    const sequences = (i: number): SequenceRows[] =>
      caches.map((cache, b) => ({
        rows: one ? { row0: 0, T: this.T } : { row0: b, T: 1 },
        cache: cache.layers[i],
        start: starts[b],
        // A batch's sequences use one scratch in turn, a row each.
        probs: one
          ? this.probsFor(i, cache.capacity)
          : { ...this.probs[0], shape: [this.config.nHead, 1, cache.capacity] },
        zeroTail,
      }));
    const keep = (i: number, t: Tensor): Copy[] =>
      this.hidden ? [{ label: `hidden ${i}`, from: t, to: this.hiddenAt(i) }] : [];
    return {
      ids: inputs.ids,
      start: starts[0],
      positions: one ? undefined : inputs.positions,
      x: this.x,
      layer: () => block,
      sequences,
      lnF: this.ln,
      logits: this.logits,
      logitsRow0: this.options.logits === "all" ? 0 : this.T - 1,
      keep,
    };
  }

  /** Frees every buffer. */
  destroy(): void {
    for (const t of this.tensors) this.gpu.destroy(t);
  }
}
