/**
 * Finds the model a command should run: a checkpoint folder, a hub name (downloaded, or
 * reused from a HuggingFace cache), or, when no weights are on disk, the embedded default:
 * GPT-2 small's architecture (124M) with seeded random weights.
 *
 * @module
 */
import type { Gpu } from "../kernels/gpu.ts";
import { GPT2_SIZES, parameterCount } from "../model/config.ts";
import { downloadCheckpoint, findInHfCache, resolveRepo } from "../io/download.ts";
import { exists, permitted, readDir } from "../base/files.ts";
import { GPT2 } from "../model/gpt2.ts";
import { Runner, type RunnerOptions } from "./runner.ts";
import { loadCheckpoint, randomWeights } from "../model/weights.ts";
import { CharTokenizer } from "../tokenizers/char.ts";
import { gpt2Tokenizer } from "../tokenizers/gpt2.ts";
import { type Tokenizer } from "../tokenizers/tokenizer.ts";

/** The name that selects the embedded random-weight model. */
export const EMBEDDED = "embedded";

/** Seed of the embedded model's weights. */
export const EMBEDDED_SEED = 1234;

/** The char-level GPT-2 trained here on Tiny Shakespeare (see its README). */
export const TRAINED = "data/shakespeare-char";

/** A model ready to run, with where it came from. */
export interface OpenedModel {
  model: Runner;
  /** Short name: a folder, a hub name, or "embedded". */
  name: string;
  /** One line saying what was loaded. */
  description: string;
  /** True for random weights (text is gibberish; timings and cache are real). */
  random: boolean;
  /** The folder's own tokenizer: char when it has vocab.json, else GPT-2's BPE. */
  tokenizer: Tokenizer;
}

/**
 * Where real GPT-2 small would be found without downloading: data/gpt2 or the HF cache. Only
 * looks where it may already read (and, for the HF cache, read the environment), so that a
 * plain `deno run` asks no question and falls back to the embedded model.
 */
export async function findLocalGpt2(): Promise<string | null> {
  if (permitted("read", "data/gpt2") && (await isCheckpoint("data/gpt2"))) {
    return "data/gpt2";
  }
  if (!permitted("read") || !permitted("env")) return null;
  return findInHfCache(resolveRepo("gpt2"));
}

/**
 * The model that speaks when none is named: real GPT-2 small if it is here, else the char
 * model trained here, else the embedded random 124M. Reads files only where allowed.
 */
export async function defaultSpeakingModel(): Promise<string> {
  const gpt2 = await findLocalGpt2();
  if (gpt2) return gpt2;
  if (permitted("read", TRAINED) && (await isCheckpoint(TRAINED))) return TRAINED;
  return EMBEDDED;
}

/**
 * The tokenizer of the model `spec` names: a char tokenizer when its folder has a
 * `vocab.json`, else GPT-2's BPE (hub names and the embedded model).
 */
export async function tokenizerFor(spec: string): Promise<Tokenizer> {
  if (spec !== EMBEDDED && (await exists(spec))) {
    const chars = await CharTokenizer.load(spec);
    if (chars) return chars;
  }
  return gpt2Tokenizer();
}

/**
 * Opens `spec`: a folder with config.json + *.safetensors, a hub name such as `gpt2` or
 * `owner/repo` (downloaded unless already local), or `embedded`. Without a spec: real GPT-2
 * small if present locally, else the embedded model.
 */
export async function openModel(
  gpu: Gpu,
  spec?: string,
  options: RunnerOptions = {},
): Promise<OpenedModel> {
  if (spec === undefined) spec = (await findLocalGpt2()) ?? EMBEDDED;
  if (spec === EMBEDDED) {
    const config = GPT2_SIZES.gpt2;
    const model = new Runner(
      new GPT2(gpu, config, randomWeights(config, EMBEDDED_SEED), options),
      options,
    );
    return {
      model,
      name: EMBEDDED,
      random: true,
      tokenizer: gpt2Tokenizer(),
      description: `embedded GPT-2 small architecture (124M) with seeded random weights ` +
        `(seed ${EMBEDDED_SEED}): the text is gibberish, timings and cache are real. ` +
        `For real weights: deno task download gpt2${weightsNote(options)}`,
    };
  }
  let dir = spec;
  let how = "";
  if (!(await isCheckpoint(spec))) {
    if (await exists(spec)) {
      throw new Error(`${spec}: not a checkpoint folder (needs config.json and *.safetensors)`);
    }
    if (!/^[\w.-]+(\/[\w.-]+)?$/.test(spec)) {
      throw new Error(`${spec}: no such checkpoint folder, and not a hub name such as gpt2`);
    }
    const got = await downloadCheckpoint(spec);
    dir = got.dir;
    how = got.fromCache
      ? " (from the HuggingFace cache)"
      : got.downloaded.length
      ? ` (downloaded ${got.downloaded.join(", ")})`
      : "";
  }
  const { config, weights } = await loadCheckpoint(dir);
  const chars = await CharTokenizer.load(dir);
  if (chars && chars.vocabSize !== config.vocabSize) {
    throw new Error(
      `${dir}/vocab.json: ${chars.vocabSize} characters, config.json has vocab_size ${config.vocabSize}`,
    );
  }
  const params = (parameterCount(config) / 1e6).toFixed(1);
  return {
    model: new Runner(new GPT2(gpu, config, weights, options), options),
    name: spec,
    random: false,
    tokenizer: chars ?? gpt2Tokenizer(),
    description: `${spec}${how}: ${config.nLayer} layers, ${config.nHead} heads, ` +
      `n_embd ${config.nEmbd}, ${params}M parameters, ${chars ? "char" : "GPT-2"} tokenizer, ` +
      `from ${dir}${weightsNote(options)}`,
  };
}

function weightsNote(options: RunnerOptions): string {
  return options.weights === "f16" ? "; weights stored as f16" : "";
}

async function isCheckpoint(dir: string): Promise<boolean> {
  if (!(await exists(`${dir}/config.json`))) return false;
  const names = await readDir(dir);
  return names.some((name) => name.endsWith(".safetensors") && name !== "reference.safetensors");
}
