/**
 * HuggingFace GPT-2 weights as typed CPU arrays.
 *
 * Reads `GPT2LMHeadModel` checkpoints in both key layouts: `transformer.h.N.…` (what
 * `save_pretrained` writes) and the hub's bare `h.N.…`. Every tensor is checked for
 * presence and exact shape before anything is returned. Also builds seeded random weights
 * for benchmarks and tests.
 *
 * Shapes use C = nEmbd, V = vocabSize, P = nPositions, I = nInner.
 *
 * @module
 */

import { type GPT2Config, loadConfig } from "./config.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { clip } from "../base/describe.ts";
import { joinPath, readDir } from "../base/files.ts";
import { Rng } from "../base/rng.ts";

/** One Conv1D / Linear layer: y = x @ weight + bias, weight stored [in, out] as in HF Conv1D. */
export interface Linear {
  /** [inFeatures, outFeatures], row-major. */
  weight: Float32Array;
  /** [outFeatures] */
  bias: Float32Array;
  /** Rows of `weight`. */
  inFeatures: number;
  /** Columns of `weight`. */
  outFeatures: number;
}

/** Scale and shift of one LayerNorm. */
export interface LayerNormWeights {
  /** [C] */
  weight: Float32Array;
  /** [C] */
  bias: Float32Array;
}

/** The weights of one transformer block. */
export interface BlockWeights {
  /** LayerNorm before attention (`ln_1`). */
  ln1: LayerNormWeights;
  /** `cAttn`: [C, 3C] with output columns [Q | K | V]; `cProj`: [C, C]. */
  attn: { cAttn: Linear; cProj: Linear };
  /** LayerNorm before the MLP (`ln_2`). */
  ln2: LayerNormWeights;
  /** `cFc`: [C, I]; `cProj`: [I, C]. */
  mlp: { cFc: Linear; cProj: Linear };
}

/** All weights of a GPT-2 language model. */
export interface GPT2Weights {
  /** Token embedding, [V, C]. */
  wte: Float32Array;
  /** Position embedding, [P, C]. */
  wpe: Float32Array;
  /** One entry per layer. */
  blocks: BlockWeights[];
  /** Final LayerNorm. */
  lnF: LayerNormWeights;
  /**
   * [V, C] (nn.Linear layout [out, in]) when the checkpoint has its own untied
   * `lm_head.weight`; null when the LM head is tied to `wte`.
   */
  lmHead: Float32Array | null;
}

/** Name of the LM head tensor (top level in GPT2LMHeadModel, in both layouts). */
const LM_HEAD = "lm_head.weight";

/** The `transformer.` prefix of `save_pretrained` files, or "" for the hub's bare keys. */
function detectPrefix(file: SafetensorsFile): string {
  for (const name of file.tensors.keys()) {
    if (name.startsWith("transformer.")) return "transformer.";
  }
  return "";
}

/** Reads tensors by key with shape checks, remembering which keys were used. */
class CheckedReader {
  readonly used = new Set<string>();

  constructor(readonly file: SafetensorsFile) {}

  /**
   * The tensor `key` as float32; it must exist with exactly `shape` and hold only finite
   * values (a NaN or infinity would make every logit non-finite).
   */
  tensor(key: string, shape: number[]): Float32Array {
    this.checkShape(key, shape);
    this.used.add(key);
    return this.file.finiteF32(key);
  }

  /** Throws unless the tensor `key` exists with exactly `shape`. */
  checkShape(key: string, shape: number[]): void {
    const { source } = this.file;
    if (!this.file.has(key)) {
      throw new Error(`${source}: missing tensor "${key}" (expected shape [${shape}])`);
    }
    const actual = this.file.info(key).shape;
    if (actual.length !== shape.length || actual.some((d, i) => d !== shape[i])) {
      throw new Error(
        `${source}: tensor "${key}" has shape [${clip(String(actual))}], expected [${shape}]`,
      );
    }
  }

  /** A Conv1D layer `<key>.weight` [inF, outF] and `<key>.bias` [outF]. */
  linear(key: string, inFeatures: number, outFeatures: number): Linear {
    return {
      weight: this.tensor(`${key}.weight`, [inFeatures, outFeatures]),
      bias: this.tensor(`${key}.bias`, [outFeatures]),
      inFeatures,
      outFeatures,
    };
  }

  /** A LayerNorm `<key>.weight` and `<key>.bias`, both [width]. */
  layerNorm(key: string, width: number): LayerNormWeights {
    return {
      weight: this.tensor(`${key}.weight`, [width]),
      bias: this.tensor(`${key}.bias`, [width]),
    };
  }
}

/** Reads block `index` with keys under `<prefix>h.<index>.`. */
function readBlock(
  reader: CheckedReader,
  config: GPT2Config,
  prefix: string,
  index: number,
): BlockWeights {
  const h = `${prefix}h.${index}.`;
  const C = config.nEmbd;
  return {
    ln1: reader.layerNorm(`${h}ln_1`, C),
    attn: {
      cAttn: reader.linear(`${h}attn.c_attn`, C, 3 * C),
      cProj: reader.linear(`${h}attn.c_proj`, C, C),
    },
    ln2: reader.layerNorm(`${h}ln_2`, C),
    mlp: {
      cFc: reader.linear(`${h}mlp.c_fc`, C, config.nInner),
      cProj: reader.linear(`${h}mlp.c_proj`, config.nInner, C),
    },
  };
}

/**
 * The lm_head weight, or null when it is tied to `wte`. As in HF, `tie_word_embeddings: true`
 * ties it even when the file also stores an `lm_head.weight`; untied needs that tensor.
 */
function readLmHead(reader: CheckedReader, config: GPT2Config): Float32Array | null {
  const has = reader.file.has(LM_HEAD);
  if (config.tieWordEmbeddings) {
    if (has) { // shape-checked, then unused
      reader.checkShape(LM_HEAD, [config.vocabSize, config.nEmbd]);
      reader.used.add(LM_HEAD);
    }
    return null;
  }
  if (!has) {
    throw new Error(
      `${reader.file.source}: tie_word_embeddings is false but there is no ${LM_HEAD}`,
    );
  }
  return reader.tensor(LM_HEAD, [config.vocabSize, config.nEmbd]);
}

/** Rejects tensors that are neither read nor the hub's attention-mask buffers. */
function checkNoExtras(reader: CheckedReader, config: GPT2Config, prefix: string): void {
  const ignored = new Set<string>();
  for (let i = 0; i < config.nLayer; i++) {
    ignored.add(`${prefix}h.${i}.attn.bias`);
    ignored.add(`${prefix}h.${i}.attn.masked_bias`);
  }
  const extras = [...reader.file.tensors.keys()].filter(
    (name) => !reader.used.has(name) && !ignored.has(name),
  );
  if (extras.length === 0) return;
  const shown = extras.slice(0, 4).map((name) => JSON.stringify(clip(name, 40))).join(", ");
  const more = extras.length > 4 ? ` and ${extras.length - 4} more` : "";
  throw new Error(
    `${reader.file.source}: unexpected tensors ${shown}${more} ` +
      `(not a GPT-2 checkpoint matching its config?)`,
  );
}

/**
 * Extracts and shape-checks GPT-2 weights from a safetensors file.
 *
 * F16/BF16 tensors are converted to float32; F32 tensors may be views of the file's bytes.
 * `attn.bias` / `attn.masked_bias` buffers are ignored; any other unknown key is an error.
 * Every tensor read must be finite (checking costs about 75 ms on GPT-2 small's 124M
 * weights, a fraction of reading them).
 *
 * @throws {Error} naming the file and tensor key for a missing, misshapen or extra tensor,
 * and the first bad element of a tensor holding NaN or ±Infinity.
 */
export function weightsFromSafetensors(file: SafetensorsFile, config: GPT2Config): GPT2Weights {
  const prefix = detectPrefix(file);
  const reader = new CheckedReader(file);
  const C = config.nEmbd;
  const wte = reader.tensor(`${prefix}wte.weight`, [config.vocabSize, C]);
  const wpe = reader.tensor(`${prefix}wpe.weight`, [config.nPositions, C]);
  const blocks: BlockWeights[] = [];
  for (let i = 0; i < config.nLayer; i++) blocks.push(readBlock(reader, config, prefix, i));
  const lnF = reader.layerNorm(`${prefix}ln_f`, C);
  const lmHead = readLmHead(reader, config);
  checkNoExtras(reader, config, prefix);
  return { wte, wpe, blocks, lnF, lmHead };
}

/** Picks the weights file of a checkpoint directory (links followed). */
async function findWeightsFile(dir: string): Promise<string> {
  let candidates: string[];
  try {
    candidates = (await readDir(dir)).filter((name) =>
      name.endsWith(".safetensors") && name !== "reference.safetensors"
    );
  } catch (err) {
    throw new Error(`${dir}: cannot read checkpoint directory: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (candidates.includes("model.safetensors")) return joinPath(dir, "model.safetensors");
  if (candidates.length === 1) return joinPath(dir, candidates[0]);
  if (candidates.length === 0) throw new Error(`${dir}: no .safetensors weights file`);
  const listed = candidates.sort().slice(0, 4).map((name) => clip(name, 40)).join(", ");
  throw new Error(
    `${dir}: several .safetensors files (${listed}${candidates.length > 4 ? ", …" : ""}) ` +
      `and no model.safetensors; sharded checkpoints are not supported`,
  );
}

/**
 * Loads a checkpoint directory: `config.json` plus its weights file, which is
 * `model.safetensors` if present, else the only `*.safetensors` other than
 * `reference.safetensors`.
 *
 * @param options.onProgress Called as the weights file's bytes arrive (a page's progress bar).
 * @returns The config, the weights and the path of the weights file (`source`).
 */
export async function loadCheckpoint(
  dir: string,
  options: { onProgress?: (loaded: number, total: number) => void } = {},
): Promise<{ config: GPT2Config; weights: GPT2Weights; source: string }> {
  const config = await loadConfig(joinPath(dir, "config.json"));
  const source = await findWeightsFile(dir);
  const file = await SafetensorsFile.open(source, options);
  return { config, weights: weightsFromSafetensors(file, config), source };
}

/**
 * Fills `out` with N(0, std²) draws by Marsaglia's polar form of Box-Muller: a point
 * uniform in the unit disc gives two independent normals with one log and one sqrt
 * (no sin/cos), which keeps 124M draws to about a second.
 */
function fillNormal(out: Float32Array, std: number, rng: Rng): Float32Array {
  let i = 0;
  while (i < out.length) {
    const x = (rng.nextUint32() | 0) * 2 ** -31; // [-1, 1)
    const y = (rng.nextUint32() | 0) * 2 ** -31;
    const r2 = x * x + y * y;
    if (r2 >= 1 || r2 === 0) continue; // outside the disc (about 21% of points)
    const scale = std * Math.sqrt(-2 * Math.log(r2) / r2);
    out[i++] = x * scale;
    if (i < out.length) out[i++] = y * scale;
  }
  return out;
}

/** Fills `out` with `center + U(-halfWidth, halfWidth)`. */
function fillUniform(
  out: Float32Array,
  center: number,
  halfWidth: number,
  rng: Rng,
): Float32Array {
  for (let i = 0; i < out.length; i++) out[i] = center + halfWidth * (2 * rng.next() - 1);
  return out;
}

/** Fills `out` with random sign × U(0.02, 0.1): small biases that are never zero. */
function fillBias(out: Float32Array, rng: Rng): Float32Array {
  for (let i = 0; i < out.length; i++) {
    const magnitude = 0.02 + 0.08 * rng.next();
    out[i] = rng.nextUint32() & 1 ? magnitude : -magnitude;
  }
  return out;
}

/** A random Conv1D layer: weight N(0, 1/in), small nonzero bias. */
function randomLinear(inFeatures: number, outFeatures: number, rng: Rng): Linear {
  return {
    weight: fillNormal(new Float32Array(inFeatures * outFeatures), 1 / Math.sqrt(inFeatures), rng),
    bias: fillBias(new Float32Array(outFeatures), rng),
    inFeatures,
    outFeatures,
  };
}

/** A random LayerNorm: weight 1 + U(-0.1, 0.1), small nonzero bias. */
function randomLayerNorm(width: number, rng: Rng): LayerNormWeights {
  return {
    weight: fillUniform(new Float32Array(width), 1, 0.1, rng),
    bias: fillBias(new Float32Array(width), rng),
  };
}

/**
 * Seeded random GPT-2 weights, deterministic for a given config and seed.
 *
 * One xoshiro128** stream (seeded via splitmix32) is drawn in this order: wte, wpe, then
 * per block ln1, c_attn, attn.c_proj, ln2, c_fc, mlp.c_proj (weight then bias), then
 * ln_f, then lm_head if untied. Normals come from the polar Box-Muller method. The scheme
 * follows the tiny-gpt2 fixture rather than HF's std-0.02 init, so activations are O(1)
 * and every parameter matters numerically:
 * - wte (and an untied lm_head) ~ N(0, 1/C): logits have std ≈ 1;
 * - wpe ~ N(0, (1.5/√C)²);
 * - Conv1D weights [in, out] ~ N(0, 1/in), so each layer roughly preserves variance;
 * - LayerNorm weights 1 + U(-0.1, 0.1);
 * - every bias (LayerNorm and Conv1D) random sign × U(0.02, 0.1).
 */
export function randomWeights(config: GPT2Config, seed: number): GPT2Weights {
  const rng = new Rng(seed);
  const C = config.nEmbd;
  const V = config.vocabSize;
  const wte = fillNormal(new Float32Array(V * C), 1 / Math.sqrt(C), rng);
  const wpe = fillNormal(new Float32Array(config.nPositions * C), 1.5 / Math.sqrt(C), rng);
  const blocks: BlockWeights[] = [];
  for (let i = 0; i < config.nLayer; i++) {
    blocks.push({
      ln1: randomLayerNorm(C, rng),
      attn: { cAttn: randomLinear(C, 3 * C, rng), cProj: randomLinear(C, C, rng) },
      ln2: randomLayerNorm(C, rng),
      mlp: { cFc: randomLinear(C, config.nInner, rng), cProj: randomLinear(config.nInner, C, rng) },
    });
  }
  const lnF = randomLayerNorm(C, rng);
  const lmHead = config.tieWordEmbeddings
    ? null
    : fillNormal(new Float32Array(V * C), 1 / Math.sqrt(C), rng);
  return { wte, wpe, blocks, lnF, lmHead };
}

/**
 * GPT-2's own initialization, for training from scratch (as nanoGPT's `_init_weights`):
 * every Linear weight and both embeddings ~ N(0, 0.02²), each residual projection
 * (attn.c_proj, mlp.c_proj) ~ N(0, (0.02/√(2·n_layer))²), biases 0, LayerNorms 1 and 0.
 * Deterministic for a given config and seed.
 */
export function gpt2Init(config: GPT2Config, seed: number): GPT2Weights {
  const rng = new Rng(seed);
  const { nEmbd: C, vocabSize: V, nInner: I } = config;
  const normal = (n: number, std: number) => fillNormal(new Float32Array(n), std, rng);
  const projStd = 0.02 / Math.sqrt(2 * config.nLayer);
  const linear = (inF: number, outF: number, std = 0.02): Linear => ({
    weight: normal(inF * outF, std),
    bias: new Float32Array(outF),
    inFeatures: inF,
    outFeatures: outF,
  });
  const layerNorm = (): LayerNormWeights => ({
    weight: new Float32Array(C).fill(1),
    bias: new Float32Array(C),
  });
  const wte = normal(V * C, 0.02);
  const wpe = normal(config.nPositions * C, 0.02);
  const blocks = Array.from({ length: config.nLayer }, (): BlockWeights => ({
    ln1: layerNorm(),
    attn: { cAttn: linear(C, 3 * C), cProj: linear(C, C, projStd) },
    ln2: layerNorm(),
    mlp: { cFc: linear(C, I), cProj: linear(I, C, projStd) },
  }));
  const lmHead = config.tieWordEmbeddings ? null : normal(V * C, 0.02);
  return { wte, wpe, blocks, lnF: layerNorm(), lmHead };
}
