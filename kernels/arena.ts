/**
 * One GPU buffer holding many tensors, as llm.c keeps a model's parameters: each tensor is
 * a view at its own offset, padded to the binding alignment so that every view binds on its
 * own, and a kernel that treats every element alike (AdamW, the gradient norm) can run over
 * the whole buffer in a few dispatches. A trainer mirrors the layout in a buffer of gradients
 * and in each of AdamW's moments.
 *
 * Tensors are reserved first and placed when {@link TensorArena.allocate} is called: matrices
 * (two or more dimensions) first, then vectors, so that the matrices (which AdamW decays)
 * are one prefix of the buffer.
 *
 * @module
 */
import { type Gpu, type HostArray, numel, type Tensor } from "./gpu.ts";

/** What can place a tensor's data on the GPU: a {@link Gpu}, or a {@link TensorArena}. */
export interface Uploader {
  upload(data: HostArray, shape: readonly number[], label: string): Tensor;
}

// A reserved view: its buffer and offset are set by allocate().
interface Slot {
  view: { buffer: GPUBuffer; offset: number; shape: readonly number[] };
  data: HostArray | null;
  label: string;
}

/** Tensors in one buffer, each at an aligned offset. */
export class TensorArena implements Uploader {
  readonly #slots: Slot[] = [];
  #whole: Tensor | null = null;
  #matrixWords = 0;

  constructor(readonly gpu: Gpu, readonly label: string) {}

  /**
   * Reserves a tensor of `shape` holding `data`: the returned view gets its buffer and offset
   * (and the data) at {@link TensorArena.allocate}, and must not be used before.
   */
  upload(data: HostArray, shape: readonly number[], label: string): Tensor {
    if (this.#whole) throw new Error(`${this.label}: ${label} comes after the arena was allocated`);
    if (data.length !== numel({ shape })) {
      throw new Error(`${label}: ${data.length} values for shape [${shape}]`);
    }
    const view = { buffer: undefined as unknown as GPUBuffer, offset: 0, shape };
    this.#slots.push({ view, data, label });
    return view;
  }

  /** Places every reserved tensor (matrices first), allocates the buffer and writes the data. */
  allocate(): void {
    if (this.#whole) throw new Error(`${this.label}: allocated twice`);
    const align = this.gpu.bindingAlignment / 4; // words
    const padded = (n: number) => Math.ceil(Math.max(1, n) / align) * align;
    const order = [
      ...this.#slots.filter((s) => s.view.shape.length >= 2),
      ...this.#slots.filter((s) => s.view.shape.length < 2),
    ];
    let words = 0;
    for (const s of order) {
      s.view.offset = words * 4;
      words += padded(numel(s.view));
      if (s.view.shape.length >= 2) this.#matrixWords = words;
    }
    if (words * 4 > this.gpu.device.limits.maxBufferSize) {
      throw new Error(
        `${this.label}: ${(words * 4 / 2 ** 20).toFixed(0)} MiB exceed the adapter's largest ` +
          `buffer (${(this.gpu.device.limits.maxBufferSize / 2 ** 20).toFixed(0)} MiB)`,
      );
    }
    this.#whole = this.gpu.tensor([words], this.label);
    for (const s of order) {
      s.view.buffer = this.#whole.buffer;
      this.gpu.write(s.view, s.data!);
      s.data = null;
    }
  }

  /** The whole buffer as one flat tensor of f32 words (padding included, zero). */
  get whole(): Tensor {
    if (!this.#whole) throw new Error(`${this.label}: not allocated yet`);
    return this.#whole;
  }

  /** Words at the start of {@link TensorArena.whole} that belong to matrices (and their padding). */
  get matrixWords(): number {
    if (!this.#whole) throw new Error(`${this.label}: not allocated yet`);
    return this.#matrixWords;
  }

  /** Every view, in the order reserved. */
  get views(): readonly Tensor[] {
    return this.#slots.map((s) => s.view);
  }

  /**
   * `view`'s place in another buffer of this arena's layout (`mirror`, e.g. the gradients):
   * the same offset and shape.
   */
  static at(mirror: Tensor, view: Tensor): Tensor {
    if (view.offset + numel(view) * 4 > mirror.offset + numel(mirror) * 4) {
      throw new Error(`arena: a view at ${view.offset} lies outside the mirror`);
    }
    return { buffer: mirror.buffer, offset: mirror.offset + view.offset, shape: view.shape };
  }
}
