/**
 * The KV cache: per layer, the keys and values of every token seen so far, kept on the GPU
 * so that each new token attends to them without recomputing them.
 *
 * Layout: per layer, K and V are each `[n_head, capacity, words]` u32 words, row
 * `head · capacity + position` holding head_dim values (f32: one per word, f16: two, int8: four
 * with a scale per row in `scales`); {@link KVCache.length} rows are valid.
 *
 * Who writes it (every writer encodes a row through kv_codec.wgsl's `kv_row_scale` and
 * `kv_encode`, so the three storages mean the same everywhere):
 * - `storeKv` (kernels/attention.ts, attention.wgsl's `store_kv`): the K/V of every token of a
 *   prefill, a general decode step and a batched step, at rows `length …`;
 * - the fused decode step (`fusedDecodeStep` in kernels/fused_decode.ts, fused_decode.wgsl's
 *   own `store_kv`): one token's K/V per layer, inside its single dispatch;
 * - this file: {@link KVCache.copyPrefix} (a shared prefix), {@link KVCache.evict} (the
 *   sliding window's sinks), the copy when a growing cache reallocates; and
 *   `loadSnapshot` (model/snapshot.ts), which restores saved rows.
 *
 * Who reads it (through kv_codec.wgsl's `kv_load4`): `attend` (kernels/attention.ts: the
 * `scores` and `values` kernels of a prefill, `attend_one` of a decode step), the fused
 * decode step's `attention`, and {@link KVCache.read}, which brings the rows back to the CPU
 * (parity, snapshots).
 *
 * @module
 */
import { type CacheDType, type CacheScales, cacheWords } from "../kernels/attention.ts";
import type { Copy, Gpu, Tensor } from "../kernels/gpu.ts";
import type { GPT2Config } from "./config.ts";
import { describe } from "../base/describe.ts";

export type { CacheDType } from "../kernels/attention.ts";

/**
 * One layer's cache: K and V, each [nHead, capacity, words] u32 words holding headDim values
 * per row (f32: one per word, f16: two, int8: four), and with int8 a scale per row.
 */
export interface LayerCache {
  readonly k: Tensor;
  readonly v: Tensor;
  readonly scales?: CacheScales; // [nHead, capacity] each, int8 only
}

/** Every buffer of a layer, each [nHead, capacity, words] with 1 word per scale. */
function planes(l: LayerCache): Tensor[] {
  return l.scales ? [l.k, l.v, l.scales.k, l.scales.v] : [l.k, l.v];
}

/** K/V of one layer read back to the CPU, [nHead, length, headDim] each. */
export interface LayerKV {
  readonly k: Float32Array;
  readonly v: Float32Array;
}

/**
 * What the leak guards know of a live cache: its buffers (replaced when it grows), so that a
 * cache collected without `destroy()` can still be freed.
 */
interface LiveBuffers {
  gpu: Gpu;
  layers: readonly LayerCache[];
  start: Tensor | null;
}

/** Bytes of every KV cache's buffers (all devices) that are neither destroyed nor collected. */
let liveBytes = 0;
let warnedCollected = false;
let warnedBudget = false;

/** Frees what a cache holds and takes it off the live total. */
function freeBuffers(live: LiveBuffers): void {
  for (const t of live.layers.flatMap(planes)) {
    live.gpu.destroy(t);
    liveBytes -= t.buffer.size;
  }
  if (live.start) live.gpu.destroy(live.start);
  live.layers = [];
  live.start = null;
}

/**
 * Caches collected by V8 without `destroy()`: their buffers are freed then, and a warning says
 * so once per process. V8 may collect late or never (the JS side of a cache is small), so
 * {@link KVCache.liveBytesWarning} is the guard that always fires.
 */
const collected = new FinalizationRegistry<LiveBuffers>((live) => {
  const bytes = live.layers.flatMap(planes).reduce((sum, t) => sum + t.buffer.size, 0);
  freeBuffers(live);
  if (warnedCollected) return;
  warnedCollected = true;
  console.warn(
    `kvgpt: a KV cache of ${(bytes / 2 ** 20).toFixed(1)} MiB was garbage-collected without ` +
      `destroy(); until collection it held its GPU memory. Call cache.destroy() or write ` +
      `\`using cache = model.newCache()\` (warned once)`,
  );
});

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
  /**
   * How K and V are stored: `"f32"` (the default, exact), `"f16"` (half the bytes), or
   * `"int8"` (a quarter, plus one f32 scale per head and token: x ≈ q/127 · max|row|).
   * The attention kernels dequantize as they read.
   */
  dtype?: CacheDType;
}

/**
 * A KV cache: one K and one V buffer per layer of shape [nHead, capacity, headDim], and a
 * length (tokens cached so far). Preallocated, the capacity is n_positions from the start;
 * growing, it starts small and {@link KVCache.reserve} reallocates it.
 */
export class KVCache {
  /** Tokens cached so far; the next token goes to position `length`. */
  length = 0;
  /** How K and V are stored. */
  readonly dtype: CacheDType;
  /** Bytes per stored K or V value: 4, 2 or 1 (int8's scales come on top). */
  readonly bytesPerElement: number;
  /** How the buffers are allocated. */
  readonly policy: "preallocate" | "grow";
  /** Capacity multiplier when a growing cache is full. */
  readonly growthFactor: number;
  /**
   * When the buffers of all live caches together pass this many bytes, a warning is printed
   * once per process: caches that are neither destroyed nor collected are the usual leak
   * (2 GiB by default: 27 full caches of GPT-2 small). Set it to Infinity to silence it.
   */
  static liveBytesWarning = 2 * 2 ** 30;

  /** Bytes held by all KV caches not yet destroyed (or collected), on every device. */
  static get liveBytes(): number {
    return liveBytes;
  }

  #live: LiveBuffers;
  #capacity: number;
  #version = 0;
  #growths = 0;

  constructor(readonly gpu: Gpu, readonly config: GPT2Config, options: KVCacheOptions = {}) {
    this.policy = options.policy ?? "preallocate";
    this.dtype = options.dtype ?? "f32";
    if (!["f32", "f16", "int8"].includes(this.dtype)) {
      throw new RangeError(`dtype must be "f32", "f16" or "int8", got ${describe(this.dtype)}`);
    }
    this.bytesPerElement = { f32: 4, f16: 2, int8: 1 }[this.dtype];
    this.growthFactor = options.growthFactor ?? 2;
    const initial = options.initialCapacity ?? 16;
    if (!Number.isInteger(initial) || initial < 1) {
      throw new RangeError(`initialCapacity must be a positive integer, got ${describe(initial)}`);
    }
    if (!(this.growthFactor >= 1)) {
      throw new RangeError(`growthFactor must be >= 1, got ${describe(this.growthFactor)}`);
    }
    this.#capacity = this.policy === "grow"
      ? Math.min(initial, config.nPositions)
      : config.nPositions;
    this.#live = { gpu, layers: this.#allocate(this.#capacity), start: null };
    collected.register(this, this.#live, this);
  }

  /**
   * Where this cache's next token goes, on the GPU ([4] u32, `length` in word 0), made on
   * first use: a batched decode step writes it, and each sequence attends at its own.
   */
  get start(): Tensor {
    return this.#live.start ??= this.gpu.tensor([4], "cache start");
  }

  /** Per-layer K/V buffers; a growing cache replaces them (see {@link KVCache.version}). */
  get layers(): readonly LayerCache[] {
    return this.#live.layers;
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
    return this.#live.layers.flatMap(planes).reduce((sum, t) => sum + t.buffer.size, 0);
  }

  /**
   * Bytes holding cached tokens: 2 · n_layer · length · n_embd · bytes per element, plus with
   * int8 2 · n_layer · length · n_head · 4 for the scales.
   */
  get bytesUsed(): number {
    const { nLayer, nEmbd, nHead } = this.config;
    const scales = this.dtype === "int8" ? nHead * 4 : 0;
    return 2 * nLayer * this.length * (nEmbd * this.bytesPerElement + scales);
  }

  /**
   * Makes room for `rows` tokens. A preallocated cache always has it (up to n_positions); a
   * growing one allocates bigger buffers, copies the cached rows of every head into them and
   * frees the old ones. Returns whether it reallocated.
   */
  reserve(rows: number): boolean {
    const { nPositions } = this.config;
    if (rows > nPositions) {
      throw new RangeError(
        `a cache holds at most n_positions (${nPositions}) rows, not ${describe(rows)}`,
      );
    }
    if (rows <= this.#capacity) return false;
    const capacity = Math.min(nPositions, Math.max(rows, this.#grown()));
    const old = this.#live.layers;
    const layers = this.#allocate(capacity);
    this.gpu.run(old.flatMap((l, i) => {
      const to = planes(layers[i]);
      return planes(l).flatMap((t, j) =>
        copyRows(this.config, { t, capacity: this.#capacity }, { t: to[j], capacity }, this.length)
      );
    }));
    freeBuffers({ gpu: this.gpu, layers: old, start: null });
    this.#live.layers = layers;
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
    if (source.config !== this.config || source.dtype !== this.dtype) {
      throw new Error("copyPrefix: the source cache belongs to another model or dtype");
    }
    if (!Number.isInteger(rows) || rows < 0 || rows > source.length) {
      throw new RangeError(
        `copyPrefix: ${describe(rows)} rows asked, the source holds ${source.length}`,
      );
    }
    this.length = 0; // nothing of the old content needs to survive a reallocation
    this.reserve(rows);
    this.gpu.run(source.layers.flatMap((l, i) => {
      const to = planes(this.#live.layers[i]);
      return planes(l).flatMap((t, j) =>
        copyRows(
          this.config,
          { t, capacity: source.capacity },
          { t: to[j], capacity: this.#capacity },
          rows,
        )
      );
    }));
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
      throw new RangeError(
        `evict: sinks ${describe(sinks)} and recent ${describe(recent)} must be integers >= 0`,
      );
    }
    const dropped = this.length - sinks - recent;
    if (dropped <= 0) return 0;
    const { nHead, headDim } = this.config;
    const capacity = this.#capacity;
    // Through a scratch buffer: the moved rows may overlap where they land.
    const rows = Math.max(1, recent);
    const buffer = this.gpu.tensor([nHead, rows, headDim], "evict");
    this.gpu.run(
      this.#live.layers.flatMap(planes).flatMap((t) => {
        const scratch = { t: { ...buffer, shape: [nHead, rows, t.shape[2] ?? 1] }, capacity: rows };
        return [
          ...copyRows(this.config, { t, capacity, row0: this.length - recent }, scratch, recent),
          ...copyRows(this.config, scratch, { t, capacity, row0: sinks }, recent),
        ];
      }),
    );
    this.gpu.destroy(buffer);
    this.length = sinks + recent;
    return dropped;
  }

  /** Forgets every cached token (the buffers stay allocated). */
  reset(): void {
    this.length = 0;
  }

  /**
   * Reads the cached K/V of every layer as f32 [nHead, length, headDim] each (dequantized as
   * the kernels do), in one wait.
   */
  async read(): Promise<LayerKV[]> {
    const { nHead, headDim } = this.config;
    const n = this.length;
    // Only the first `length` rows of each head are read: one view per head of every buffer.
    const views = this.#live.layers.flatMap(planes).flatMap((t) => {
      const words = t.shape[2] ?? 1;
      return Array.from({ length: n ? nHead : 0 }, (_, h): Tensor => ({
        buffer: t.buffer,
        offset: t.offset + h * this.#capacity * words * 4,
        shape: [n, words],
      }));
    });
    const parts = await this.gpu.read(views);
    const planesPerLayer = this.dtype === "int8" ? 4 : 2;
    // Plane j (K, V, K scales, V scales) of layer i, heads one after another, as raw words.
    const plane = (i: number, j: number) => {
      const first = (i * planesPerLayer + j) * nHead;
      const heads = parts.slice(first, first + nHead);
      const out = new Uint32Array(heads.reduce((sum, p) => sum + p.length, 0));
      heads.forEach((p, h) =>
        out.set(new Uint32Array(p.buffer, p.byteOffset, p.length), h * p.length)
      );
      return out;
    };
    return this.#live.layers.map((_, i) => {
      if (n === 0) return { k: new Float32Array(0), v: new Float32Array(0) };
      const scale = (j: number) => new Float32Array(plane(i, j).buffer);
      return {
        k: this.#decode(plane(i, 0), this.dtype === "int8" ? scale(2) : null, headDim),
        v: this.#decode(plane(i, 1), this.dtype === "int8" ? scale(3) : null, headDim),
      };
    });
  }

  // Stored words -> f32 values, as attention.wgsl's key4/value4 read them.
  #decode(words: Uint32Array, scales: Float32Array | null, headDim: number): Float32Array {
    if (this.dtype === "f32") return new Float32Array(words.buffer);
    if (this.dtype === "f16") return Float32Array.from(new Float16Array(words.buffer));
    const q = new Int8Array(words.buffer);
    return Float32Array.from(q, (v, i) => Math.max(-1, v / 127) * scales![Math.floor(i / headDim)]);
  }

  /**
   * Frees the GPU buffers, at once (see {@link Gpu.destroy}); a second call does nothing. The
   * cache cannot be used afterwards.
   */
  destroy(): void {
    collected.unregister(this);
    freeBuffers(this.#live);
  }

  /** {@link KVCache.destroy}, for `using cache = model.newCache()`. */
  [Symbol.dispose](): void {
    this.destroy();
  }

  #allocate(capacity: number): LayerCache[] {
    const { nLayer, nHead, headDim } = this.config;
    const shape = [nHead, capacity, cacheWords(this.dtype, headDim)];
    const layers = Array.from({ length: nLayer }, (_, i) => ({
      k: this.gpu.tensor(shape, `cache.${i}.k`),
      v: this.gpu.tensor(shape, `cache.${i}.v`),
      ...(this.dtype === "int8"
        ? {
          scales: {
            k: this.gpu.tensor([nHead, capacity], `cache.${i}.k scales`),
            v: this.gpu.tensor([nHead, capacity], `cache.${i}.v scales`),
          },
        }
        : {}),
    }));
    liveBytes += layers.flatMap(planes).reduce((sum, t) => sum + t.buffer.size, 0);
    if (liveBytes > KVCache.liveBytesWarning && !warnedBudget) {
      warnedBudget = true;
      console.warn(
        `kvgpt: live KV caches hold ${(liveBytes / 2 ** 20).toFixed(0)} MiB, past the ` +
          `${(KVCache.liveBytesWarning / 2 ** 20).toFixed(0)} MiB of KVCache.liveBytesWarning: ` +
          `destroy() caches no longer needed, or write \`using cache = model.newCache()\` ` +
          `(warned once)`,
      );
    }
    return layers;
  }

  #grown(): number {
    return Math.ceil(this.#capacity * this.growthFactor);
  }
}

/** Rows `row0 ..` of every head of a [nHead, capacity, words] tensor (scales: 1 word). */
interface RowRange {
  t: Tensor;
  capacity: number;
  row0?: number;
}

// Rows are [head][pos][word]: one copy of `rows` rows per head, from one row range to another.
function copyRows(config: GPT2Config, from: RowRange, to: RowRange, rows: number): Copy[] {
  const { nHead } = config;
  if (rows === 0) return [];
  const words = from.t.shape[2] ?? 1;
  const shape = [rows, words];
  const at = (r: RowRange, h: number) => (h * r.capacity + (r.row0 ?? 0)) * words * 4;
  return Array.from({ length: nHead }, (_, h) => ({
    label: `copy cache rows, head ${h}`,
    from: { buffer: from.t.buffer, offset: at(from, h), shape },
    to: { buffer: to.t.buffer, offset: at(to, h), shape },
  }));
}
