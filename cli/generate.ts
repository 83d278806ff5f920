/**
 * `deno task generate --prompt "…"`: streams a continuation token by token, then prints a
 * one-line summary (prefill, decode speed, cache bytes). `--help` lists the options.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Gpu } from "../kernels/gpu.ts";
import { checkWindow, generate, type GenerateOptions, validateGenerate } from "../run/generate.ts";
import { type CachePolicy, parseCachePolicy } from "../run/cache_policy.ts";
import { openModel } from "../run/open_model.ts";
import { parseWeightFormat, type WeightFormat } from "../kernels/matmul.ts";
import { gpt2Tokenizer, TextStream } from "../run/tokenizer.ts";

const USAGE = `usage: deno task generate [options]
  --prompt TEXT        text to continue (default "The KV cache")
  --max-tokens N       most new tokens (default 32)
  --temperature T      0 = greedy (default 0.8)
  --top-k K            keep the K most likely tokens, 0 = off (default 40)
  --top-p P            nucleus sampling mass, 1 = off (default 1)
  --seed S             sampling seed: same seed, same text (default 0)
  --no-cache           recompute the whole sequence every step (the baseline)
  --model M            checkpoint folder, hub name (gpt2, gpt2-medium, distilgpt2, …)
                       or "embedded" (default: data/gpt2 or the HF cache, else embedded)
  --system TEXT        system prompt, prefilled once at the front of the cache
  --stop-at-eos        stop after <|endoftext|>
  --cache POLICY       the KV cache: preallocated (default, f32), grow (allocated on
                       demand), f16 or int8 (quantized), or window:S,R (go past the
                       context: when full, keep the first S tokens and the last R)
  --weights F          f32 (default, HuggingFace parity) or f16 (half the bytes read per
                       token; every weight rounded to f16)
  --json               print one JSON object instead of streaming text`;

/** A command-line mistake: message and exit code 2. */
class UsageError extends Error {}

function number(name: string, value: string, check: (v: number) => boolean, want: string) {
  const v = Number(value);
  if (value.trim() === "" || !Number.isFinite(v) || !check(v)) {
    throw new UsageError(`--${name}: expected ${want}, got "${value}"`);
  }
  return v;
}

function parse(args: string[]) {
  let values;
  try {
    values = parseArgs({
      args,
      strict: true,
      options: {
        prompt: { type: "string", default: "The KV cache" },
        "max-tokens": { type: "string", default: "32" },
        temperature: { type: "string", default: "0.8" },
        "top-k": { type: "string", default: "40" },
        "top-p": { type: "string", default: "1" },
        seed: { type: "string", default: "0" },
        "no-cache": { type: "boolean", default: false },
        model: { type: "string" },
        system: { type: "string" },
        "stop-at-eos": { type: "boolean", default: false },
        cache: { type: "string", default: "preallocated" },
        weights: { type: "string", default: "f32" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
    }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const int = (v: number) => Number.isInteger(v);
  const opts: GenerateOptions = {
    maxTokens: number(
      "max-tokens",
      values["max-tokens"],
      (v) => int(v) && v >= 1,
      "an integer >= 1",
    ),
    temperature: number("temperature", values.temperature, (v) => v >= 0, "a number >= 0"),
    topK: number("top-k", values["top-k"], (v) => int(v) && v >= 0, "an integer >= 0"),
    topP: number("top-p", values["top-p"], (v) => v > 0 && v <= 1, "a number in (0, 1]"),
    seed: number("seed", values.seed, Number.isSafeInteger, "an integer"),
    useCache: !values["no-cache"],
    stopAtEos: values["stop-at-eos"],
  };
  if (values.prompt === "") throw new UsageError("--prompt: must not be empty");
  let policy: CachePolicy;
  try {
    policy = parseCachePolicy(values.cache);
  } catch (e) {
    throw new UsageError(`--cache: ${(e as Error).message}`);
  }
  opts.window = policy.window;
  let weights: WeightFormat;
  try {
    weights = parseWeightFormat(values.weights, "--weights");
    validateGenerate(opts);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return { values, opts, policy, weights };
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parse(Deno.args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`generate: ${e.message}\n${USAGE}`);
    return 2;
  }
  const { values, opts, policy, weights } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const log = values.json ? () => {} : (s: string) => console.error(s);
  const gpu = await Gpu.open();
  log(`adapter: ${gpu.description}`);
  const t0 = performance.now();
  const opened = await openModel(gpu, values.model, { weights });
  await opened.model.warmup();
  log(`model:   ${opened.description}`);
  log(`loaded and warmed up in ${Math.round(performance.now() - t0)} ms`);
  const tok = gpt2Tokenizer();
  const promptIds = tok.encode(values.prompt);
  const systemIds = values.system ? tok.encode(values.system) : [];
  const { model } = opened;
  try {
    if (policy.window) checkWindow(policy.window, model.config.nPositions);
  } catch (e) {
    // Only now is the context known: a window too large for it is still a usage error.
    console.error(`generate: --cache: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const cache = model.newCache(policy.cache);
  const out = new TextStream(tok);
  const write = (s: string) => Deno.stdout.writeSync(new TextEncoder().encode(s));
  if (!values.json) write(values.prompt);
  const result = await generate(model, cache, promptIds, {
    ...opts,
    systemIds,
    onToken: values.json ? undefined : (id) => write(out.push(id)),
  });
  const decodeTokS = result.decodeSteps / (result.decodeMs / 1000);
  const summary = {
    model: opened.name,
    random_weights: opened.random,
    weights: weights,
    adapter: gpu.description,
    cache: opts.useCache,
    cache_policy: policy.name,
    system_tokens: result.systemTokens,
    system_prefill_ms: round(result.systemPrefillMs),
    prompt_tokens: result.promptTokens,
    prefill_ms: round(result.prefillMs),
    new_tokens: result.ids.length,
    decode_steps: result.decodeSteps,
    decode_ms: round(result.decodeMs),
    decode_tok_s: result.decodeSteps ? round(decodeTokS) : null,
    stop: result.stop,
    evicted_tokens: result.evictedTokens,
    cache_bytes_used: result.cacheBytesUsed,
    cache_bytes_allocated: result.cacheBytesAllocated,
    ids: result.ids,
    text: tok.decode(result.ids),
  };
  if (values.json) {
    console.log(JSON.stringify(summary));
  } else {
    write(out.flush() + "\n");
    const mb = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;
    const system = result.systemTokens
      ? `system ${result.systemTokens} tok in ${summary.system_prefill_ms} ms · `
      : "";
    log(
      `── ${opened.name} · ${system}prompt ${result.promptTokens} tok · prefill ` +
        `${summary.prefill_ms} ms · decode ${result.decodeSteps} tok at ` +
        `${summary.decode_tok_s ?? "-"} tok/s (${opts.useCache ? "KV cache" : "no cache"}) · ` +
        `cache ${mb(result.cacheBytesUsed)} used of ${mb(result.cacheBytesAllocated)} · ` +
        `stop: ${result.stop}` +
        (opts.window ? ` · window evicted ${result.evictedTokens} tokens` : ""),
    );
  }
  cache.destroy();
  return 0;
}

function round(v: number): number {
  return Math.round(v * 10) / 10;
}

try {
  Deno.exit(await main());
} catch (e) {
  console.error(`generate: ${(e as Error).message}`);
  Deno.exit(1);
}
