/**
 * Autoregressive generation: prefill the prompt into the KV cache, then decode one token at
 * a time, each step feeding only the newest token. With `useCache: false` every step
 * recomputes the whole sequence instead: the baseline the cache is measured against.
 *
 * @module
 */
import type { Runner } from "./runner.ts";
import type { KVCache } from "../model/kv_cache.ts";
import { Rng } from "../base/rng.ts";
import { sampleToken, type SamplingOptions, validateSampling } from "./sampling.ts";
import { checkWindow, slideWindow, type SlidingWindow, type WindowMode } from "./sliding_window.ts";

/** How to generate. */
export interface GenerateOptions extends SamplingOptions {
  /** Most new tokens to produce. */
  maxTokens: number;
  /** Seed of the sampling PRNG: the same seed gives the same text. */
  seed: number;
  /** Decode through the KV cache (true) or recompute the whole sequence each step (false). */
  useCache: boolean;
  /** Stop after the end-of-text token. */
  stopAtEos: boolean;
  /** Token ids prefilled before the prompt and kept at the front of the cache. */
  systemIds?: readonly number[];
  /**
   * A cache already holding the K/V of `systemIds` (see {@link prefillPrefix}): they are
   * copied from it instead of prefilled, so many requests pay for the prefix once.
   */
  prefix?: KVCache;
  /** Called with each new token as soon as it is chosen (greedy on the GPU: per batch). */
  onToken?: (id: number) => void;
  /**
   * Generate past the context with a sliding window (run/sliding_window.ts): when the
   * sequence would not fit, keep its first `sinks` tokens and its last `recent` ones and go
   * on. Without a window, generation stops at the context (`stop: "context"`).
   */
  window?: SlidingWindow;
  /**
   * What a slide does to the cache. `sinks` (the default; StreamingLLM): the kept rows stay
   * cached, with the K/V computed at their old positions (GPT-2's position embeddings are
   * absolute: a new token gets the position of the row it fills); needs the cache.
   * `recompute`: the kept tokens are prefilled again at positions 0.., as chat does and as
   * nanoGPT's `sample.py` crops its input to the context.
   */
  windowMode?: WindowMode;
  /**
   * With the cache, pick tokens on the GPU and chain the steps with no CPU wait between them
   * (default true: the same ids as picking on the CPU); false reads every step's logits back.
   */
  chainOnGpu?: boolean;
}

/** What a generation produced and what it cost. */
export interface GenerateResult {
  /** The new token ids. */
  ids: number[];
  systemTokens: number;
  promptTokens: number;
  /** Time to prefill the system prompt (0 without one), ms. */
  systemPrefillMs: number;
  /** Time from the prompt to its next-token logits, ms. */
  prefillMs: number;
  /** Decode steps run after the prefill (new tokens that needed a forward). */
  decodeSteps: number;
  decodeMs: number;
  /** Why generation stopped. */
  stop: "max-tokens" | "eos" | "context";
  /** With a window: tokens dropped from the sequence to make room, all slides together. */
  evictedTokens: number;
  /** Each time the window slid, in order: what it dropped, what it prefilled again, its time. */
  slides: SlideCost[];
  /** Cache bytes holding tokens at the end, and bytes allocated. */
  cacheBytesUsed: number;
  cacheBytesAllocated: number;
}

/** What one slide of the window cost. */
export interface SlideCost {
  /** Tokens dropped from the middle of the sequence. */
  dropped: number;
  /** Tokens prefilled again (recompute through the cache; 0 otherwise). */
  refilled: number;
  /** Time of the slide: the eviction, or the prefill of the kept tokens, ms. */
  ms: number;
}

/** Greedy decoding of up to `maxTokens` tokens through the cache: the argmax at every step. */
export function greedyOptions(maxTokens: number): GenerateOptions {
  return { maxTokens, temperature: 0, topK: 0, topP: 1, seed: 0, useCache: true, stopAtEos: false };
}

/** Checks generation options, naming the bad one. */
export function validateGenerate(opts: GenerateOptions): void {
  validateSampling(opts);
  if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 1) {
    throw new RangeError(`maxTokens must be a positive integer, got ${opts.maxTokens}`);
  }
  if (!Number.isSafeInteger(opts.seed)) {
    throw new RangeError(`seed must be an integer, got ${opts.seed}`);
  }
  if (opts.window) {
    const { sinks, recent } = opts.window;
    if (!Number.isInteger(sinks) || sinks < 0 || !Number.isInteger(recent) || recent < 1) {
      throw new RangeError(`window: sinks must be an integer >= 0 and recent >= 1`);
    }
    if (!opts.useCache && opts.windowMode !== "recompute") {
      throw new RangeError("window: a sliding window with sinks needs the cache");
    }
  }
}

/** Generates up to `maxTokens` tokens after `promptIds`. */
export async function generate(
  model: Runner,
  cache: KVCache,
  promptIds: readonly number[],
  opts: GenerateOptions,
): Promise<GenerateResult> {
  validateGenerate(opts);
  const system = opts.systemIds ?? [];
  const { nPositions, eosTokenId } = model.config;
  if (promptIds.length < 1) throw new Error("the prompt has no tokens");
  if (system.length + promptIds.length > nPositions) {
    throw new Error(
      `the prompt (${system.length + promptIds.length} tokens with the system prompt) is ` +
        `longer than the context (n_positions ${nPositions})`,
    );
  }
  if (opts.prefix && opts.prefix.length !== system.length) {
    throw new Error(
      `prefix: the prefix cache holds ${opts.prefix.length} tokens, the system prompt has ` +
        `${system.length}`,
    );
  }
  const rng = new Rng(opts.seed);
  // The sequence the model sees: the system prompt, the prompt, the new tokens (after a
  // slide, only what the window kept of them).
  let seq = [...system, ...promptIds];
  cache.reset();

  // Prefill: the system prompt once, then the prompt after it in the same cache.
  let t0 = performance.now();
  if (system.length && opts.useCache) {
    if (opts.prefix) cache.copyPrefix(opts.prefix, system.length);
    else await model.forward(system, cache);
  }
  const systemPrefillMs = performance.now() - t0;
  t0 = performance.now();
  let logits = await nextLogits(model, cache, opts.useCache ? [...promptIds] : seq, opts.useCache);
  const prefillMs = performance.now() - t0;

  // Decode: choose a token, then run it through the model to get the next logits.
  const ids: number[] = [];
  let stop: GenerateResult["stop"] | null = null;
  const choose = (id: number) => {
    ids.push(id);
    seq.push(id);
    opts.onToken?.(id);
    if (opts.stopAtEos && id === eosTokenId) stop = "eos";
    else if (ids.length >= opts.maxTokens) stop = "max-tokens";
    else if (!opts.window && seq.length >= nPositions) stop = "context";
  };
  // With a window, a full context slides before the next token is fed. Recomputing through
  // the cache prefills the kept tokens but the last, which the next step feeds.
  const { window } = opts;
  const mode = opts.windowMode ?? "sinks";
  if (window) checkWindow(window, nPositions);
  const slides: SlideCost[] = [];
  const makeRoom = async () => {
    if (!window) return;
    const ts = performance.now();
    const slide = slideWindow(seq, cache, window, nPositions, mode);
    if (!slide) return;
    seq = slide.history;
    const refill = mode === "recompute" && opts.useCache ? seq.slice(0, -1) : [];
    if (refill.length) await model.forward(refill, cache);
    slides.push({ dropped: slide.dropped, refilled: refill.length, ms: performance.now() - ts });
  };
  let decodeSteps = 0;
  t0 = performance.now();
  choose(sampleToken(logits, opts, rng));
  if (opts.useCache && opts.chainOnGpu !== false) {
    // Through the cache the GPU picks each token (the argmax, or a draw from the same
    // generator as sampleToken's), steps follow each other without a CPU wait, and tokens
    // come back in batches sized to stream about every 200 ms.
    let batch = 1;
    while (!stop) {
      await makeRoom();
      const n = Math.min(batch, opts.maxTokens - ids.length, nPositions - 1 - cache.length);
      const before = cache.length;
      const tb = performance.now();
      const chosen = await model.decodeSample(ids.at(-1)!, cache, n, opts, rng);
      let used = 0;
      while (!stop && used < n) choose(chosen[used++]);
      cache.length = before + used; // steps after an end-of-text token do not count
      decodeSteps += used;
      batch = streamBatch((performance.now() - tb) / n);
    }
  } else {
    while (!stop) {
      await makeRoom();
      const last = ids.at(-1)!;
      logits = await nextLogits(model, cache, opts.useCache ? [last] : seq, opts.useCache);
      decodeSteps++;
      choose(sampleToken(logits, opts, rng));
    }
  }
  return {
    ids,
    systemTokens: system.length,
    promptTokens: promptIds.length,
    systemPrefillMs,
    prefillMs,
    decodeSteps,
    decodeMs: performance.now() - t0,
    stop: stop ?? "max-tokens",
    evictedTokens: slides.reduce((sum, s) => sum + s.dropped, 0),
    slides,
    cacheBytesUsed: cache.bytesUsed,
    cacheBytesAllocated: cache.bytesAllocated,
  };
}

/** Tokens per chained batch that stream about every 200 ms at `msPerToken` (1 to 64). */
export function streamBatch(msPerToken: number): number {
  return Math.max(1, Math.min(64, Math.round(200 / msPerToken)));
}

/**
 * Prefills `ids` (a system prompt or any shared prefix) once into a cache of its own, sized
 * to fit, for {@link GenerateOptions.prefix}.
 */
export async function prefillPrefix(model: Runner, ids: readonly number[]): Promise<KVCache> {
  const cache = model.newCache({ policy: "grow", initialCapacity: Math.max(1, ids.length) });
  await model.forward(ids, cache);
  return cache;
}

// Logits of the next token. Without the cache, the whole sequence is recomputed from empty.
async function nextLogits(
  model: Runner,
  cache: KVCache,
  ids: readonly number[],
  useCache: boolean,
): Promise<Float32Array> {
  if (!useCache) cache.reset();
  return (await model.forward(ids, cache)).logits;
}

/** What a batched generation produced. */
export interface BatchResult {
  /** New token ids of each prompt. */
  ids: number[][];
  /** Why each sequence stopped. */
  stops: GenerateResult["stop"][];
  /** Time to prefill every prompt (one after another), ms. */
  prefillMs: number;
  /** Batched decode steps run, and their time, ms. */
  decodeSteps: number;
  decodeMs: number;
  /** Tokens produced by those steps, all sequences together. */
  decodeTokens: number;
}

/**
 * Generates for B prompts of any lengths together: each is prefilled into a cache of its
 * own, then every decode step feeds all unfinished sequences' last tokens in one
 * {@link Runner.forwardBatch}. Each sequence samples with its own `Rng(seed)`, so its tokens
 * are those `generate` gives it alone. Needs the cache; no system prompt or window.
 */
export async function generateBatch(
  model: Runner,
  prompts: readonly (readonly number[])[],
  opts: GenerateOptions,
): Promise<BatchResult> {
  validateGenerate(opts);
  if (!opts.useCache || opts.systemIds?.length || opts.window || opts.prefix) {
    throw new RangeError("generateBatch: needs the cache, and takes no system prompt or window");
  }
  const { nPositions, eosTokenId } = model.config;
  prompts.forEach((p, b) => {
    if (p.length < 1 || p.length > nPositions) {
      throw new Error(`generateBatch: prompt ${b} has ${p.length} tokens (1..${nPositions})`);
    }
  });
  const caches = prompts.map(() => model.newCache());
  try {
    let t0 = performance.now();
    const logits: Float32Array[] = [];
    for (const [b, p] of prompts.entries()) logits.push((await model.forward(p, caches[b])).logits);
    const prefillMs = performance.now() - t0;
    const rngs = prompts.map(() => new Rng(opts.seed));
    const ids: number[][] = prompts.map(() => []);
    const stops: (GenerateResult["stop"] | null)[] = prompts.map(() => null);
    const choose = (b: number) => {
      const id = sampleToken(logits[b], opts, rngs[b]);
      ids[b].push(id);
      if (opts.stopAtEos && id === eosTokenId) stops[b] = "eos";
      else if (ids[b].length >= opts.maxTokens) stops[b] = "max-tokens";
      else if (prompts[b].length + ids[b].length >= nPositions) stops[b] = "context";
    };
    let decodeSteps = 0;
    let decodeTokens = 0;
    t0 = performance.now();
    prompts.forEach((_, b) => choose(b));
    while (true) {
      const live = prompts.map((_, b) => b).filter((b) => !stops[b]);
      if (!live.length) break;
      const next = await model.forwardBatch(
        live.map((b) => ids[b].at(-1)!),
        live.map((b) => caches[b]),
      );
      decodeSteps++;
      decodeTokens += live.length;
      live.forEach((b, i) => {
        logits[b] = next[i];
        choose(b);
      });
    }
    return {
      ids,
      stops: stops.map((s) => s ?? "max-tokens"),
      prefillMs,
      decodeSteps,
      decodeMs: performance.now() - t0,
      decodeTokens,
    };
  } finally {
    for (const c of caches) c.destroy();
  }
}
