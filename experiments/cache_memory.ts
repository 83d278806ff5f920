/**
 * Experiment: how much memory the KV cache takes, for every GPT-2 size.
 *
 * Every token leaves one key and one value vector of n_embd numbers in each layer, so the
 * cache holds 2 · n_layer · n_embd · (bytes per element) per token, and n_positions times
 * that for a full context. The table is that arithmetic on GPT2_SIZES (and the model at
 * hand), in f32 and f16, next to the size of the weights: every cell can be checked by hand.
 * Then a real KVCache of each config is allocated on the GPU, one at a time, to show that
 * the formula is exactly what it allocates (f32: the kernels' dtype).
 *
 * Runs no forward pass: seconds with or without `--quick` (which only swaps the model at
 * hand for the tiny fixture).
 *
 * @module
 */
import { GPT2_SIZES, type GPT2Config, KVCache, parameterCount } from "../mod.ts";
import { mib, printTable, startExperiment, writeResults } from "./lib.ts";

const ex = await startExperiment({
  name: "cache_memory",
  about: "KV cache bytes per token and per full context, every GPT-2 size, f32 and f16",
  settings: () => ({}),
  warmup: false,
});

/** Bytes the cache holds per token: 2 · n_layer · n_embd · bytes per element. */
function bytesPerToken(c: GPT2Config, bytesPerElement: number): number {
  return 2 * c.nLayer * c.nEmbd * bytesPerElement;
}

/** What a real KVCache of `config` allocates on the GPU (then freed). */
function measuredBytes(config: GPT2Config): number {
  const cache = new KVCache(ex.gpu, config);
  const bytes = cache.bytesAllocated;
  cache.destroy();
  return bytes;
}

const here = ex.opened.model.config;
const configs: [string, GPT2Config][] = Object.entries(GPT2_SIZES);
if (!configs.some(([, c]) => JSON.stringify(c) === JSON.stringify(here))) {
  configs.push([ex.opened.name, here]);
}

const before = ex.gpu.bytesAllocated;
const sizes = configs.map(([name, c]) => {
  const f32 = bytesPerToken(c, 4);
  const f16 = bytesPerToken(c, 2);
  const measured = measuredBytes(c);
  return {
    name,
    nLayer: c.nLayer,
    nEmbd: c.nEmbd,
    nPositions: c.nPositions,
    bytesPerTokenF32: f32,
    bytesPerTokenF16: f16,
    fullContextF32: f32 * c.nPositions,
    fullContextF16: f16 * c.nPositions,
    weightsF32: parameterCount(c) * 4,
    measuredFullContextF32: measured,
    formulaEqualsAllocated: measured === f32 * c.nPositions,
  };
});
const after = ex.gpu.bytesAllocated;

printTable(
  [
    "model",
    "n_layer",
    "n_embd",
    "n_positions",
    "B/token f32",
    "B/token f16",
    "full MiB f32",
    "full MiB f16",
    "weights MiB f32",
    "allocated MiB",
    "= formula",
  ],
  sizes.map((s) => [
    s.name,
    s.nLayer,
    s.nEmbd,
    s.nPositions,
    s.bytesPerTokenF32,
    s.bytesPerTokenF16,
    mib(s.fullContextF32),
    mib(s.fullContextF16),
    mib(s.weightsF32),
    mib(s.measuredFullContextF32),
    s.formulaEqualsAllocated ? "yes" : "NO",
  ]),
);
console.log(
  "\nB/token = 2 (K and V) · n_layer · n_embd · bytes per element; full = B/token · n_positions",
);
console.log(`GPU bytes held before ${before}, after ${after}: every cache was freed`);

const bars = sizes.flatMap((s) => [
  { model: s.name, what: "KV cache, f32", mib: mib(s.fullContextF32) },
  { model: s.name, what: "KV cache, f16", mib: mib(s.fullContextF16) },
]);
await writeResults(
  ex,
  {
    formula: "bytes per token = 2 * n_layer * n_embd * bytes_per_element",
    gpuBytesBefore: before,
    gpuBytesAfter: after,
    sizes,
  },
  "KV cache of one full context (n_positions tokens), batch 1",
  {
    width: { step: 28 },
    height: 260,
    data: { values: bars },
    encoding: {
      x: { field: "model", type: "nominal", sort: null, title: null, axis: { labelAngle: 0 } },
      xOffset: { field: "what", sort: null },
      y: { field: "mib", type: "quantitative", title: "MiB" },
      color: { field: "what", sort: null, title: null },
    },
    layer: [
      { mark: "bar" },
      { mark: { type: "text", dy: -6, fontSize: 9 }, encoding: { text: { field: "mib" } } },
    ],
  },
);
