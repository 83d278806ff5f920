/**
 * kvgpt: GPT-2 whose every kernel is WGSL on WebGPU, built to see and measure the KV cache.
 *
 * ```ts
 * import { generate, Gpu, openModel, tokenizerFor, TRAINED } from "./mod.ts";
 * using gpu = await Gpu.open();
 * using model = (await openModel(gpu, TRAINED)).model; // the char model trained here
 * using cache = model.newCache();
 * const tok = await tokenizerFor(TRAINED);
 * const out = await generate(model, cache, tok.encode("ROMEO:\n"), {
 *   maxTokens: 40, temperature: 0.8, topK: 40, topP: 1, seed: 0, useCache: true, stopAtEos: false,
 * });
 * console.log(tok.decode(out.ids), cache.bytesUsed);
 * ```
 *
 * @module
 */
export {
  Gpu,
  type GpuOptions,
  type KernelDesign,
  type KernelTime,
  NoAdapterError,
  type RunOptions,
  type Tensor,
  type WebGpuImplementation,
} from "./kernels/gpu.ts";
export type { WeightFormat } from "./kernels/matmul.ts";
export { GPT2, type ModelOptions } from "./model/gpt2.ts";
export {
  type DecodePath,
  type ForwardOptions,
  type ForwardOutput,
  Runner,
  type RunnerOptions,
} from "./run/runner.ts";
export {
  type CacheDType,
  KVCache,
  type KVCacheOptions,
  type LayerCache,
  type LayerKV,
} from "./model/kv_cache.ts";
export {
  GPT2_SIZES,
  type GPT2Config,
  loadConfig,
  parameterCount,
  parseConfig,
} from "./model/config.ts";
export { gpt2Init, type GPT2Weights, loadCheckpoint, randomWeights } from "./model/weights.ts";
export { SafetensorsFile, writeSafetensors } from "./io/safetensors.ts";
export {
  loadSnapshot,
  modelFingerprint,
  type RestoredSnapshot,
  saveSnapshot,
  SNAPSHOT_FORMAT,
  SNAPSHOT_VERSION,
  SnapshotError,
} from "./model/snapshot.ts";
export {
  type BatchResult,
  generate,
  generateBatch,
  type GenerateOptions,
  type GenerateResult,
  greedyOptions,
  prefillPrefix,
} from "./run/generate.ts";
export { Rng } from "./base/rng.ts";
export { argmax, sampleToken, type SamplingOptions } from "./run/sampling.ts";
export { gpt2Tokenizer } from "./tokenizers/gpt2.ts";
export { TextStream, type Tokenizer } from "./tokenizers/tokenizer.ts";
export { CharTokenizer } from "./tokenizers/char.ts";
export { EMBEDDED, type OpenedModel, openModel, tokenizerFor, TRAINED } from "./run/open_model.ts";
export { ChatSession } from "./run/chat.ts";
export { downloadCheckpoint } from "./io/download.ts";
export { type ParityReport, runParity, TOLERANCE } from "./run/parity.ts";
export { CACHE_POLICIES, type CachePolicy, parseCachePolicy } from "./run/cache_policy.ts";
export { defaultWindow } from "./run/sliding_window.ts";
export { type Axis, lineChart, renderSvg } from "./io/chart.ts";
export {
  DEFAULT_TRAINER_OPTIONS,
  type StepOptions,
  Trainer,
  type TrainerOptions,
} from "./train/trainer.ts";
export { type GradcheckReport, runGradcheck } from "./train/gradcheck.ts";
export { resumeCheckpoint, saveCheckpoint, type TrainState } from "./train/checkpoint.ts";
export { cosineLr, type Schedule } from "./train/schedule.ts";
export { readText, sampleBatch, splitDataset } from "./train/data.ts";
