/**
 * Running a {@link GPT2}: the model says what each pass computes; the runner lays the pass
 * over scratch activations, records its plan once per shape and cache, writes the token ids
 * and positions, submits, and reads back what was asked for. Greedy decoding chains its
 * steps on the GPU; a batched step runs B sequences' rows through one plan.
 *
 * A single-token step takes one of two paths: the general one (the model's plan, ~10
 * dispatches per block), or for models small enough the fused one (kernels/fused_decode.ts: one
 * dispatch runs every block, a second the lm_head). The runner picks by shape and adapter
 * ({@link chooseDecodePath}); {@link Runner.decodePath} says which and
 * {@link Runner.decodeReason} why, and {@link RunnerOptions.decode} overrides it (the commands
 * read `KVGPT_DECODE` into it: cli/env_options.ts). Chained steps ({@link Runner.decodeGreedy},
 * {@link Runner.decodeSample}) take the chosen path; a lone single-token forward takes the
 * fused one only where it was asked for (see {@link Runner.fusedForward}), and never when it
 * asks for hidden states, attention rows or a per-kernel profile. Both paths write the same
 * KV cache.
 *
 * @module
 */
import { greedyPick } from "../kernels/argmax.ts";
import { gpuSamples, type GpuSampling, samplePick } from "../kernels/sample.ts";
import {
  type BlockTensors,
  destroyPacked,
  destroyTexture,
  fillTexture,
  fusedDecodeHead,
  fusedDecodeLimit,
  fusedDecodeStep,
  headWorkgroups,
  packBlocks,
  type PackedBlocks,
  STATE_HEADER,
  STATE_RNG,
  type StepBuffers,
  type WeightTexture,
  weightTexture,
} from "../kernels/fused_decode.ts";
import type { Dispatch, Gpu, KernelTime, Plan, Tensor } from "../kernels/gpu.ts";
import type { WeightFormat } from "../kernels/matmul.ts";
import { GPT2, type ModelOptions } from "../model/gpt2.ts";
import type { KVCache, KVCacheOptions } from "../model/kv_cache.ts";
import { Rng } from "../base/rng.ts";
import { sampleToken, type SamplingOptions, validateSampling } from "./sampling.ts";
import { type ForwardOptions, type ShapeOptions, Workspace } from "./workspace.ts";

export type { ForwardOptions } from "./workspace.ts";

/**
 * How decode steps run: `general`, the model's plan of per-layer kernels; `fused`, one
 * dispatch for every block and one for the lm_head (models whose activations fit one
 * workgroup's memory).
 */
export type DecodePath = "general" | "fused";

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

/** How a model is put on the GPU ({@link ModelOptions}) and how its decode steps run. */
export interface RunnerOptions extends ModelOptions {
  /**
   * The decode path (see {@link DecodePath}); default: fused on a software adapter where the
   * model's shape allows it, else general ({@link chooseDecodePath}). "fused" for a model
   * that cannot take it is an error.
   */
  decode?: DecodePath;
  /**
   * What set `decode` when it is a standing preference for every model rather than this
   * model's demand (the commands' `KVGPT_DECODE=fused`): it names the reason, and "fused" for a
   * model that cannot take it falls back to general, saying why.
   */
  decodeSource?: string;
}

/** What {@link chooseDecodePath} decides from. */
export interface DecodeChoiceInput {
  /** The path asked for, if any. */
  asked?: DecodePath;
  /** A standing preference's name (see {@link RunnerOptions.decodeSource}); none: a demand. */
  source?: string;
  /** Why the model cannot take the fused step on this adapter, or null when it can. */
  fusedLimit: string | null;
  /** Whether the adapter runs WGSL on the CPU (Gpu.software). */
  software: boolean;
}

/** The decode path chosen, and why (one phrase). */
export interface DecodeChoice {
  path: DecodePath;
  reason: string;
  /** Whether a lone single-token forward takes the fused step too (asked for only). */
  fusedForward: boolean;
}

/**
 * The decode path for a model on an adapter. Asked for, it is taken (asking for "fused"
 * where it does not fit is an error). Else the fused step, where the model fits it, only on a
 * software adapter: there a dispatch costs 60-80 µs and one dispatch for the whole model wins;
 * on a real GPU it would run the model on one compute unit of dozens, so the general path's
 * many workgroups are chosen (no GPU has measured otherwise yet).
 */
export function chooseDecodePath(input: DecodeChoiceInput): DecodeChoice {
  const { asked, fusedLimit: limit } = input;
  if (asked !== undefined && asked !== "general" && asked !== "fused") {
    throw new RangeError(`decode must be "general" or "fused", got "${asked}"`);
  }
  const by = input.source ?? "asked for";
  if (asked === "fused" && limit) {
    if (!input.source) {
      throw new Error(`decode "fused": this model cannot take the fused step: ${limit}`);
    }
    return {
      path: "general",
      reason: `${by}, but the fused step does not fit: ${limit}`,
      fusedForward: false,
    };
  }
  if (asked) return { path: asked, reason: by, fusedForward: asked === "fused" };
  if (limit) {
    return {
      path: "general",
      reason: `the fused step does not fit: ${limit}`,
      fusedForward: false,
    };
  }
  if (!input.software) {
    return {
      path: "general",
      reason: "a GPU adapter: the fused step would run the model on one compute unit",
      fusedForward: false,
    };
  }
  return {
    path: "fused",
    reason: "a software adapter, and the model's activations fit one workgroup",
    fusedForward: false,
  };
}

/** The fused path's buffers for one model, made on first use. */
interface FusedBuffers extends StepBuffers {
  readonly packed: PackedBlocks;
  /** The lm_head as decode_head reads it, unless the step runs it (packed.lmHead). */
  readonly head: WeightTexture | null;
}

/** The fused path's dispatches for one version of one cache's buffers. */
interface FusedSteps {
  version: number;
  /** decode.step on the given token (state[2]). */
  first: Dispatch;
  /** decode.step on the best logit of the last step, and on that alone (a chain's end). */
  next: Dispatch;
  last: Dispatch;
  /** decode.step on a drawn token, per sampling settings. */
  sampled: Map<string, { next: Dispatch; last: Dispatch }>;
}

/** A plan recorded against one version of a cache's buffers. */
interface RecordedPlan {
  version: number;
  plan: Plan;
}

/** Workspaces kept at once (the shapes used last); older ones are freed. */
const WORKSPACES = 4;

/**
 * Runs one model's passes: its input buffers, workspaces and recorded plans. A runner owns
 * its model: freeing the runner frees the model's weights too.
 */
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
  /** The path chained decode steps take (see {@link DecodePath}, {@link Runner.fusedForward}). */
  readonly decodePath: DecodePath;
  /** Why: what chose the path, and what keeps a general model off the fused one. */
  readonly decodeReason: string;
  /**
   * Whether a lone single-token {@link Runner.forward} takes the fused step too: only where
   * the fused path was asked for ({@link RunnerOptions.decode}). Such a call waits for its logits
   * on the CPU anyway (~10 ms on llvmpipe), and the fused step's first compile takes seconds
   * there (once per machine: Mesa caches it on disk), so by default only chains use it.
   */
  readonly fusedForward: boolean;
  /** Why this model cannot take the fused step on this adapter, or null when it can. */
  readonly fusedLimit: string | null;
  #workspaces = new Map<string, { ws: Workspace; plans: WeakMap<KVCache, RecordedPlan> }>();
  #fused: FusedBuffers | null = null;
  /** The model's weightsVersion the packed weights were last filled from; -1: never. */
  #packedVersion = -1;
  #fusedSteps = new WeakMap<KVCache, FusedSteps>();

  /** The model's config (the same object as `model.config`). */
  readonly config: GPT2["config"];

  /**
   * A runner for `model`, which it then owns ({@link Runner.destroy} frees the model too).
   * Only `options.decode` is read here: the weights' format was chosen when the model was made.
   */
  constructor(readonly model: GPT2, options: RunnerOptions = {}) {
    this.config = model.config;
    const gpu = this.gpu = model.gpu;
    const P = model.config.nPositions;
    this.ids = gpu.tensor([P], "ids");
    this.start = gpu.tensor([8], "start"); // pos0, tokens chosen, -, -, the sampler's generator
    this.tokens = gpu.tensor([P], "tokens");
    this.positions = gpu.tensor([P], "positions");
    const limit = fusedDecodeLimit(gpu, model.config, model.weightFormat, model.wte, model.lmHead);
    this.fusedLimit = limit;
    const choice = chooseDecodePath({
      asked: options.decode,
      source: options.decodeSource,
      fusedLimit: limit,
      software: gpu.software,
    });
    this.decodePath = choice.path;
    this.decodeReason = choice.reason;
    this.fusedForward = choice.fusedForward;
  }

  /** Loads a HuggingFace checkpoint folder (config.json + *.safetensors) and runs it. */
  static async load(gpu: Gpu, dir: string, options: RunnerOptions = {}): Promise<Runner> {
    return new Runner(await GPT2.load(gpu, dir, options), options);
  }

  /** How the model's matrices are stored on the GPU. */
  get weightFormat(): WeightFormat {
    return this.model.weightFormat;
  }

  /** A new, empty KV cache for the model (preallocated unless `options` say "grow"). */
  newCache(options?: KVCacheOptions): KVCache {
    return this.model.newCache(options);
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
    checkIds(ids, this.model.config.vocabSize);
    // The fused step returns neither hidden states nor attention rows, and a profile asks for
    // the time of each kernel, which the per-layer kernels give: those take the general path.
    const general = options.hidden || options.attention || options.profile;
    if (ids.length === 1 && this.fusedForward && !general) {
      return this.#forwardFused(ids[0], cache);
    }
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
    if (this.decodePath === "fused") {
      if (n === 0) return []; // as the general path
      const { steps, io } = this.#prepareFused(cache, n);
      const head = this.#head(false);
      this.gpu.write(io.state, new Uint32Array([cache.length, 0, first]));
      this.#runFused([
        steps.first,
        ...head,
        ...Array.from({ length: n - 1 }, () => [steps.next, ...head]).flat(),
        steps.last,
      ]);
      cache.length += n;
      return [...(await this.#readState(n)).tokens];
    }
    const pick = (logits: Tensor) =>
      greedyPick(this.gpu, logits, vocabSize, this.ids, this.start, this.tokens);
    return (await this.#chainGeneral(first, cache, n, pick, null)).tokens;
  }

  /**
   * The general path's chain: `n` steps of [the forward pass of one token, `pick`], where the
   * pick (greedyPick or samplePick) writes the next token into this.ids and this.tokens and
   * advances this.start. Starts from `first` at position cache.length, with `rng`'s state in
   * start[4..8) for samplePick; one submission and one read. The cache grows by n.
   */
  async #chainGeneral(
    first: number,
    cache: KVCache,
    n: number,
    pick: (logits: Tensor) => Dispatch,
    rng: Rng | null,
  ): Promise<{ tokens: number[]; rng: Uint32Array }> {
    const { ws, plan } = this.#prepare(1, cache, n, { logits: "last" });
    const step = pick(ws.logits);
    const start = new Uint32Array(8);
    start.set([cache.length, 0]);
    if (rng) start.set(rng.state(), 4);
    this.gpu.write(this.ids, new Uint32Array([first]));
    this.gpu.write(this.start, start);
    this.gpu.run(Array.from({ length: n }, () => [...plan, step]).flat());
    cache.length += n;
    const view: Tensor = { buffer: this.tokens.buffer, offset: 0, shape: [n] };
    const [tokens, words] = await this.gpu.readU32s([view, this.start]);
    return { tokens: [...tokens], rng: words.slice(4, 8) };
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
   * Whether {@link Runner.decodeSample} chains its steps on the GPU with these settings: greedy,
   * or a draw the GPU sampler makes; else each step's logits come back to the CPU.
   */
  chainsOnGpu(sampling: SamplingOptions): boolean {
    return sampling.temperature === 0 || gpuSamples(sampling, this.model.config.vocabSize);
  }

  /**
   * Sampled decoding on the GPU: feeds `first` at position cache.length, then each token drawn
   * from the step's logits as run/sampling.ts's `sampleToken(logits, sampling, rng)` draws it
   * (at temperature 0 the argmax, as {@link Runner.decodeGreedy}, drawing nothing), `n`
   * steps in all with no CPU wait between them, on either decode path.
   * `rng` holds the generator's state: the draws continue from it, one per token, and it is
   * advanced past them. Returns the n drawn tokens, read back once. Where the GPU sampler
   * cannot (top-p over a vocabulary of more than 256 without top-k), each step's logits are
   * read back and drawn on the CPU from the same generator state: the same ids.
   * The cache grows by n, as with {@link Runner.decodeGreedy}.
   */
  async decodeSample(
    first: number,
    cache: KVCache,
    n: number,
    sampling: SamplingOptions,
    rng: Rng,
  ): Promise<number[]> {
    const { vocabSize } = this.model.config;
    checkIds([first], vocabSize);
    validateSampling(sampling);
    if (sampling.temperature === 0) return this.decodeGreedy(first, cache, n); // no draws
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`decodeSample: n is ${n}, not >= 0`);
    if (n === 0) return [];
    if (!this.chainsOnGpu(sampling)) {
      const out: number[] = [];
      for (let token = first; out.length < n;) {
        const { logits } = await this.forward([token], cache);
        out.push(token = sampleToken(logits, sampling, rng));
      }
      return out;
    }
    if (this.decodePath === "general") {
      const { ids, start, tokens } = this;
      const pick = (logits: Tensor) =>
        samplePick(this.gpu, logits, vocabSize, sampling, ids, start, tokens);
      const chained = await this.#chainGeneral(first, cache, n, pick, rng);
      rng.setState(chained.rng);
      return chained.tokens;
    }
    const { steps, io } = this.#prepareFused(cache, n);
    const key = `${sampling.temperature}|${sampling.topK}|${sampling.topP}`;
    let drawn = steps.sampled.get(key);
    if (!drawn) {
      const step = (blocks: boolean) => this.#step(cache, "sample", blocks, sampling);
      steps.sampled.set(key, drawn = { next: step(true), last: step(false) });
    }
    const head = this.#head(true);
    const state = new Uint32Array(STATE_HEADER);
    state.set([cache.length, 0, first]);
    state.set(rng.state(), STATE_RNG);
    this.gpu.write(io.state, state);
    this.#runFused([
      steps.first,
      ...head,
      ...Array.from({ length: n - 1 }, () => [drawn.next, ...head]).flat(),
      drawn.last,
    ]);
    cache.length += n;
    const read = await this.#readState(n);
    rng.setState(read.rng);
    return [...read.tokens];
  }

  /**
   * Finishes the weight upload and compiles every pipeline (prefill and decode shapes, and
   * the chained steps of its decode path, greedy and sampled), so that timings taken
   * afterwards measure the model, not one-time start-up.
   */
  async warmup(): Promise<void> {
    const cache = this.model.newCache();
    try {
      const T = Math.min(8, this.model.config.nPositions - 1);
      await this.forward(Array.from({ length: T }, () => 0), cache);
      await this.forward([0], cache);
      // The chained steps, greedy and sampled (on the fused path ~0.3 s each).
      cache.reset();
      await this.decodeGreedy(0, cache, 1);
      cache.reset();
      await this.decodeSample(0, cache, 1, { temperature: 1, topK: 0, topP: 1 }, new Rng(0));
    } finally {
      cache.destroy();
    }
  }

  /** Frees the runner's buffers and workspaces, and its model's weights. */
  destroy(): void {
    this.#freeScratch();
    this.model.destroy();
  }

  /** `using runner = …` frees it (and its model) at the end of the scope. */
  [Symbol.dispose](): void {
    this.destroy();
  }

  // The runner's own buffers: inputs, the fused path's buffers, the workspaces.
  #freeScratch(): void {
    for (const t of [this.ids, this.start, this.tokens, this.positions]) this.gpu.destroy(t);
    if (this.#fused) {
      const f = this.#fused;
      for (const t of [f.state, f.hidden, f.best, f.logits]) this.gpu.destroy(t);
      destroyPacked(this.gpu, f.packed);
      if (f.head) destroyTexture(this.gpu, f.head);
      this.#fused = null;
      this.#packedVersion = -1;
    }
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

  /** One fused step on `id` at position cache.length, its logits read back. */
  async #forwardFused(id: number, cache: KVCache): Promise<ForwardOutput> {
    const { steps, io } = this.#prepareFused(cache, 1);
    this.gpu.write(io.state, new Uint32Array([cache.length, 0, id]));
    this.#runFused([steps.first, ...this.#head(true)]);
    cache.length += 1;
    return { logits: (await this.gpu.read1(io.logits)).slice(0, this.model.config.vocabSize) };
  }

  /**
   * Runs fused steps, first refreshing the packed weights from the model's tensors if these
   * changed since (see {@link GPT2.weightsVersion}).
   */
  #runFused(plan: Plan): void {
    const { packed, head } = this.#fusedBuffers();
    if (this.#packedVersion !== this.model.weightsVersion) {
      this.gpu.run([...packed.copies]);
      fillTexture(this.gpu, packed.matrices);
      if (head) fillTexture(this.gpu, head);
      this.#packedVersion = this.model.weightsVersion;
    }
    this.gpu.run(plan);
  }

  /** The fused path's buffers, made on first use. */
  #fusedBuffers(): FusedBuffers {
    if (this.#fused) return this.#fused;
    const { gpu, model } = this;
    const { config } = model;
    const blocks: BlockTensors[] = model.blocks.map((b) => ({
      ln1: b.ln1,
      cAttn: b.attn.cAttn,
      cProj: b.attn.cProj,
      ln2: b.ln2,
      cFc: b.mlp.cFc,
      mlpProj: b.mlp.cProj,
    }));
    const align = gpu.bindingAlignment / 4;
    const packed = packBlocks(gpu, config, blocks, model.lnF, model.lmHead, model.weightFormat);
    const { lmHead } = model;
    return this.#fused = {
      packed,
      head: packed.lmHead
        ? null
        : weightTexture(gpu, lmHead.parts[0].tensor, lmHead.format, "decode lm_head"),
      state: gpu.tensor([STATE_HEADER + config.nPositions], "decode state"),
      wte: model.wte,
      wpe: model.wpe,
      hidden: gpu.tensor([config.nEmbd], "decode hidden"),
      best: gpu.tensor([headWorkgroups(gpu, config.vocabSize), 2], "decode best"),
      logits: gpu.tensor([1, Math.ceil(config.vocabSize / align) * align], "decode logits"),
    };
  }

  /**
   * Checks that `steps` tokens fit after the cache's, grows the cache if it lacks room, and
   * records (or reuses) the fused steps for this cache's buffers.
   */
  #prepareFused(cache: KVCache, steps: number): { steps: FusedSteps; io: FusedBuffers } {
    const { nPositions } = this.model.config;
    if (!Number.isInteger(steps) || steps < 1) throw new Error(`decode: ${steps} steps asked`);
    if (cache.length + steps > nPositions) {
      throw new Error(
        `forward: ${cache.length} cached + ${steps} new tokens exceed the context (n_positions ` +
          `${nPositions})`,
      );
    }
    if (cache.config !== this.model.config) throw new Error("decode: the cache is another model's");
    cache.reserve(cache.length + steps);
    const io = this.#fusedBuffers();
    let recorded = this.#fusedSteps.get(cache);
    if (recorded?.version !== cache.version) {
      recorded = {
        version: cache.version,
        first: this.#step(cache, "input", true),
        next: this.#step(cache, "best", true),
        last: this.#step(cache, "best", false),
        sampled: new Map(),
      };
      this.#fusedSteps.set(cache, recorded);
    }
    return { steps: recorded, io };
  }

  #step(cache: KVCache, source: "input" | "best" | "sample", blocks: boolean, s?: GpuSampling) {
    const io = this.#fusedBuffers();
    const { config } = this.model;
    return fusedDecodeStep(this.gpu, config, io.packed, io, cache.layers, {
      source,
      blocks,
      sampling: s,
    });
  }

  /** The wide lm_head dispatch after a step, unless the step runs the lm_head itself. */
  #head(writeLogits: boolean): Dispatch[] {
    const io = this.#fusedBuffers();
    if (io.packed.lmHead) return [];
    const { lmHead } = this.model;
    return [
      fusedDecodeHead(this.gpu, io.hidden, lmHead, io.head!, io.logits, io.best, writeLogits),
    ];
  }

  /** The first n tokens chosen and the sampler's state, from the fused path's state. */
  async #readState(n: number): Promise<{ tokens: Uint32Array; rng: Uint32Array }> {
    const view: Tensor = { ...this.#fusedBuffers().state, shape: [STATE_HEADER + n] };
    const words = await this.gpu.readU32(view);
    return { tokens: words.slice(STATE_HEADER), rng: words.slice(STATE_RNG, STATE_RNG + 4) };
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
