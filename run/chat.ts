/**
 * The chat session behind `deno task chat`: a conversation kept in one KV cache across turns,
 * so that a turn prefills only its new text. Each reply streams token by token and records
 * each token's time; with the cache off every token recomputes the whole conversation from an
 * empty cache instead, and the times show the difference. When the context is full a sliding
 * window with attention sinks (StreamingLLM, {@link KVCache.evict}) keeps the conversation
 * going. Commands (`/cache`, `/temp`, `/stats`, …) change settings between replies.
 *
 * Everything here writes through a callback, so tests drive it without a terminal.
 *
 * @module
 */
import type { KVCache } from "../model/kv_cache.ts";
import { streamBatch, validateGenerate } from "./generate.ts";
import type { DecodePath, Runner } from "./runner.ts";
import { Rng } from "../base/rng.ts";
import { sampleToken, type SamplingOptions } from "./sampling.ts";
import {
  checkWindow,
  defaultWindow,
  slideWindow,
  type SlidingWindow,
  type WindowMode,
} from "./sliding_window.ts";
import { TextStream, type Tokenizer } from "../tokenizers/tokenizer.ts";

/** Settings of a chat that commands can change between replies. */
export interface ChatSettings extends SamplingOptions {
  /** Most tokens per reply. */
  maxTokens: number;
  /** Seed of the sampling PRNG; `/reset` starts it again. */
  seed: number;
  /** Decode through the KV cache (true) or recompute everything for every token (false). */
  useCache: boolean;
  /**
   * What the sliding window does to the cache when the context is full. `recompute` (the
   * default): the kept tokens are prefilled again at positions 0.. (one prefill per slide),
   * as a model with absolute position embeddings was trained to see them. `sinks`: the kept
   * rows stay cached where they were (StreamingLLM's attention sinks, no recomputation); on
   * GPT-2 the text then degrades, since each kept row carries the position it was made at.
   */
  windowMode?: WindowMode;
  /**
   * With the cache, pick tokens on the GPU and chain the decode steps with no CPU wait
   * between them, reading tokens back in batches (default true: the same ids as picking on
   * the CPU); false reads every step's logits back, as generate's `chainOnGpu`.
   */
  chainOnGpu?: boolean;
}

/** How to open a {@link ChatSession}. */
export interface ChatOptions extends ChatSettings {
  /** Text kept at the start of the conversation, prefilled once when the session opens. */
  system?: string;
  /**
   * The sliding window used when the context is full: keep the first `sinks` tokens and the
   * last `recent` ones. Default: sinks max(4, system tokens), recent ¾ n_positions − sinks.
   * `sinks` must cover the system prompt.
   */
  window?: SlidingWindow;
}

/** What one reply produced and what it cost. */
export interface ReplyResult {
  /** The reply's token ids and their text. */
  ids: number[];
  text: string;
  /** Tokens run through the model before the first reply token (new text, or everything). */
  prefilledTokens: number;
  /** Tokens whose K/V the prefill found in the cache. */
  reusedTokens: number;
  /** Time from the prefill's start to the first reply token, ms. */
  prefillMs: number;
  /**
   * Time of each later token (a forward and the sampling), ms; a token of a chained batch
   * gets the batch's time over its length.
   */
  tokenMs: number[];
  /** Whether the reply ran through the cache. */
  useCache: boolean;
  /** Why it stopped: `maxTokens` reached, end of text, or interrupted (Ctrl-C). */
  stop: "max-tokens" | "eos" | "interrupted";
  /** Tokens the sliding window dropped during this reply, and how many times it ran. */
  droppedTokens: number;
  evictions: number;
  /** What the window did to the cache when it slid. */
  windowMode: WindowMode;
}

/** Numbers shown by `/stats`. */
export interface ChatStats {
  /** Tokens whose K/V the cache holds, of the context's `nPositions`. */
  cachedTokens: number;
  nPositions: number;
  /** Tokens of the conversation the model sees (cached, plus the last reply token). */
  conversationTokens: number;
  cacheBytesUsed: number;
  cacheBytesAllocated: number;
  /** Reply tokens after the first, and their total time, with the cache and without. */
  cached: { tokens: number; ms: number };
  uncached: { tokens: number; ms: number };
  /** Tokens dropped by the sliding window so far. */
  droppedTokens: number;
  /**
   * The model's decode path, and whether replies now chain its steps ({@link Runner.decodeSample}:
   * tokens read back in batches); not where the GPU sampler cannot draw with the settings (top-p
   * alone over a vocabulary of more than 256), whose steps read their logits back.
   */
  decodePath: DecodePath;
  chained: boolean;
}

/** A message the chat cannot take (bad text or bad command): shown as one line. */
export class ChatInputError extends Error {}

/**
 * A conversation with a model, held in one KV cache. Invariant: the cache's rows are the
 * K/V of `history[0 .. cache.length)`; the history's tail after them (the last reply token,
 * a new message) has not been fed yet.
 */
export class ChatSession {
  /** Current settings; commands change them. */
  readonly settings: ChatSettings;
  /** The conversation's cache (preallocated, f32, n_positions rows). */
  readonly cache: KVCache;
  /** The system text's tokens, always the first rows of the cache. */
  readonly systemIds: readonly number[];
  /** The sliding window applied when the context is full. */
  readonly window: Readonly<SlidingWindow>;
  readonly #model: Runner;
  readonly #tokenizer: Tokenizer;
  readonly #systemEndsLine: boolean;
  #history: number[];
  #rng: Rng;
  #endsLine: boolean;
  #cached = { tokens: 0, ms: 0 };
  #uncached = { tokens: 0, ms: 0 };
  #droppedTokens = 0;

  private constructor(model: Runner, tokenizer: Tokenizer, options: ChatOptions) {
    const { maxTokens, temperature, topK, topP, seed, useCache } = options;
    const windowMode = options.windowMode ?? "recompute";
    const chainOnGpu = options.chainOnGpu ?? true;
    this.settings = { maxTokens, temperature, topK, topP, seed, useCache, windowMode, chainOnGpu };
    const { nPositions, vocabSize } = model.config;
    if (tokenizer.vocabSize > vocabSize) {
      throw new Error(
        `the ${tokenizer.name} tokenizer has ${tokenizer.vocabSize} ids, the model only ` +
          `${vocabSize}`,
      );
    }
    const system = options.system ?? "";
    this.systemIds = tokenizer.encode(system);
    if (this.systemIds.length > nPositions / 2) {
      throw new RangeError(
        `the system text has ${this.systemIds.length} tokens; at most half the context ` +
          `(${nPositions / 2} of ${nPositions}) may be system text`,
      );
    }
    const window = options.window ?? defaultWindow(nPositions, Math.max(4, this.systemIds.length));
    if (!window) {
      throw new RangeError(
        `the context (${nPositions} positions) is too short for a sliding window`,
      );
    }
    this.window = window;
    if (this.window.sinks < this.systemIds.length) {
      throw new RangeError(
        `window: ${this.window.sinks} sinks do not cover the ${this.systemIds.length} system tokens`,
      );
    }
    validateGenerate({ ...this.settings, useCache: true, stopAtEos: false, window: this.window });
    checkWindow(this.window, nPositions);
    this.#model = model;
    this.#tokenizer = tokenizer;
    this.#systemEndsLine = system === "" || system.endsWith("\n");
    this.cache = model.newCache();
    this.#history = [...this.systemIds];
    this.#rng = new Rng(seed);
    this.#endsLine = this.#systemEndsLine;
  }

  /** Opens a session and prefills the system text, if any. */
  static async open(
    model: Runner,
    tokenizer: Tokenizer,
    options: ChatOptions,
  ): Promise<ChatSession> {
    const session = new ChatSession(model, tokenizer, options);
    if (session.systemIds.length) await model.forward(session.systemIds, session.cache);
    return session;
  }

  /** Whether the conversation ends with a newline, so that a new turn starts on its own line. */
  get endsLine(): boolean {
    return this.#endsLine;
  }

  /** The conversation's token ids as the model sees it: cached rows, then the unfed tail. */
  get history(): readonly number[] {
    return this.#history;
  }

  /**
   * Appends `text` to the conversation and streams the model's reply through `write`,
   * token by token. Stops after `maxTokens` tokens, at end of text, or when `signal` is
   * aborted (checked between tokens). Throws {@link ChatInputError}, changing nothing, when
   * the text cannot be encoded or does not fit the context.
   *
   * Through the cache, while only the last token is unfed, the tokens are chosen on the GPU
   * in chained batches ({@link Runner.decodeSample}) sized to stream about every 200 ms; otherwise
   * (cache off, the window's refill, `chainOnGpu` false, a model vocabulary wider than the
   * tokenizer's) each token's logits are read back and sampled on the CPU. Both give the same
   * ids and leave the sampler in the same state.
   */
  async reply(
    text: string,
    write: (text: string) => void,
    signal?: AbortSignal,
  ): Promise<ReplyResult> {
    const { nPositions } = this.#model.config;
    let newIds: number[];
    try {
      newIds = this.#tokenizer.encode(text);
    } catch (e) {
      throw new ChatInputError((e as Error).message);
    }
    const unfed = this.#history.length - this.cache.length;
    const room = nPositions - 1 - this.window.sinks - unfed;
    if (newIds.length + unfed < 1) throw new ChatInputError("nothing to reply to");
    if (newIds.length > room) {
      throw new ChatInputError(
        `the message has ${newIds.length} tokens; at most ${room} fit the context ` +
          `(${nPositions} positions, ${this.window.sinks} kept at the start)`,
      );
    }
    const useCache = this.settings.useCache;
    const reusedTokens = useCache ? this.cache.length : 0;
    this.#history.push(...newIds);
    let droppedTokens = 0;
    let evictions = 0;
    const makeRoom = () => {
      const dropped = this.#makeRoom();
      droppedTokens += dropped;
      if (dropped) evictions++;
    };
    makeRoom();
    const prefilledTokens = this.#history.length - (useCache ? this.cache.length : 0);

    let t0 = performance.now();
    let id = sampleToken(await this.#forward(useCache), this.settings, this.#rng);
    const prefillMs = performance.now() - t0;
    const ids: number[] = [];
    const tokenMs: number[] = [];
    const stream = new TextStream(this.#tokenizer);
    const chain = this.#chains();
    // The last chained batch: its tokens, how many were used, the cache's length and the
    // sampler's state before it, and its time per token.
    let chosen: number[] = [];
    let used = 0;
    let before = 0;
    let rngBefore = this.#rng.state();
    let stepMs = 0;
    let batch = 1;
    let stop: ReplyResult["stop"];
    while (true) {
      ids.push(id);
      this.#history.push(id);
      if (id === this.#tokenizer.eosTokenId) {
        stop = "eos";
        break;
      }
      write(stream.push(id));
      if (ids.length >= this.settings.maxTokens) {
        stop = "max-tokens";
        break;
      }
      if (signal?.aborted) {
        stop = "interrupted";
        break;
      }
      if (used < chosen.length) {
        id = chosen[used++];
        tokenMs.push(stepMs);
        continue;
      }
      makeRoom();
      if (chain && this.#history.length - this.cache.length === 1) {
        // Up to `batch` steps on the GPU, never past the context's last free position.
        const n = Math.min(
          batch,
          this.settings.maxTokens - ids.length,
          nPositions - 1 - this.cache.length,
        );
        before = this.cache.length;
        rngBefore = this.#rng.state();
        t0 = performance.now();
        chosen = await this.#model.decodeSample(id, this.cache, n, this.settings, this.#rng);
        stepMs = (performance.now() - t0) / n;
        batch = streamBatch(stepMs);
        id = chosen[0];
        used = 1;
        tokenMs.push(stepMs);
      } else {
        t0 = performance.now();
        id = sampleToken(await this.#forward(useCache), this.settings, this.#rng);
        tokenMs.push(performance.now() - t0);
      }
    }
    if (used < chosen.length) {
      // Stopped inside a batch: its later steps do not count, in the cache or the sampler
      // (one draw per sampled token, as sampleToken makes).
      this.cache.length = before + used;
      this.#rng.setState(rngBefore);
      const draws = this.settings.temperature > 0 ? used : 0;
      for (let i = 0; i < draws; i++) this.#rng.next();
    }
    write(stream.flush());
    const timing = useCache ? this.#cached : this.#uncached;
    timing.tokens += tokenMs.length;
    timing.ms += tokenMs.reduce((a, b) => a + b, 0);
    this.#droppedTokens += droppedTokens;
    const replyText = this.#tokenizer.decode(ids.filter((i) => i !== this.#tokenizer.eosTokenId));
    this.#endsLine = replyText === "" ? text.endsWith("\n") : replyText.endsWith("\n");
    return {
      ids,
      text: replyText,
      prefilledTokens,
      reusedTokens,
      prefillMs,
      tokenMs,
      useCache,
      stop,
      droppedTokens,
      evictions,
      windowMode: this.settings.windowMode ?? "recompute",
    };
  }

  /** Forgets the conversation but the system text (its K/V stay cached); restarts the PRNG. */
  reset(): void {
    this.cache.length = Math.min(this.cache.length, this.systemIds.length);
    this.#history = [...this.systemIds];
    this.#rng = new Rng(this.settings.seed);
    this.#endsLine = this.#systemEndsLine;
  }

  /** The numbers `/stats` shows. */
  stats(): ChatStats {
    return {
      cachedTokens: this.cache.length,
      nPositions: this.#model.config.nPositions,
      conversationTokens: this.#history.length,
      cacheBytesUsed: this.cache.bytesUsed,
      cacheBytesAllocated: this.cache.bytesAllocated,
      cached: { ...this.#cached },
      uncached: { ...this.#uncached },
      droppedTokens: this.#droppedTokens,
      decodePath: this.#model.decodePath,
      chained: this.#chains() && this.#model.chainsOnGpu(this.settings),
    };
  }

  /** Frees the cache. */
  destroy(): void {
    this.cache.destroy();
  }

  // Whether replies choose tokens on the GPU in chained batches: with the cache, unless
  // asked not to, and only where the model's vocabulary is the tokenizer's (the CPU path
  // samples from logits cut to the tokenizer's ids).
  #chains(): boolean {
    return this.settings.useCache && this.settings.chainOnGpu !== false &&
      this.#model.config.vocabSize === this.#tokenizer.vocabSize;
  }

  // Next-token logits after the whole history, [tokenizer.vocabSize] (a model's vocabulary
  // may be padded past the tokenizer's): through the cache, feeding only the unfed tail;
  // without it, from an empty cache (which then holds the whole history).
  async #forward(useCache: boolean): Promise<Float32Array> {
    if (!useCache) this.cache.reset();
    const ids = this.#history.slice(this.cache.length);
    const { logits } = await this.#model.forward(ids, this.cache);
    return logits.subarray(0, this.#tokenizer.vocabSize);
  }

  // When the history would not fit the context, the window drops the cached middle
  // (sliding_window.ts). Returns the tokens dropped.
  #makeRoom(): number {
    const { nPositions } = this.#model.config;
    const mode = this.settings.windowMode ?? "recompute";
    const slide = slideWindow(this.#history, this.cache, this.window, nPositions, mode);
    if (!slide) return 0;
    this.#history = slide.history;
    return slide.dropped;
  }
}
