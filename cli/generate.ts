/**
 * `deno task generate --prompt "…"`: streams a continuation token by token, then prints a
 * one-line summary (prefill, decode speed, cache bytes). `--help` lists the options.
 *
 * @module
 */
import { GPT2_SIZES, loadConfig } from "../model/config.ts";
import {
  generate,
  type GenerateOptions,
  type SlideCost,
  validateGenerate,
} from "../run/generate.ts";
import { checkWindow, defaultWindow, type SlidingWindow } from "../run/sliding_window.ts";
import { type CachePolicy, parseCachePolicy } from "../run/cache_policy.ts";
import { defaultSpeakingModel, EMBEDDED, openModel, tokenizerFor } from "../run/open_model.ts";
import { TextStream, type Tokenizer, TooManyTokensError } from "../tokenizers/tokenizer.ts";
import { integer, main, number, parseOptions, UsageError, weightFormat } from "./usage.ts";
import { modelOptionsFromEnv, openGpu } from "./env_options.ts";

const USAGE = `usage: deno task generate [options]
  --prompt TEXT        text to continue (default "ROMEO:" for the Shakespeare model,
                       "The KV cache" for GPT-2)
  --max-tokens N       most new tokens (default 300 for a character vocabulary, a few
                       lines of text; 32 for GPT-2's BPE)
  --temperature T      0 = greedy (default 0.8)
  --top-k K            keep the K most likely tokens, 0 = off (default 40)
  --top-p P            nucleus sampling mass, 1 = off (default 1)
  --seed S             sampling seed: same seed, same text (default 0)
  --no-cache           recompute the whole sequence every step (the baseline)
  --model M            checkpoint folder, hub name (gpt2, gpt2-medium, distilgpt2, …)
                       or "embedded" (GPT-2 small's 124M shape with random weights, for
                       speed work). Default: real GPT-2 if downloaded (data/gpt2 or the HF
                       cache), else data/shakespeare-char, the char model trained here
  --system TEXT        system prompt, prefilled once at the front of the cache
  --stop-at-eos        stop after <|endoftext|> (refused for a model that has none, such
                       as a character vocabulary)
  --no-slide           stop at the context ("stop: context"). By default generation goes
                       on past it as nanoGPT's sample.py does: when the context is full,
                       the last ¾ of it (after --system) is prefilled again and decoding
                       goes on; the summary says how often it slid and what it cost
  --cache POLICY       the KV cache: preallocated (default, f32), grow (allocated on
                       demand), f16 or int8 (quantized), or window:S,R (StreamingLLM: when
                       full, keep the cached rows of the first S tokens and the last R,
                       with nothing prefilled again)
  --weights F          f32 (default, HuggingFace parity) or f16 (half the bytes read per
                       token; every weight rounded to f16)
  --json               print one JSON object instead of streaming text
  -h, --help           this text`;

function parse(args: string[]) {
  const { values } = parseOptions(USAGE, args, {
    prompt: { type: "string" },
    "max-tokens": { type: "string" },
    temperature: { type: "string", default: "0.8" },
    "top-k": { type: "string", default: "40" },
    "top-p": { type: "string", default: "1" },
    seed: { type: "string", default: "0" },
    "no-cache": { type: "boolean", default: false },
    model: { type: "string" },
    system: { type: "string" },
    "stop-at-eos": { type: "boolean", default: false },
    "no-slide": { type: "boolean", default: false },
    cache: { type: "string", default: "preallocated" },
    weights: { type: "string", default: "f32" },
    json: { type: "boolean", default: false },
  });
  const opts: GenerateOptions = {
    maxTokens: values["max-tokens"] === undefined
      ? 1 // set once the tokenizer is known
      : integer("--max-tokens", values["max-tokens"], 1, Infinity),
    temperature: number("--temperature", values.temperature, "a number >= 0", (v) => v >= 0),
    topK: integer("--top-k", values["top-k"], 0, Infinity),
    topP: number("--top-p", values["top-p"], "a number in (0, 1]", (v) => v > 0 && v <= 1),
    seed: number("--seed", values.seed, "an integer", Number.isSafeInteger),
    useCache: !values["no-cache"],
    stopAtEos: values["stop-at-eos"],
  };
  if (values.prompt === "") throw new UsageError(`--prompt: must not be empty, got ""`);
  let policy: CachePolicy;
  try {
    policy = parseCachePolicy(values.cache);
  } catch (e) {
    throw new UsageError(`--cache: ${(e as Error).message}`);
  }
  opts.window = policy.window;
  if (opts.window && !opts.useCache) {
    throw new UsageError(`--cache ${values.cache}: a window needs the cache; drop --no-cache`);
  }
  if (opts.window && values["no-slide"]) {
    throw new UsageError(`--cache ${values.cache}: a window slides; drop --no-slide`);
  }
  validateGenerate(opts); // every field was checked above: a failure here is a bug
  return { values, opts, policy, weights: weightFormat(values.weights) };
}

/**
 * The context of the model `spec` names, read without loading its weights: the folder's
 * config.json, or the known GPT-2 sizes (the embedded model is GPT-2 small). Null when only
 * opening the model tells; `generate()` then checks the prompt.
 */
async function contextLength(name: string): Promise<number | null> {
  if (name === EMBEDDED) return GPT2_SIZES.gpt2.nPositions;
  if (name in GPT2_SIZES) return GPT2_SIZES[name as keyof typeof GPT2_SIZES].nPositions;
  try {
    return (await loadConfig(`${name}/config.json`)).nPositions;
  } catch {
    return null;
  }
}

/**
 * `text` in the model's tokens, encoded only as far as a context of `limit` (after `before`
 * tokens) can hold, so that an over-long prompt is refused at once; a character a char
 * vocabulary lacks is a usage error too.
 */
function encodeOption(
  tok: Tokenizer,
  flag: string,
  text: string,
  limit: number | null,
  before = 0,
): number[] {
  try {
    return tok.encode(text, { maxTokens: limit === null ? undefined : limit - before });
  } catch (e) {
    if (e instanceof TooManyTokensError) tooLong(flag, `more than ${e.maxTokens}`, before, limit!);
    throw new UsageError(`${flag}: ${(e as Error).message}`);
  }
}

/** Rejects a prompt (after the system prompt, if any) longer than a context of `limit`. */
function checkPromptFits(promptTokens: number, systemTokens: number, limit: number) {
  if (systemTokens + promptTokens > limit) tooLong("--prompt", promptTokens, systemTokens, limit);
}

function tooLong(flag: string, tokens: number | string, systemTokens: number, limit: number) {
  const what = systemTokens
    ? `${tokens} tokens after the ${systemTokens} of --system`
    : `${tokens} tokens`;
  throw new UsageError(
    `${flag}: ${what}, longer than the context (n_positions ${limit}); generation goes on ` +
      `past the context, but the prompt itself must fit in it`,
  );
}

main("generate", async () => {
  const { values, opts, policy, weights } = parse(Deno.args);
  const spec = values.model ?? (await defaultSpeakingModel());
  const tok = await tokenizerFor(spec);
  if (values["max-tokens"] === undefined) opts.maxTokens = tok.name === "char" ? 300 : 32;
  if (opts.stopAtEos && tok.eosTokenId < 0) noEndOfText(`the ${tok.name} vocabulary of ${spec}`);
  const prompt = values.prompt ?? (tok.name === "char" ? "ROMEO:\n" : "The KV cache");
  const limit = await contextLength(spec);
  const systemIds = values.system ? encodeOption(tok, "--system", values.system, limit) : [];
  const promptIds = encodeOption(tok, "--prompt", prompt, limit, systemIds.length);
  if (limit !== null) {
    checkPromptFits(promptIds.length, systemIds.length, limit);
    if (policy.window) checkWindowOption(policy.window, limit);
  }

  const log = values.json ? () => {} : (s: string) => console.error(s);
  const t0 = performance.now();
  const gpu = await openGpu();
  const opened = await openModel(gpu, spec, { weights, ...modelOptionsFromEnv() });
  const { model } = opened;
  log(`adapter: ${gpu.description}`);
  log(`model:   ${opened.description}`);
  checkPromptFits(promptIds.length, systemIds.length, model.config.nPositions);
  if (policy.window) checkWindowOption(policy.window, model.config.nPositions);
  if (opts.stopAtEos && model.config.eosTokenId === null) noEndOfText(`${spec}/config.json`);
  if (!policy.window && !values["no-slide"]) {
    opts.window = slidingWindow(model.config.nPositions, systemIds.length);
    opts.windowMode = "recompute";
  }
  await model.warmup();
  log(`loaded and warmed up in ${Math.round(performance.now() - t0)} ms`);

  const cache = model.newCache(policy.cache);
  const out = new TextStream(tok);
  const write = (s: string) => Deno.stdout.writeSync(new TextEncoder().encode(s));
  if (!values.json) write(prompt);
  const result = await generate(model, cache, promptIds, {
    ...opts,
    systemIds,
    onToken: values.json ? undefined : (id) => write(out.push(id)),
  });
  cache.destroy();
  const decodeTokS = result.decodeSteps / (result.decodeMs / 1000);
  const summary = {
    model: opened.name,
    random_weights: opened.random,
    weights: weights,
    adapter: gpu.description,
    cache: opts.useCache,
    cache_policy: opts.useCache ? policy.name : null,
    system_tokens: result.systemTokens,
    system_prefill_ms: round(result.systemPrefillMs),
    prompt_tokens: result.promptTokens,
    prefill_ms: round(result.prefillMs),
    new_tokens: result.ids.length,
    decode_steps: result.decodeSteps,
    decode_ms: round(result.decodeMs),
    decode_tok_s: result.decodeSteps ? round(decodeTokS) : null,
    // Which decode steps ran (run/runner.ts): "fused" (one dispatch for every block) or
    // "general" (the per-layer kernels), and what chose it.
    decode_path: opts.useCache ? model.decodePath : null,
    decode_path_reason: opts.useCache ? model.decodeReason : null,
    stop: result.stop,
    // Past the context: how the window slid (null with --no-slide), how often, and what
    // each slide dropped, prefilled again and took (ms).
    window: opts.window ? { mode: opts.windowMode ?? "sinks", ...opts.window } : null,
    slides: result.slides.length,
    slide_costs: result.slides.map((c) => ({ ...c, ms: round(c.ms) })),
    evicted_tokens: result.evictedTokens,
    // Without the cache every step starts from nothing: no tokens are kept between steps.
    cache_bytes_used: opts.useCache ? result.cacheBytesUsed : null,
    cache_bytes_allocated: opts.useCache ? result.cacheBytesAllocated : null,
    ids: result.ids,
    text: tok.decode(result.ids),
  };
  if (values.json) {
    console.log(JSON.stringify(summary));
    return;
  }
  write(out.flush() + "\n");
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;
  const system = result.systemTokens
    ? `system ${result.systemTokens} tok in ${summary.system_prefill_ms} ms · `
    : "";
  const cacheNote = opts.useCache
    ? `(KV cache, ${model.decodePath} decode path: ${model.decodeReason}) · cache ${
      mb(result.cacheBytesUsed)
    } used of ${mb(result.cacheBytesAllocated)}`
    : "(no cache: every step recomputed the whole sequence)";
  log(
    `── ${opened.name} · ${system}prompt ${result.promptTokens} tok · prefill ` +
      `${summary.prefill_ms} ms · decode ${result.decodeSteps} tok at ` +
      `${summary.decode_tok_s ?? "-"} tok/s ${cacheNote} · stop: ${result.stop}` +
      slideNote(result.slides, opts.windowMode ?? "sinks"),
  );
});

/** The refusal of --stop-at-eos for a model with no end-of-text token, named by `what`. */
function noEndOfText(what: string): never {
  throw new UsageError(
    `--stop-at-eos: ${what} has no end-of-text token (eos_token_id null), so there is ` +
      `nothing to stop at; use --max-tokens`,
  );
}

/** The window generate slides by default: the system prompt kept, the rest recomputed. */
function slidingWindow(nPositions: number, systemTokens: number): SlidingWindow {
  const window = defaultWindow(nPositions, systemTokens);
  if (!window) {
    throw new UsageError(
      `--system: ${systemTokens} tokens leave no room to slide past the context ` +
        `(n_positions ${nPositions}); shorten it or add --no-slide`,
    );
  }
  return window;
}

/** What the window did, for the summary line: nothing when it never slid. */
function slideNote(slides: SlideCost[], mode: string): string {
  if (!slides.length) return "";
  const ms = slides.reduce((sum, s) => sum + s.ms, 0);
  const dropped = slides.reduce((sum, s) => sum + s.dropped, 0);
  const refilled = slides.reduce((sum, s) => sum + s.refilled, 0);
  const each = mode === "recompute"
    ? `${Math.round(refilled / slides.length)} tok prefilled again`
    : "cached rows kept";
  return ` · window slid ${slides.length}× (${mode}: ${dropped} tok dropped, ${each} per ` +
    `slide, ${round(ms / slides.length)} ms per slide, ${round(ms)} ms in all)`;
}

/** checkWindow, as a usage error naming `--cache`. */
function checkWindowOption(window: { sinks: number; recent: number }, limit: number) {
  try {
    checkWindow(window, limit);
  } catch (e) {
    throw new UsageError(`--cache: ${(e as Error).message}`);
  }
}

function round(v: number): number {
  return Math.round(v * 10) / 10;
}
