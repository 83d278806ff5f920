/**
 * Running a {@link GPT2}: the model says what each pass computes; the runner lays the pass
 * over scratch activations, records its plan once per shape and cache, writes the token ids
 * and positions, submits, and reads back what was asked for. Greedy decoding chains its
 * steps on the GPU; a batched step runs B sequences' rows through one plan.
 *
 * @module
 */
import { argmax } from "../kernels/argmax.ts";
import type { Gpu, KernelTime, Plan, Tensor } from "../kernels/gpu.ts";
import type { WeightFormat } from "../kernels/matmul.ts";
import type { GPT2 } from "../model/gpt2.ts";
import type { KVCache } from "../model/kv_cache.ts";
import { type ForwardOptions, type ShapeOptions, Workspace } from "./workspace.ts";

export type { ForwardOptions } from "./workspace.ts";

/** What one forward pass returns. */
export interface ForwardOutput {
  /** Logits [rows, vocabSize]: rows = T with `logits: "all"`, else 1 (the last position). */
  logits: Float32Array;
  /** With `hidden`: [nLayer + 2, T, C]: embeddings, each block's output, ln_f's output. */
  hidden?: Float32Array;
  /** With `attention`: per layer [nHead, T, nPositions] softmax rows (keys past pos0+t are 0). */
  attention?: Float32Array[];
  /** With `profile`: the GPU time of every kernel, in plan order. */
  profile?: KernelTime[];
}

/** How a model is put on the GPU. */
export interface ModelOptions {
  /**
   * Storage of the matrices (every Linear, wte and lm_head): "f32" (default, HF parity) or
   * "f16", half the bytes per decode step with each weight rounded to f16. LayerNorms,
   * biases and wpe stay f32.
   */
  weights?: WeightFormat;
}

/** A plan recorded against one version of a cache's buffers. */
interface RecordedPlan {
  version: number;
  plan: Plan;
}

/** Workspaces kept at once (the shapes used last); older ones are freed. */
const WORKSPACES = 4;

/** Runs one model's passes: its input buffers, workspaces and recorded plans. */
export class Runner {
  readonly gpu: Gpu;
  /** Token ids of the current pass, [nPositions] u32. */
  readonly ids: Tensor;
  /** Where this pass starts in the cache, and tokens chosen on the GPU: [pos0, n] u32. */
  readonly start: Tensor;
  /** Tokens chosen by greedy decoding on the GPU, [nPositions] u32. */
  readonly tokens: Tensor;
  /** Each row's position in a batched decode step, [nPositions] u32. */
  readonly positions: Tensor;
  #workspaces = new Map<string, { ws: Workspace; plans: WeakMap<KVCache, RecordedPlan> }>();

  constructor(readonly model: GPT2) {
    const gpu = this.gpu = model.gpu;
    const P = model.config.nPositions;
    this.ids = gpu.tensor([P], "ids");
    this.start = gpu.tensor([4], "start");
    this.tokens = gpu.tensor([P], "tokens");
    this.positions = gpu.tensor([P], "positions");
  }

  /** See {@link GPT2.forward}. */
  async forward(
    ids: readonly number[],
    cache: KVCache,
    options: ForwardOptions = {},
  ): Promise<ForwardOutput> {
    checkIds(ids, this.model.config.vocabSize);
    const { ws, plan } = this.#prepare(ids.length, cache, ids.length, options);
    this.gpu.write(this.ids, new Uint32Array(ids));
    this.gpu.write(this.start, new Uint32Array([cache.length]));
    this.gpu.run(plan, { profile: options.profile });
    cache.length += ids.length;
    const capacity = cache.capacity; // rows of the softmax rows just written
    const { vocabSize: V, nPositions } = this.model.config;
    const want = [ws.logits, ...(ws.hidden ? [ws.hidden] : [])];
    if (ws.options.attention) want.push(...ws.probs);
    const [logits, ...rest] = await this.gpu.read(want);
    const rows = logits.length / ws.logits.shape[1];
    const out: ForwardOutput = { logits: stripColumns(logits, rows, ws.logits.shape[1], V) };
    if (ws.hidden) out.hidden = rest.shift();
    if (ws.options.attention) out.attention = rest.map((p) => widenRows(p, capacity, nPositions));
    if (options.profile) out.profile = await this.gpu.readProfile();
    return out;
  }

  /**
   * Greedy decoding with the argmax on the GPU: feeds `first` at position cache.length, then
   * each token it chooses, `n` decode steps in all, with no CPU wait between steps. Returns
   * the n chosen tokens, read back once; the cache grows by n (`first` and every chosen
   * token but the last).
   */
  async decodeGreedy(first: number, cache: KVCache, n: number): Promise<number[]> {
    const { vocabSize } = this.model.config;
    checkIds([first], vocabSize);
    const { ws, plan } = this.#prepare(1, cache, n, { logits: "last" });
    const pick = argmax(this.gpu, ws.logits, vocabSize, this.ids, this.start, this.tokens);
    this.gpu.write(this.ids, new Uint32Array([first]));
    this.gpu.write(this.start, new Uint32Array([cache.length, 0]));
    this.gpu.run(Array.from({ length: n }, () => [...plan, pick]).flat());
    cache.length += n;
    const view: Tensor = { buffer: this.tokens.buffer, offset: 0, shape: [n] };
    return [...(await this.gpu.readU32(view))];
  }

  /**
   * One decode step for B sequences at once: `ids[b]` is fed to `caches[b]` at its own
   * position cache.length, and every matrix product reads its weights once for all B rows.
   * Sequences may have any lengths (each attends over its own cache: nothing is padded).
   * Returns each sequence's next-token logits, [vocabSize] each.
   */
  async forwardBatch(ids: readonly number[], caches: readonly KVCache[]): Promise<Float32Array[]> {
    const B = ids.length;
    const { config } = this.model;
    const { nPositions, vocabSize } = config;
    if (B < 1 || caches.length !== B || new Set(caches).size !== B || B > nPositions) {
      throw new Error(`forwardBatch: ${B} ids need as many distinct caches, not ${caches.length}`);
    }
    checkIds(ids, vocabSize);
    caches.forEach((c, b) => {
      if (c.config !== config) throw new Error(`forwardBatch: cache ${b} is another model's`);
      if (c.length + 1 > nPositions) throw new Error(`forwardBatch: cache ${b} is full`);
      c.reserve(c.length + 1);
    });
    const starts = caches.map((c) => {
      this.gpu.write(c.start, new Uint32Array([c.length]));
      return c.start;
    });
    const { ws } = this.#workspace(B, { logits: "all", hidden: false, attention: false });
    this.gpu.write(this.ids, new Uint32Array(ids));
    this.gpu.write(this.positions, new Uint32Array(caches.map((c) => c.length)));
    this.gpu.run(this.model.record(ws.pass(this, caches, starts)));
    for (const c of caches) c.length++;
    const logits = await this.gpu.read1(ws.logits);
    const ld = ws.logits.shape[1];
    return caches.map((_, b) => logits.slice(b * ld, b * ld + vocabSize));
  }

  /**
   * Finishes the weight upload and compiles every pipeline (prefill and decode shapes), so
   * that timings taken afterwards measure the model, not one-time start-up.
   */
  async warmup(): Promise<void> {
    const cache = this.model.newCache();
    try {
      const T = Math.min(8, this.model.config.nPositions - 1);
      await this.forward(Array.from({ length: T }, () => 0), cache);
      await this.forward([0], cache);
    } finally {
      cache.destroy();
    }
  }

  /** Frees the runner's buffers and workspaces. */
  destroy(): void {
    for (const t of [this.ids, this.start, this.tokens, this.positions]) this.gpu.destroy(t);
    for (const { ws } of this.#workspaces.values()) ws.destroy();
    this.#workspaces.clear();
  }

  /**
   * Checks that `steps` tokens fit after the cache's, grows the cache if it lacks room, and
   * records (or reuses) the plan of a T-token forward for this cache's buffers.
   */
  #prepare(T: number, cache: KVCache, steps: number, options: ForwardOptions) {
    const { nPositions } = this.model.config;
    if (T < 1) throw new Error("forward: no tokens given");
    if (cache.length + steps > nPositions) {
      throw new Error(
        `forward: ${cache.length} cached + ${steps} new tokens exceed the context (n_positions ` +
          `${nPositions})`,
      );
    }
    const opts: ShapeOptions = {
      logits: options.logits ?? "last",
      hidden: options.hidden ?? false,
      attention: options.attention ?? false,
    };
    cache.reserve(cache.length + steps);
    const entry = this.#workspace(T, opts);
    let recorded = entry.plans.get(cache);
    if (recorded?.version !== cache.version) {
      const plan = this.model.record(entry.ws.pass(this, [cache], [this.start]));
      recorded = { version: cache.version, plan };
      entry.plans.set(cache, recorded);
    }
    return { ws: entry.ws, plan: recorded.plan };
  }

  // Keeps the workspaces of the last few shapes; older ones are freed.
  #workspace(T: number, opts: ShapeOptions) {
    const key = `${T}|${opts.logits}|${opts.hidden}|${opts.attention}`;
    let entry = this.#workspaces.get(key);
    if (entry) {
      this.#workspaces.delete(key); // re-insert as the most recent
    } else {
      entry = { ws: new Workspace(this.gpu, this.model.config, T, opts), plans: new WeakMap() };
      while (this.#workspaces.size >= WORKSPACES) {
        const [oldest, old] = this.#workspaces.entries().next().value!;
        old.ws.destroy();
        this.#workspaces.delete(oldest);
      }
    }
    this.#workspaces.set(key, entry);
    return entry;
  }
}

// The first rows·ld values as [rows, ld] -> [rows, n] with zeros after column ld, where
// rows = a.length / n: softmax rows of a cache smaller than the context, padded to it.
function widenRows(a: Float32Array, ld: number, n: number): Float32Array {
  if (ld === n) return a;
  const rows = a.length / n;
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) out.set(a.subarray(r * ld, r * ld + ld), r * n);
  return out;
}

/** Throws unless every id is a token of the vocabulary. */
function checkIds(ids: readonly number[], vocabSize: number): void {
  ids.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new Error(`forward: token id ${id} at position ${i} is outside 0..${vocabSize - 1}`);
    }
  });
}

// [rows, ld] -> [rows, n]
function stripColumns(a: Float32Array, rows: number, ld: number, n: number): Float32Array {
  if (ld === n) return a;
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) out.set(a.subarray(r * ld, r * ld + n), r * n);
  return out;
}
