/**
 * The KV cache: per layer, the keys and values of every token seen so far, kept on the GPU
 * so that each new token attends to them without recomputing them.
 *
 * @module
 */
import type { Gpu, Tensor } from "../kernels/gpu.ts";
import type { GPT2Config } from "./config.ts";

/** One layer's cache: K and V, each [nHead, nPositions, headDim] f32. */
export interface LayerCache {
  readonly k: Tensor;
  readonly v: Tensor;
}

/** K/V of one layer read back to the CPU, [nHead, length, headDim] each. */
export interface LayerKV {
  readonly k: Float32Array;
  readonly v: Float32Array;
}

/**
 * A KV cache preallocated for the whole context: one K and one V buffer per layer of shape
 * [nHead, nPositions, headDim], and a length (tokens cached so far).
 */
export class KVCache {
  /** Tokens cached so far; the next token goes to position `length`. */
  length = 0;
  /** Per-layer K/V buffers. */
  readonly layers: readonly LayerCache[];
  /** Bytes per element (f32). */
  readonly bytesPerElement = 4;

  constructor(readonly gpu: Gpu, readonly config: GPT2Config) {
    const { nLayer, nHead, nPositions, headDim } = config;
    const shape = [nHead, nPositions, headDim];
    this.layers = Array.from({ length: nLayer }, (_, i) => ({
      k: gpu.tensor(shape, `cache.${i}.k`),
      v: gpu.tensor(shape, `cache.${i}.v`),
    }));
  }

  /** Most tokens the cache can hold (n_positions). */
  get capacity(): number {
    return this.config.nPositions;
  }

  /** Bytes held on the device: 2 · n_layer · n_positions · n_embd · 4. */
  get bytesAllocated(): number {
    return this.layers.reduce((sum, l) => sum + l.k.buffer.size + l.v.buffer.size, 0);
  }

  /** Bytes holding cached tokens: 2 · n_layer · length · n_embd · 4. */
  get bytesUsed(): number {
    const { nLayer, nEmbd } = this.config;
    return 2 * nLayer * this.length * nEmbd * this.bytesPerElement;
  }

  /** Forgets every cached token (the buffers stay allocated). */
  reset(): void {
    this.length = 0;
  }

  /** Reads the cached K/V of every layer, trimmed to `length`. */
  async read(): Promise<LayerKV[]> {
    const all = await this.gpu.read(this.layers.flatMap((l) => [l.k, l.v]));
    const trim = (a: Float32Array) => this.#trim(a);
    return this.layers.map((_, i) => ({ k: trim(all[2 * i]), v: trim(all[2 * i + 1]) }));
  }

  /** Frees the GPU buffers. */
  destroy(): void {
    for (const l of this.layers) {
      this.gpu.destroy(l.k);
      this.gpu.destroy(l.v);
    }
  }

  // [nHead, nPositions, headDim] -> [nHead, length, headDim]
  #trim(a: Float32Array): Float32Array {
    const { nHead, nPositions, headDim } = this.config;
    const out = new Float32Array(nHead * this.length * headDim);
    for (let h = 0; h < nHead; h++) {
      const from = h * nPositions * headDim;
      out.set(a.subarray(from, from + this.length * headDim), h * this.length * headDim);
    }
    return out;
  }
}
