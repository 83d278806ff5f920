/**
 * GPT-2 hyper-parameters, parsed and validated from a HuggingFace `config.json`.
 *
 * Only the architecture that the kernels implement is accepted: a plain GPT-2 with
 * `gelu_new`, attention scaled by `1/sqrt(head_dim)` and no per-layer score scaling.
 * Anything else is rejected with an error that names the file and the field.
 *
 * @module
 */

import { clip, describe } from "../base/describe.ts";
import { readBytes } from "../base/files.ts";
import { MAX_SOFTMAX_ROW } from "../kernels/softmax.ts";

/** GPT-2 hyper-parameters, from a HuggingFace GPT2Config. */
export interface GPT2Config {
  /** Number of token embeddings (`vocab_size`), 50257 for the OpenAI checkpoints. */
  vocabSize: number;
  /** Maximum sequence length (`n_positions`): rows of the position embedding. */
  nPositions: number;
  /** Width of the residual stream (`n_embd`), called C in shape comments. */
  nEmbd: number;
  /** Number of transformer blocks (`n_layer`). */
  nLayer: number;
  /** Number of attention heads (`n_head`). */
  nHead: number;
  /** Width of the MLP hidden layer (`n_inner`, default `4 * n_embd`). */
  nInner: number;
  /** Width of one attention head: `nEmbd / nHead`. */
  headDim: number;
  /** Epsilon of every LayerNorm (`layer_norm_epsilon`, default 1e-5). */
  layerNormEpsilon: number;
  /**
   * MLP activation. HF's `gelu_new` and `gelu_pytorch_tanh` are the same tanh formula
   * `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, so both map to `"gelu_new"`.
   */
  activation: "gelu_new";
  /** Whether the LM head reuses the token embedding (`tie_word_embeddings`, default true). */
  tieWordEmbeddings: boolean;
  /**
   * Beginning-of-sequence token id (`bos_token_id`: default 50256 when absent, none when
   * null, as HF reads it).
   */
  bosTokenId: number | null;
  /**
   * End-of-sequence token id (`eos_token_id`: default 50256 when absent; null, as in a
   * character vocabulary, when the model has none).
   */
  eosTokenId: number | null;
}

/** The `<|endoftext|>` id of the GPT-2 vocabulary, used when a config gives no bos/eos id. */
const END_OF_TEXT = 50256;

/** HF `activation_function` values that are the tanh-approximated GELU. */
const TANH_GELUS = ["gelu_new", "gelu_pytorch_tanh"];

/**
 * Upper bounds of the config fields: what the kernels can index and a WebGPU adapter can
 * hold. Every weight matrix that is not split into chunks (c_attn, c_fc, c_proj, wpe) and
 * every layer's K or V cache must fit one buffer of at most 2^31 - 1 bytes, the largest
 * `maxBufferSize` adapters report (the adapter's own, smaller binding limit is checked by
 * {@link checkConfigFits}); token ids travel as u32, and one invocation of attention's softmax loops over a row
 * of n_positions keys (at most 21,841 within llvmpipe's 65,535 iterations).
 * Each bound is far above the GPT-2 family (vocab 50257, 1024 positions, n_embd ≤ 1600,
 * 48 layers).
 */
export const CONFIG_LIMITS: Readonly<{
  vocabSize: number;
  nPositions: number;
  nEmbd: number;
  nInner: number;
  nLayer: number;
  matrixBytes: number;
  epsilon: readonly [number, number];
}> = {
  vocabSize: 2 ** 20,
  nPositions: MAX_SOFTMAX_ROW, // attention's softmax loops over a row of n_positions keys
  nEmbd: 2 ** 13,
  nInner: 2 ** 16,
  nLayer: 1024,
  matrixBytes: 2 ** 31 - 1,
  /** The smallest normal f32 (a smaller epsilon is 0 or subnormal on the GPU) up to 1. */
  epsilon: [2 ** -126, 1],
};

type Json = Record<string, unknown>;

/** Builds the error thrown for a bad value: the message starts with the source path. */
function configError(source: string, message: string): Error {
  return new Error(`${source}: ${message}`);
}

/** Builds the error thrown for a value of the wrong JSON type, naming the source. */
function configTypeError(source: string, message: string): TypeError {
  return new TypeError(`${source}: ${message}`);
}

/** Reads field `field` of the config; a getter that throws becomes an error naming it. */
function field(json: Json, name: string, source: string): unknown {
  try {
    return json[name];
  } catch (err) {
    throw configTypeError(source, `"${name}" cannot be read: ${describe((err as Error)?.message)}`);
  }
}

/** "a string", "a BigInt (12n)", "an array": the JSON kind of a value with a short echo. */
function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array ${describe(value)}`;
  if (typeof value === "bigint") return `a BigInt (${describe(value)})`;
  if (typeof value === "object") return `an object ${describe(value)}`;
  return `${typeof value === "undefined" ? "" : `a ${typeof value} `}${describe(value)}`;
}

/** Reads a required integer field in 1..max. */
function boundedInt(json: Json, name: string, max: number, source: string): number {
  const value = field(json, name, source);
  if (value === undefined) {
    throw configError(source, `"${name}" must be an integer in 1..${max}, it is missing`);
  }
  if (typeof value !== "number") {
    throw configTypeError(source, `"${name}" must be a number, got ${kindOf(value)}`);
  }
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw configError(source, `"${name}" must be an integer in 1..${max}, got ${describe(value)}`);
  }
  return value;
}

/**
 * Reads an optional token id, which must lie in the vocabulary; null means none (HF's None);
 * absent gives GPT-2's 50256, which must fit too (it does not fit a smaller vocabulary).
 */
function tokenId(json: Json, name: string, vocabSize: number, source: string): number | null {
  const value = field(json, name, source);
  if (value === null) return null;
  if (value === undefined) {
    if (END_OF_TEXT < vocabSize) return END_OF_TEXT;
    throw configError(
      source,
      `"${name}" is absent, and its default ${END_OF_TEXT} is outside the vocabulary ` +
        `("vocab_size" ${vocabSize}): set it in the config (null: the model has none)`,
    );
  }
  if (typeof value !== "number") {
    throw configTypeError(source, `"${name}" must be a number or null, got ${kindOf(value)}`);
  }
  if (!Number.isInteger(value) || value < 0 || value >= vocabSize) {
    throw configError(
      source,
      `"${name}" must be a token id in 0..${vocabSize - 1} ("vocab_size" ${vocabSize}), ` +
        `got ${describe(value)}`,
    );
  }
  return value;
}

/** Reads an optional boolean field; absent gives `fallback`. */
function optionalBool(json: Json, name: string, source: string, fallback: boolean): boolean {
  const value = field(json, name, source);
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") {
    throw configTypeError(source, `"${name}" must be a boolean, got ${kindOf(value)}`);
  }
  return value;
}

/** Rejects config flags that change the math away from plain GPT-2. */
function checkArchitecture(json: Json, source: string): void {
  const modelType = field(json, "model_type", source);
  if (modelType !== undefined && modelType !== "gpt2") {
    throw configError(
      source,
      `"model_type" is ${describe(modelType)}, only "gpt2" is supported`,
    );
  }
  if (!optionalBool(json, "scale_attn_weights", source, true)) {
    throw configError(
      source,
      `"scale_attn_weights" is false: unscaled attention scores are not supported`,
    );
  }
  if (optionalBool(json, "scale_attn_by_inverse_layer_idx", source, false)) {
    throw configError(
      source,
      `"scale_attn_by_inverse_layer_idx" is true: per-layer score scaling is not supported`,
    );
  }
  if (optionalBool(json, "add_cross_attention", source, false)) {
    throw configError(source, `"add_cross_attention" is true: cross-attention is not supported`);
  }
}

/** Reads `activation_function` (default `gelu_new`, as in HF's GPT2Config). */
function parseActivation(json: Json, source: string): "gelu_new" {
  const value = field(json, "activation_function", source) ?? "gelu_new";
  if (typeof value !== "string" || !TANH_GELUS.includes(value)) {
    throw configError(
      source,
      `"activation_function" is ${describe(value)}, supported: ${TANH_GELUS.join(", ")}`,
    );
  }
  return "gelu_new";
}

/** Reads `layer_norm_epsilon` (default 1e-5), a normal f32 in the range of the limits. */
function parseEpsilon(json: Json, source: string): number {
  const value = field(json, "layer_norm_epsilon", source) ?? 1e-5;
  if (typeof value !== "number") {
    throw configTypeError(
      source,
      `"layer_norm_epsilon" must be a number, got ${kindOf(value)}`,
    );
  }
  const [low, high] = CONFIG_LIMITS.epsilon;
  if (!(value >= low && value <= high)) {
    throw configError(
      source,
      `"layer_norm_epsilon" must be a number in [${low.toExponential(3)}, ${high}] ` +
        `(a normal f32), got ${describe(value)}`,
    );
  }
  return value;
}

/** Reads `n_inner`: null or absent means `4 * n_embd`; a multiple of 4 like n_embd. */
function parseInner(json: Json, nEmbd: number, source: string): number {
  const value = field(json, "n_inner", source);
  if (value === undefined || value === null) return 4 * nEmbd;
  const nInner = boundedInt(json, "n_inner", CONFIG_LIMITS.nInner, source);
  if (nInner % 4 !== 0) {
    throw configError(
      source,
      `"n_inner" (${nInner}) must be a multiple of 4: the kernels read c_proj's rows as vec4<f32>`,
    );
  }
  return nInner;
}

/** Rejects a matrix (or cache plane) of `rows` × `cols` f32 values over the buffer limit. */
function checkMatrix(rows: number, cols: number, what: string, source: string): void {
  const bytes = rows * cols * 4;
  if (bytes > CONFIG_LIMITS.matrixBytes) {
    throw configError(
      source,
      `${what} = ${rows} × ${cols} f32 values (${(bytes / 2 ** 30).toFixed(1)} GiB) exceed ` +
        `the 2 GiB a WebGPU buffer can hold`,
    );
  }
}

/**
 * Parses and validates a HuggingFace GPT-2 `config.json` object.
 *
 * `dtype` / `torch_dtype` are ignored (the weights file carries its own dtypes), and
 * `n_ctx` is ignored in favour of `n_positions`. Every size is bounded by
 * {@link CONFIG_LIMITS}, `head_dim` = n_embd / n_head and `n_inner` must be multiples of 4
 * (the kernels read vec4<f32>), and bos/eos ids must lie in the vocabulary.
 *
 * @param json The parsed JSON value.
 * @param source Where it came from (a file path); every error message starts with it.
 * @throws {TypeError} naming the source and field for a value of the wrong type (a string
 * where a number belongs, a BigInt passed through the API, a config that is not an object).
 * @throws {Error} naming the source and the offending fields for any other bad value.
 */
export function parseConfig(json: unknown, source: string): GPT2Config {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw configTypeError(source, `config must be a JSON object, got ${kindOf(json)}`);
  }
  const obj = json as Json;
  checkArchitecture(obj, source);
  const nEmbd = boundedInt(obj, "n_embd", CONFIG_LIMITS.nEmbd, source);
  const nHead = boundedInt(obj, "n_head", nEmbd, source);
  if (nEmbd % nHead !== 0) {
    throw configError(source, `"n_embd" (${nEmbd}) must be divisible by "n_head" (${nHead})`);
  }
  const headDim = nEmbd / nHead;
  if (headDim % 4 !== 0) {
    throw configError(
      source,
      `head_dim = "n_embd" / "n_head" = ${nEmbd} / ${nHead} = ${headDim} must be a multiple ` +
        `of 4: the attention kernels read each head as vec4<f32>`,
    );
  }
  const vocabSize = boundedInt(obj, "vocab_size", CONFIG_LIMITS.vocabSize, source);
  const nPositions = boundedInt(obj, "n_positions", CONFIG_LIMITS.nPositions, source);
  const nInner = parseInner(obj, nEmbd, source);
  checkMatrix(nEmbd, 3 * nEmbd, `c_attn ("n_embd" × 3·"n_embd")`, source);
  checkMatrix(nEmbd, nInner, `c_fc ("n_embd" × "n_inner")`, source);
  checkMatrix(nPositions, nEmbd, `wpe and each K/V cache ("n_positions" × "n_embd")`, source);
  return {
    vocabSize,
    nPositions,
    nEmbd,
    nLayer: boundedInt(obj, "n_layer", CONFIG_LIMITS.nLayer, source),
    nHead,
    nInner,
    headDim,
    layerNormEpsilon: parseEpsilon(obj, source),
    activation: parseActivation(obj, source),
    tieWordEmbeddings: optionalBool(obj, "tie_word_embeddings", source, true),
    bosTokenId: tokenId(obj, "bos_token_id", vocabSize, source),
    eosTokenId: tokenId(obj, "eos_token_id", vocabSize, source),
  };
}

/**
 * Throws unless every buffer of a model with `config` that is not split into chunks fits a
 * binding of `maxBindingBytes` (a device's `maxStorageBufferBindingSize`, e.g. `Gpu.maxBinding`:
 * 128 MiB on llvmpipe): the c_attn, c_fc and c_proj weights, wpe and each layer's K/V cache.
 * The message names `source` and the config fields.
 */
export function checkConfigFits(config: GPT2Config, maxBindingBytes: number, source: string): void {
  const { nEmbd: C, nInner: I, nPositions: P } = config;
  const buffers: [string, number][] = [
    [`c_attn ("n_embd" × 3·"n_embd" = ${C} × ${3 * C})`, C * 3 * C],
    [`c_fc ("n_embd" × "n_inner" = ${C} × ${I})`, C * I],
    [`wpe and each K/V cache ("n_positions" × "n_embd" = ${P} × ${C})`, P * C],
  ];
  for (const [what, values] of buffers) {
    if (values * 4 > maxBindingBytes) {
      throw configError(
        source,
        `${what} f32 values (${(values * 4 / 2 ** 20).toFixed(1)} MiB) exceed this ` +
          `adapter's largest binding (${(maxBindingBytes / 2 ** 20).toFixed(0)} MiB)`,
      );
    }
  }
}

/** Largest config.json read, in bytes: a real one is about 1 KB. */
export const MAX_CONFIG_BYTES = 2 ** 20;

/**
 * Reads and validates a HuggingFace GPT-2 `config.json` file. Only a regular file of at most
 * {@link MAX_CONFIG_BYTES} is read, so a path to `/dev/zero` or a huge file fails at once.
 *
 * @param path Path of the JSON file.
 * @throws {Error} naming the path when the file is missing, too big, not JSON, or invalid.
 */
export async function loadConfig(path: string): Promise<GPT2Config> {
  let bytes: Uint8Array;
  try {
    bytes = await readBytes(path, { maxBytes: MAX_CONFIG_BYTES });
  } catch (err) {
    throw new Error(`${path}: cannot read config: ${clip((err as Error).message)}`, {
      cause: err,
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new Error(`${path}: config is not valid JSON: ${clip((err as Error).message)}`, {
      cause: err,
    });
  }
  return parseConfig(json, path);
}

/** Builds a config for one of the OpenAI sizes (vocab 50257, 1024 positions, tied head). */
function openAISize(nLayer: number, nEmbd: number, nHead: number): GPT2Config {
  return {
    vocabSize: 50257,
    nPositions: 1024,
    nEmbd,
    nLayer,
    nHead,
    nInner: 4 * nEmbd,
    headDim: nEmbd / nHead,
    layerNormEpsilon: 1e-5,
    activation: "gelu_new",
    tieWordEmbeddings: true,
    bosTokenId: END_OF_TEXT,
    eosTokenId: END_OF_TEXT,
  };
}

/** The configs of the GPT-2 checkpoints on the HuggingFace hub, by repository name. */
export const GPT2_SIZES: Readonly<
  Record<"gpt2" | "gpt2-medium" | "gpt2-large" | "gpt2-xl" | "distilgpt2", GPT2Config>
> = {
  "gpt2": openAISize(12, 768, 12),
  "gpt2-medium": openAISize(24, 1024, 16),
  "gpt2-large": openAISize(36, 1280, 20),
  "gpt2-xl": openAISize(48, 1600, 25),
  "distilgpt2": openAISize(6, 768, 12),
};

/**
 * Number of parameters of the model: embeddings, blocks and final LayerNorm, plus a
 * separate `[vocabSize, nEmbd]` LM head only when `tieWordEmbeddings` is false.
 * Buffers (the causal mask) are not parameters. `gpt2` gives 124,439,808.
 */
export function parameterCount(c: GPT2Config): number {
  const C = c.nEmbd;
  const layerNorm = 2 * C;
  const attention = (C * 3 * C + 3 * C) + (C * C + C);
  const mlp = (C * c.nInner + c.nInner) + (c.nInner * C + C);
  const block = 2 * layerNorm + attention + mlp;
  const embeddings = c.vocabSize * C + c.nPositions * C;
  const lmHead = c.tieWordEmbeddings ? 0 : c.vocabSize * C;
  return embeddings + c.nLayer * block + layerNorm + lmHead;
}
