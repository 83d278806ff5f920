/**
 * GPT-2, top to bottom as in the diagram: token + position embeddings, n_layer blocks of
 * (LayerNorm → causal self-attention → residual, LayerNorm → MLP → residual), a final
 * LayerNorm and the lm_head tied to the token embedding. Every number comes from a WGSL
 * kernel; each module's `forward` records its kernels into a plan that runs on the GPU.
 *
 * @module
 */
import { argmax } from "../kernels/argmax.ts";
import { attend, type QueryRows, storeKv } from "../kernels/attention.ts";
import { embedding } from "../kernels/embedding.ts";
import type { Gpu, KernelTime, Plan, Tensor } from "../kernels/gpu.ts";
import { layerNorm } from "../kernels/layernorm.ts";
import {
  type Epilogue,
  matmul,
  matmulTransposed,
  type RowChunks,
  transpose,
  uploadRowChunks,
  uploadWeight,
  type Weight,
  type WeightFormat,
} from "../kernels/matmul.ts";
import type { GPT2Config } from "./config.ts";
import { KVCache, type KVCacheOptions, type LayerCache } from "./kv_cache.ts";
import {
  type BlockWeights,
  type GPT2Weights,
  type LayerNormWeights,
  type Linear as LinearWeights,
  loadCheckpoint,
} from "./weights.ts";
import { type ForwardOptions, type ShapeOptions, Workspace } from "../run/workspace.ts";

export type { ForwardOptions } from "../run/workspace.ts";

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

/** torch.nn.LayerNorm over n_embd. */
class LayerNorm {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(readonly gpu: Gpu, w: LayerNormWeights, readonly eps: number, name: string) {
    this.weight = gpu.upload(w.weight, [w.weight.length], `${name}.weight`);
    this.bias = gpu.upload(w.bias, [w.bias.length], `${name}.bias`);
  }

  // x: [T, C] -> y: [T, C]
  forward(x: Tensor, y: Tensor): Plan {
    return [layerNorm(this.gpu, x, this.weight, this.bias, y, this.eps)];
  }
}

/** HF Conv1D: y = x @ W + b; W arrives [in, out] and is kept transposed, [out, in]. */
class Linear {
  readonly weight: Weight;
  readonly bias: Tensor;
  constructor(readonly gpu: Gpu, w: LinearWeights, name: string, format: WeightFormat) {
    const { inFeatures: n, outFeatures: m } = w;
    this.weight = uploadWeight(gpu, transpose(w.weight, n, m), m, n, `${name}.weight`, format);
    this.bias = gpu.upload(w.bias, [m], `${name}.bias`);
  }

  // x: [T, in] -> y: [T, out]; `then` gelu: y = gelu(x @ W + b); add: y += x @ W + b
  forward(x: Tensor, y: Tensor, then: Epilogue = "none"): Plan {
    return [matmul(this.gpu, x, this.weight, this.bias, y, then)];
  }
}

/**
 * The rows of the workspace one sequence's tokens take in a layer, with that sequence's
 * layer cache, its [pos0] buffer and a [nHead, T, capacity] buffer for its softmax rows.
 * A forward is one sequence of T rows; a batched decode step is B sequences of one row.
 */
interface SequenceRows {
  cache: LayerCache;
  step: Tensor;
  probs: Tensor;
  rows: QueryRows;
}

/** Multi-head causal self-attention that appends to and reads from the KV cache. */
class CausalSelfAttention {
  readonly cAttn: Linear;
  readonly cProj: Linear;
  constructor(readonly gpu: Gpu, w: BlockWeights["attn"], name: string, f: WeightFormat) {
    this.cAttn = new Linear(gpu, w.cAttn, `${name}.c_attn`, f);
    this.cProj = new Linear(gpu, w.cProj, `${name}.c_proj`, f);
  }

  // x: [T, C] -> out += attn(x): [T, C]; each sequence's K/V go to its cache rows pos0 ..
  forward(x: Tensor, out: Tensor, s: Workspace, seqs: SequenceRows[]): Plan {
    const { gpu } = this;
    return [
      ...this.cAttn.forward(x, s.qkv), // qkv: [T, 3C]
      ...seqs.flatMap(({ cache: c, step, probs, rows }) => [
        storeKv(gpu, step, s.qkv, c.k, c.v, c.scales, rows), // cache: [nHead, P, words]
        ...attend(gpu, step, s.qkv, c.k, c.v, s.att, probs, s.options.attention, c.scales, rows),
      ]), // att: [T, C]
      ...this.cProj.forward(s.att, out, "add"),
    ];
  }
}

/** The feed-forward network: c_fc → gelu_new → c_proj. */
class MLP {
  readonly cFc: Linear;
  readonly cProj: Linear;
  constructor(readonly gpu: Gpu, w: BlockWeights["mlp"], name: string, f: WeightFormat) {
    this.cFc = new Linear(gpu, w.cFc, `${name}.c_fc`, f);
    this.cProj = new Linear(gpu, w.cProj, `${name}.c_proj`, f);
  }

  // x: [T, C] -> out += mlp(x): [T, C], through fc = gelu(x @ W_fc + b): [T, nInner]
  forward(x: Tensor, out: Tensor, s: Workspace): Plan {
    return [...this.cFc.forward(x, s.fc, "gelu"), ...this.cProj.forward(s.fc, out, "add")];
  }
}

/** One transformer block (pre-LayerNorm). */
class Block {
  readonly ln1: LayerNorm;
  readonly attn: CausalSelfAttention;
  readonly ln2: LayerNorm;
  readonly mlp: MLP;
  constructor(readonly gpu: Gpu, w: BlockWeights, eps: number, name: string, f: WeightFormat) {
    this.ln1 = new LayerNorm(gpu, w.ln1, eps, `${name}.ln_1`);
    this.attn = new CausalSelfAttention(gpu, w.attn, `${name}.attn`, f);
    this.ln2 = new LayerNorm(gpu, w.ln2, eps, `${name}.ln_2`);
    this.mlp = new MLP(gpu, w.mlp, `${name}.mlp`, f);
  }

  // s.x: [T, C] -> s.x: [T, C], in place
  forward(s: Workspace, seqs: SequenceRows[]): Plan {
    return [
      ...this.ln1.forward(s.x, s.ln),
      ...this.attn.forward(s.ln, s.x, s, seqs), // x = x + attn(ln_1(x))
      ...this.ln2.forward(s.x, s.ln),
      ...this.mlp.forward(s.ln, s.x, s), // x = x + mlp(ln_2(x))
    ];
  }
}

/** GPT-2 language model whose every kernel runs on the GPU. */
export class GPT2 {
  readonly wte: RowChunks; // [vocab, C], in chunks that fit a binding
  readonly wpe: Tensor; //    [nPositions, C]
  readonly blocks: Block[];
  readonly lnF: LayerNorm;
  readonly lmHead: RowChunks; // wte itself unless the checkpoint has its own lm_head
  /** Token ids of the current forward, [nPositions] u32. */
  readonly ids: Tensor;
  /** Where this step starts in the cache, and tokens chosen on the GPU: [pos0, n] u32. */
  readonly step: Tensor;
  /** Tokens chosen by greedy decoding on the GPU, [nPositions] u32. */
  readonly tokens: Tensor;
  /** Each row's position in a batched decode step, [nPositions] u32. */
  readonly positions: Tensor;
  #workspaces = new Map<string, { ws: Workspace; plans: WeakMap<KVCache, RecordedPlan> }>();

  /** How the matrices are stored on the GPU. */
  readonly weightFormat: WeightFormat;

  constructor(
    readonly gpu: Gpu,
    readonly config: GPT2Config,
    w: GPT2Weights,
    options: ModelOptions = {},
  ) {
    const { vocabSize: V, nEmbd: C, nPositions: P, layerNormEpsilon: eps } = config;
    const f = this.weightFormat = options.weights ?? "f32";
    this.wte = uploadRowChunks(gpu, w.wte, V, C, "wte", gpu.maxBinding, f);
    this.wpe = gpu.upload(w.wpe, [P, C], "wpe");
    this.blocks = w.blocks.map((b, i) => new Block(gpu, b, eps, `h.${i}`, f));
    this.lnF = new LayerNorm(gpu, w.lnF, eps, "ln_f");
    this.lmHead = w.lmHead
      ? uploadRowChunks(gpu, w.lmHead, V, C, "lm_head", gpu.maxBinding, f)
      : this.wte;
    this.ids = gpu.tensor([P], "ids");
    this.step = gpu.tensor([4], "step");
    this.tokens = gpu.tensor([P], "tokens");
    this.positions = gpu.tensor([P], "positions");
  }

  /** Loads a HuggingFace checkpoint folder (config.json + *.safetensors) onto the GPU. */
  static async load(gpu: Gpu, dir: string, options: ModelOptions = {}): Promise<GPT2> {
    const { config, weights } = await loadCheckpoint(dir);
    return new GPT2(gpu, config, weights, options);
  }

  /**
   * Finishes the weight upload and compiles every pipeline (prefill and decode shapes), so
   * that timings taken afterwards measure the model, not one-time start-up.
   */
  async warmup(): Promise<void> {
    const cache = this.newCache();
    try {
      await this.forward(
        Array.from({ length: Math.min(8, this.config.nPositions - 1) }, () => 0),
        cache,
      );
      await this.forward([0], cache);
    } finally {
      cache.destroy();
    }
  }

  /** Frees the model's GPU buffers: weights and scratch (caches are freed on their own). */
  destroy(): void {
    const linears = this.blocks.flatMap((
      b,
    ) => [b.attn.cAttn, b.attn.cProj, b.mlp.cFc, b.mlp.cProj]);
    const norms = [...this.blocks.flatMap((b) => [b.ln1, b.ln2]), this.lnF];
    const tensors = [
      this.wpe,
      this.ids,
      this.step,
      this.tokens,
      this.positions,
      ...this.wte.parts.map((p) => p.tensor),
      ...(this.lmHead === this.wte ? [] : this.lmHead.parts.map((p) => p.tensor)),
      ...linears.flatMap((m) => [m.weight.tensor, m.bias]),
      ...norms.flatMap((m) => [m.weight, m.bias]),
    ];
    for (const t of tensors) this.gpu.destroy(t);
    for (const { ws } of this.#workspaces.values()) ws.destroy();
    this.#workspaces.clear();
  }

  /** A new, empty KV cache for this model (preallocated unless `options` say "grow"). */
  newCache(options?: KVCacheOptions): KVCache {
    return new KVCache(this.gpu, this.config, options);
  }

  /**
   * Records the whole forward pass for one workspace: one sequence (`caches` of one, its T
   * tokens at pos0 from `step`), or B sequences of one token each, row b at the position
   * `positions[b]` in `caches[b]`.
   */
  #record(s: Workspace, caches: KVCache[], steps: Tensor[], positions?: Tensor): Plan {
    const { gpu } = this;
    const { nHead } = this.config;
    const seqs = (i: number): SequenceRows[] =>
      caches.map((cache, b) => ({
        cache: cache.layers[i],
        step: steps[b],
        rows: caches.length === 1 ? { row0: 0, T: s.T } : { row0: b, T: 1 },
        // One sequence: its own rows; a batch: one row each, in a scratch used in turn.
        probs: caches.length === 1 ? s.probsFor(i, cache.capacity) : {
          ...s.probs[0],
          shape: [nHead, 1, cache.capacity],
        },
      }));
    const save = (i: number, t: Tensor): Plan =>
      s.hidden ? [{ label: `hidden ${i}`, from: t, to: s.hiddenAt(i) }] : [];
    const L = this.blocks.length;
    const lastRow = s.options.logits === "all" ? 0 : s.T - 1;
    return [
      ...embedding(gpu, this.ids, this.step, this.wte, this.wpe, s.x, positions), // x: [T, C]
      ...save(0, s.x),
      ...this.blocks.flatMap((block, i) => [
        ...block.forward(s, seqs(i)),
        ...save(i + 1, s.x),
      ]),
      ...this.lnF.forward(s.x, s.ln),
      ...save(L + 1, s.ln),
      ...matmulTransposed(gpu, s.ln, lastRow, this.lmHead, s.logits), // logits: [rows, V]
    ];
  }

  /**
   * Runs T tokens through the model at positions cache.length .. cache.length+T-1, appending
   * their K/V to the cache: a prefill when T > 1, a decode step when T = 1. An empty cache
   * makes this the plain (no-cache) forward over `ids`.
   */
  async forward(
    ids: readonly number[],
    cache: KVCache,
    options: ForwardOptions = {},
  ): Promise<ForwardOutput> {
    const s = this.#submit(ids, cache, options);
    const capacity = cache.capacity; // rows of the softmax rows just written
    const { vocabSize: V, nPositions } = this.config;
    const want = [s.logits, ...(s.hidden ? [s.hidden] : [])];
    if (s.options.attention) want.push(...s.probs);
    const [logits, ...rest] = await this.gpu.read(want);
    const rows = logits.length / s.logits.shape[1];
    const out: ForwardOutput = { logits: stripColumns(logits, rows, s.logits.shape[1], V) };
    if (s.hidden) out.hidden = rest.shift();
    if (s.options.attention) out.attention = rest.map((p) => widenRows(p, capacity, nPositions));
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
    checkIds([first], this.config.vocabSize);
    const { ws, plan } = this.#prepare(1, cache, n, { logits: "last" });
    const pick = argmax(
      this.gpu,
      ws.logits,
      this.config.vocabSize,
      this.ids,
      this.step,
      this.tokens,
    );
    this.gpu.write(this.ids, new Uint32Array([first]));
    this.gpu.write(this.step, new Uint32Array([cache.length, 0]));
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
    const { nPositions, vocabSize } = this.config;
    if (B < 1 || caches.length !== B || new Set(caches).size !== B || B > nPositions) {
      throw new Error(`forwardBatch: ${B} ids need as many distinct caches, not ${caches.length}`);
    }
    checkIds(ids, vocabSize);
    caches.forEach((c, b) => {
      if (c.config !== this.config) throw new Error(`forwardBatch: cache ${b} is another model's`);
      if (c.length + 1 > nPositions) throw new Error(`forwardBatch: cache ${b} is full`);
      c.reserve(c.length + 1);
    });
    const steps = caches.map((c) => {
      this.gpu.write(c.position, new Uint32Array([c.length]));
      return c.position;
    });
    const opts: ShapeOptions = { logits: "all", hidden: false, attention: false };
    const { ws } = this.#workspace(B, opts);
    this.gpu.write(this.ids, new Uint32Array(ids));
    this.gpu.write(this.positions, new Uint32Array(caches.map((c) => c.length)));
    this.gpu.run(this.#record(ws, [...caches], steps, this.positions));
    for (const c of caches) c.length++;
    const logits = await this.gpu.read1(ws.logits);
    const ld = ws.logits.shape[1];
    return caches.map((_, b) => logits.slice(b * ld, b * ld + vocabSize));
  }

  /** Writes ids and pos0 and submits the plan for T = ids.length tokens. */
  #submit(ids: readonly number[], cache: KVCache, options: ForwardOptions): Workspace {
    checkIds(ids, this.config.vocabSize);
    const { ws, plan } = this.#prepare(ids.length, cache, ids.length, options);
    this.gpu.write(this.ids, new Uint32Array(ids));
    this.gpu.write(this.step, new Uint32Array([cache.length]));
    this.gpu.run(plan, { profile: options.profile });
    cache.length += ids.length;
    return ws;
  }

  /**
   * Checks that `steps` tokens fit after the cache's, grows the cache if it lacks room, and
   * records (or reuses) the plan of a T-token forward for this cache's buffers.
   */
  #prepare(T: number, cache: KVCache, steps: number, options: ForwardOptions) {
    const { nPositions } = this.config;
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
      recorded = { version: cache.version, plan: this.#record(entry.ws, [cache], [this.step]) };
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
      entry = {
        ws: new Workspace(this.gpu, this.config, T, opts, this.step),
        plans: new WeakMap(),
      };
      while (this.#workspaces.size >= 4) {
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
