/**
 * The KV cache: per layer, the keys and values of every token seen so far, kept on the GPU
 * so that each new token attends to them without recomputing them.
 *
 * @module
 */
import type { Copy, Gpu, Tensor } from "../kernels/gpu.ts";
import type { GPT2Config } from "./config.ts";

/** One layer's cache: K and V, each [nHead, capacity, headDim] f32. */
export interface LayerCache {
  readonly k: Tensor;
  readonly v: Tensor;
}

/** K/V of one layer read back to the CPU, [nHead, length, headDim] each. */
export interface LayerKV {
  readonly k: Float32Array;
  readonly v: Float32Array;
}

/** How a {@link KVCache} allocates its buffers. */
export interface KVCacheOptions {
  /**
   * `"preallocate"` (the default): one allocation per layer for the whole context
   * (n_positions rows). `"grow"`: start with `initialCapacity` rows and, when a forward needs
   * more, allocate bigger buffers and copy the cached rows over, as dynamic caches do.
   */
  policy?: "preallocate" | "grow";
  /** Rows allocated at first under `"grow"` (default 16, at most n_positions). */
  initialCapacity?: number;
  /**
   * Under `"grow"`, the new capacity is max(rows needed, capacity · growthFactor), capped at
   * n_positions. 2 (the default) doubles; 1 allocates exactly the rows needed, so every step
   * reallocates and copies, like HF's DynamicCache concatenating each new token.
   */
  growthFactor?: number;
}

/**
 * A KV cache: one K and one V buffer per layer of shape [nHead, capacity, headDim], and a
 * length (tokens cached so far). Preallocated, the capacity is n_positions from the start;
 * growing, it starts small and {@link KVCache.reserve} reallocates it.
 */
export class KVCache {
  /** Tokens cached so far; the next token goes to position `length`. */
  length = 0;
  /** Bytes per element (f32). */
  readonly bytesPerElement = 4;
  /** How the buffers are allocated. */
  readonly policy: "preallocate" | "grow";
  /** Capacity multiplier when a growing cache is full. */
  readonly growthFactor: number;
  #layers: LayerCache[];
  #capacity: number;
  #version = 0;
  #growths = 0;

  constructor(readonly gpu: Gpu, readonly config: GPT2Config, options: KVCacheOptions = {}) {
    this.policy = options.policy ?? "preallocate";
    this.growthFactor = options.growthFactor ?? 2;
    const initial = options.initialCapacity ?? 16;
    if (!Number.isInteger(initial) || initial < 1) {
      throw new RangeError(`initialCapacity must be a positive integer, got ${initial}`);
    }
    if (!(this.growthFactor >= 1)) {
      throw new RangeError(`growthFactor must be >= 1, got ${this.growthFactor}`);
    }
    this.#capacity = this.policy === "grow"
      ? Math.min(initial, config.nPositions)
      : config.nPositions;
    this.#layers = this.#allocate(this.#capacity);
  }

  /** Per-layer K/V buffers; a growing cache replaces them (see {@link KVCache.version}). */
  get layers(): readonly LayerCache[] {
    return this.#layers;
  }

  /** Rows per head the buffers hold now: n_positions when preallocated. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Changes whenever the buffers are replaced: plans recorded against old ones are stale. */
  get version(): number {
    return this.#version;
  }

  /** How many times the buffers were reallocated. */
  get growths(): number {
    return this.#growths;
  }

  /** Bytes held on the device: 2 · n_layer · capacity · n_embd · 4. */
  get bytesAllocated(): number {
    return this.#layers.reduce((sum, l) => sum + l.k.buffer.size + l.v.buffer.size, 0);
  }

  /** Bytes holding cached tokens: 2 · n_layer · length · n_embd · 4. */
  get bytesUsed(): number {
    const { nLayer, nEmbd } = this.config;
    return 2 * nLayer * this.length * nEmbd * this.bytesPerElement;
  }

  /**
   * Makes room for `rows` tokens. A preallocated cache always has it (up to n_positions); a
   * growing one allocates bigger buffers, copies the cached rows of every head into them and
   * frees the old ones. Returns whether it reallocated.
   */
  reserve(rows: number): boolean {
    const { nPositions } = this.config;
    if (rows > nPositions) {
      throw new RangeError(`a cache holds at most n_positions (${nPositions}) rows, not ${rows}`);
    }
    if (rows <= this.#capacity) return false;
    const capacity = Math.min(nPositions, Math.max(rows, this.#grown()));
    const old = this.#layers;
    this.#layers = this.#allocate(capacity);
    const from = (t: Tensor) => ({ t, capacity: this.#capacity });
    const to = (t: Tensor) => ({ t, capacity });
    this.gpu.run(old.flatMap((l, i) => [
      ...copyRows(this.config, from(l.k), to(this.#layers[i].k), this.length),
      ...copyRows(this.config, from(l.v), to(this.#layers[i].v), this.length),
    ]));
    this.#free(old);
    this.#capacity = capacity;
    this.#version++;
    this.#growths++;
    return true;
  }

  /**
   * Starts this cache from the first `rows` tokens of `source` (a cache of the same model
   * holding a shared prefix, such as a system prompt): their K/V are copied on the GPU, so
   * the prefix is not computed again. Afterwards `length` is `rows`.
   */
  copyPrefix(source: KVCache, rows: number = source.length): void {
    if (source.config !== this.config) {
      throw new Error("copyPrefix: the source cache belongs to another model");
    }
    if (!Number.isInteger(rows) || rows < 0 || rows > source.length) {
      throw new RangeError(`copyPrefix: ${rows} rows asked, the source holds ${source.length}`);
    }
    this.length = 0; // nothing of the old content needs to survive a reallocation
    this.reserve(rows);
    const to = (t: Tensor) => ({ t, capacity: this.#capacity });
    const from = (t: Tensor) => ({ t, capacity: source.capacity });
    this.gpu.run(source.layers.flatMap((l, i) => [
      ...copyRows(this.config, from(l.k), to(this.#layers[i].k), rows),
      ...copyRows(this.config, from(l.v), to(this.#layers[i].v), rows),
    ]));
    this.length = rows;
  }

  /**
   * A sliding window with attention sinks (StreamingLLM): keeps the first `sinks` rows and
   * the last `recent` rows, moving the recent ones down to follow the sinks, so the cache
   * holds `sinks + recent` tokens again. Each kept row keeps the K/V computed when its token
   * was fed. Returns how many rows were dropped (0 when there are not more than that).
   */
  evict(sinks: number, recent: number): number {
    if (!Number.isInteger(sinks) || sinks < 0 || !Number.isInteger(recent) || recent < 0) {
      throw new RangeError(`evict: sinks ${sinks} and recent ${recent} must be integers >= 0`);
    }
    const dropped = this.length - sinks - recent;
    if (dropped <= 0) return 0;
    const { nHead, headDim } = this.config;
    const capacity = this.#capacity;
    // Through a scratch buffer: the moved rows may overlap where they land.
    const scratch = {
      t: this.gpu.tensor([nHead, Math.max(1, recent), headDim], "evict"),
      capacity: Math.max(1, recent),
    };
    this.gpu.run(
      this.#layers.flatMap((l) => [l.k, l.v]).flatMap((t) => [
        ...copyRows(this.config, { t, capacity, row0: this.length - recent }, scratch, recent),
        ...copyRows(this.config, scratch, { t, capacity, row0: sinks }, recent),
      ]),
    );
    this.gpu.destroy(scratch.t);
    this.length = sinks + recent;
    return dropped;
  }

  /** Forgets every cached token (the buffers stay allocated). */
  reset(): void {
    this.length = 0;
  }

  /** Reads the cached K/V of every layer, [nHead, length, headDim] each, in one wait. */
  async read(): Promise<LayerKV[]> {
    const { nHead, headDim } = this.config;
    const rows = this.length * headDim;
    // Only the first `length` rows of each head are read: one view per head of every buffer.
    const views = this.#layers.flatMap((l) => [l.k, l.v]).flatMap((t) =>
      Array.from({ length: this.length ? nHead : 0 }, (_, h): Tensor => ({
        buffer: t.buffer,
        offset: t.offset + h * this.#capacity * headDim * 4,
        shape: [this.length, headDim],
      }))
    );
    const parts = await this.gpu.read(views);
    const join = (first: number) => {
      const out = new Float32Array(nHead * rows);
      if (rows) { for (let h = 0; h < nHead; h++) out.set(parts[first + h], h * rows); }
      return out;
    };
    return this.#layers.map((_, i) => ({ k: join(2 * i * nHead), v: join((2 * i + 1) * nHead) }));
  }

  /** Frees the GPU buffers. */
  destroy(): void {
    this.#free(this.#layers);
    this.#layers = [];
  }

  #allocate(capacity: number): LayerCache[] {
    const { nLayer, nHead, headDim } = this.config;
    const shape = [nHead, capacity, headDim];
    return Array.from({ length: nLayer }, (_, i) => ({
      k: this.gpu.tensor(shape, `cache.${i}.k`),
      v: this.gpu.tensor(shape, `cache.${i}.v`),
    }));
  }

  #free(layers: readonly LayerCache[]): void {
    for (const l of layers) {
      this.gpu.destroy(l.k);
      this.gpu.destroy(l.v);
    }
  }

  #grown(): number {
    return Math.ceil(this.#capacity * this.growthFactor);
  }
}

/** Rows `row0 ..` of every head of a [nHead, capacity, headDim] tensor. */
interface RowRange {
  t: Tensor;
  capacity: number;
  row0?: number;
}

// Rows are [head][pos][dim]: one copy of `rows` rows per head, from one row range to another.
function copyRows(config: GPT2Config, from: RowRange, to: RowRange, rows: number): Copy[] {
  const { nHead, headDim } = config;
  if (rows === 0) return [];
  const shape = [rows, headDim];
  const at = (r: RowRange, h: number) => (h * r.capacity + (r.row0 ?? 0)) * headDim * 4;
  return Array.from({ length: nHead }, (_, h) => ({
    label: `copy cache rows, head ${h}`,
    from: { buffer: from.t.buffer, offset: at(from, h), shape },
    to: { buffer: to.t.buffer, offset: at(to, h), shape },
  }));
}
