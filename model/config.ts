/**
 * GPT-2 hyper-parameters, parsed and validated from a HuggingFace `config.json`.
 *
 * Only the architecture that the kernels implement is accepted: a plain GPT-2 with
 * `gelu_new`, attention scaled by `1/sqrt(head_dim)` and no per-layer score scaling.
 * Anything else is rejected with an error that names the file and the field.
 *
 * @module
 */

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
  /** Beginning-of-sequence token id (`bos_token_id`, default 50256). */
  bosTokenId: number;
  /** End-of-sequence token id (`eos_token_id`, default 50256). */
  eosTokenId: number;
}

/** The `<|endoftext|>` id of the GPT-2 vocabulary, used when a config gives no bos/eos id. */
const END_OF_TEXT = 50256;

/** HF `activation_function` values that are the tanh-approximated GELU. */
const TANH_GELUS = ["gelu_new", "gelu_pytorch_tanh"];

type Json = Record<string, unknown>;

/** Builds the error thrown for a bad config: the message starts with the source path. */
function configError(source: string, message: string): Error {
  return new Error(`${source}: ${message}`);
}

/** Reads a required positive integer field. */
function positiveInt(json: Json, field: string, source: string): number {
  const value = json[field];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    const got = value === undefined ? "it is missing" : `got ${JSON.stringify(value)}`;
    throw configError(source, `"${field}" must be a positive integer, ${got}`);
  }
  return value;
}

/** Reads an optional non-negative integer field; absent or null gives `fallback`. */
function optionalTokenId(json: Json, field: string, source: string, fallback: number): number {
  const value = json[field];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw configError(
      source,
      `"${field}" must be a non-negative integer or null, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** Reads an optional boolean field; absent gives `fallback`. */
function optionalBool(json: Json, field: string, source: string, fallback: boolean): boolean {
  const value = json[field];
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") {
    throw configError(source, `"${field}" must be a boolean, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Rejects config flags that change the math away from plain GPT-2. */
function checkArchitecture(json: Json, source: string): void {
  if (json.model_type !== undefined && json.model_type !== "gpt2") {
    throw configError(
      source,
      `"model_type" is ${JSON.stringify(json.model_type)}, only "gpt2" is supported`,
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
  const value = json.activation_function ?? "gelu_new";
  if (typeof value !== "string" || !TANH_GELUS.includes(value)) {
    throw configError(
      source,
      `"activation_function" is ${JSON.stringify(value)}, supported: ${TANH_GELUS.join(", ")}`,
    );
  }
  return "gelu_new";
}

/** Reads `layer_norm_epsilon` (default 1e-5). */
function parseEpsilon(json: Json, source: string): number {
  const value = json.layer_norm_epsilon ?? 1e-5;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw configError(
      source,
      `"layer_norm_epsilon" must be a positive number, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** Reads `n_inner`: null or absent means `4 * n_embd`. */
function parseInner(json: Json, nEmbd: number, source: string): number {
  if (json.n_inner === undefined || json.n_inner === null) return 4 * nEmbd;
  return positiveInt(json, "n_inner", source);
}

/**
 * Parses and validates a HuggingFace GPT-2 `config.json` object.
 *
 * `dtype` / `torch_dtype` are ignored (the weights file carries its own dtypes), and
 * `n_ctx` is ignored in favour of `n_positions`.
 *
 * @param json The parsed JSON value.
 * @param source Where it came from (a file path); every error message starts with it.
 * @throws {Error} naming the source and the offending field.
 */
export function parseConfig(json: unknown, source: string): GPT2Config {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw configError(source, "config must be a JSON object");
  }
  const obj = json as Json;
  checkArchitecture(obj, source);
  const nEmbd = positiveInt(obj, "n_embd", source);
  const nHead = positiveInt(obj, "n_head", source);
  if (nEmbd % nHead !== 0) {
    throw configError(source, `"n_embd" (${nEmbd}) must be divisible by "n_head" (${nHead})`);
  }
  if (nEmbd % 4 !== 0) {
    throw configError(
      source,
      `"n_embd" (${nEmbd}) must be a multiple of 4: the kernels read rows as vec4<f32>`,
    );
  }
  return {
    vocabSize: positiveInt(obj, "vocab_size", source),
    nPositions: positiveInt(obj, "n_positions", source),
    nEmbd,
    nLayer: positiveInt(obj, "n_layer", source),
    nHead,
    nInner: parseInner(obj, nEmbd, source),
    headDim: nEmbd / nHead,
    layerNormEpsilon: parseEpsilon(obj, source),
    activation: parseActivation(obj, source),
    tieWordEmbeddings: optionalBool(obj, "tie_word_embeddings", source, true),
    bosTokenId: optionalTokenId(obj, "bos_token_id", source, END_OF_TEXT),
    eosTokenId: optionalTokenId(obj, "eos_token_id", source, END_OF_TEXT),
  };
}

/**
 * Reads and validates a HuggingFace GPT-2 `config.json` file.
 *
 * @param path Path of the JSON file.
 * @throws {Error} naming the path when the file is missing, is not JSON, or is invalid.
 */
export async function loadConfig(path: string): Promise<GPT2Config> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`${path}: cannot read config: ${(err as Error).message}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: config is not valid JSON: ${(err as Error).message}`, {
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
