/**
 * Experiment: how the KV cache grows as tokens are generated, and what growing costs.
 *
 * Prefills a short prompt, then decodes `--tokens` tokens greedily, three times over, each
 * with a different cache policy:
 * - preallocated: one buffer per layer for all n_positions rows, allocated once;
 * - grow ×2: starts at 4 rows and doubles when full (reallocate, copy the rows, free);
 * - grow exact: reallocates to exactly the rows needed at every step, as a dynamic cache
 *   that concatenates each new token (HF's DynamicCache) does.
 * At every step it records the cache length, the capacity, the bytes allocated per layer
 * and in total and the bytes used, read from the cache's own buffers, next to the formula
 * 2 · n_layer · T · n_embd · 4; and the time of the step (the reallocation, then the
 * forward). Times are medians over `--reps` runs after one warm-up run per policy. The GPU
 * bytes the process holds are read before and after the measured runs: they must match.
 *
 * Default (embedded 124M): a 10-token prompt, 32 new tokens, 3 reps: about 2 minutes here.
 * `--quick` (tiny fixture): 20 new tokens, a few seconds.
 *
 * @module
 */
import { argmax, gpt2Tokenizer, type KVCache, type KVCacheOptions } from "../mod.ts";
import { integer } from "../cli/usage.ts";
import { fitContext, median, mib, printTable, startExperiment, writeResults } from "./lib.ts";

const prompt = gpt2Tokenizer().encode("The KV cache grows by one row for every token");
const ex = await startExperiment({
  name: "cache_growth",
  about: "cache length and bytes per step: preallocated vs grown on demand",
  options: {
    tokens: { help: "N   decode steps after the prefill (default 32; --quick 20)" },
  },
  reps: 3,
  settings: (v, quick) => ({
    tokens: integer("--tokens", v.tokens ?? (quick ? "20" : "32"), 1, 1000),
  }),
  check: ({ tokens }, config) =>
    fitContext(
      `--tokens ${tokens} after a ${prompt.length}-token prompt`,
      prompt.length + tokens,
      config,
    ),
});
const { model } = ex.opened;
const { nLayer, nEmbd } = model.config;

const POLICIES: Record<string, KVCacheOptions> = {
  "preallocated": { policy: "preallocate" },
  "grow ×2": { policy: "grow", initialCapacity: 4, growthFactor: 2 },
  "grow exact": { policy: "grow", initialCapacity: 1, growthFactor: 1 },
};

/** 2 · n_layer · rows · n_embd · 4 bytes. */
const formula = (rows: number) => 2 * nLayer * rows * nEmbd * 4;

/** What one step (the prefill, then each decode step) did to the cache. */
interface Step {
  length: number;
  capacity: number;
  bytesPerLayer: number;
  bytesAllocated: number;
  bytesUsed: number;
  matchesFormula: boolean;
  grew: boolean;
  bytesCopied: number;
  reserveMs: number;
  forwardMs: number;
}

/** Prefill + greedy decode with one cache policy; the cache is freed at the end. */
async function run(options: KVCacheOptions): Promise<{ steps: Step[]; tokens: number[] }> {
  const cache = model.newCache(options);
  const steps: Step[] = [];
  const tokens: number[] = [];
  let input = prompt;
  try {
    for (let i = 0; i <= ex.settings.tokens; i++) {
      const { grew, copied, reserveMs } = reserve(cache, input.length);
      const t0 = performance.now();
      const { logits } = await model.forward(input, cache);
      const forwardMs = performance.now() - t0;
      steps.push({ ...account(cache), grew, bytesCopied: copied, reserveMs, forwardMs });
      input = [argmax(logits)];
      tokens.push(input[0]);
    }
  } finally {
    cache.destroy();
  }
  return { steps, tokens };
}

// Makes room for T more tokens ahead of the forward, to time the reallocation on its own.
function reserve(cache: KVCache, T: number) {
  const copied = cache.bytesUsed;
  const t0 = performance.now();
  const grew = cache.reserve(cache.length + T);
  return { grew, copied: grew ? copied : 0, reserveMs: performance.now() - t0 };
}

// The cache's own byte counts, and whether they equal the formula.
function account(cache: KVCache) {
  const [{ k, v }] = cache.layers;
  const matchesFormula = cache.bytesUsed === formula(cache.length) &&
    cache.bytesAllocated === formula(cache.capacity) &&
    cache.layers.every((l) => l.k.buffer.size + l.v.buffer.size === k.buffer.size + v.buffer.size);
  return {
    length: cache.length,
    capacity: cache.capacity,
    bytesPerLayer: k.buffer.size + v.buffer.size,
    bytesAllocated: cache.bytesAllocated,
    bytesUsed: cache.bytesUsed,
    matchesFormula,
  };
}

// Warm-up: one run per policy compiles every pipeline and records every plan shape.
for (const options of Object.values(POLICIES)) await run(options);

const gpuBytesBefore = ex.gpu.bytesAllocated;
// The policies take turns within each repetition, so a slow spell hits all of them alike.
const runs = Object.values(POLICIES).map(() => [] as Awaited<ReturnType<typeof run>>[]);
for (let r = 0; r < ex.reps; r++) {
  for (const [p, options] of Object.values(POLICIES).entries()) runs[p].push(await run(options));
}
const results = Object.entries(POLICIES).map(([name, options], p) => {
  const steps = runs[p][0].steps.map((s, i) => ({
    ...s,
    reserveMs: median(runs[p].map((r) => r.steps[i].reserveMs)),
    forwardMs: median(runs[p].map((r) => r.steps[i].forwardMs)),
    stepMs: median(runs[p].map((r) => r.steps[i].reserveMs + r.steps[i].forwardMs)),
  }));
  const decode = steps.slice(1);
  return {
    policy: name,
    options,
    tokens: runs[p][0].tokens,
    sameTokensEveryRun: runs[p].every((r) => r.tokens.join() === runs[p][0].tokens.join()),
    growths: steps.filter((s) => s.grew).length,
    bytesCopied: steps.reduce((sum, s) => sum + s.bytesCopied, 0),
    medianDecodeStepMs: median(decode.map((s) => s.stepMs)),
    medianGrowthStepMs: decode.some((s) => s.grew)
      ? median(decode.filter((s) => s.grew).map((s) => s.stepMs))
      : null,
    steps,
  };
});
const gpuBytesAfter = ex.gpu.bytesAllocated;

const [pre, double, exact] = results;
const shown = pre.steps.map((_, i) => i).filter((i) =>
  i === 0 || i % 8 === 0 || i === pre.steps.length - 1 || double.steps[i].grew
);
console.log("\nbytes per step (alloc = allocated; used = 2 · n_layer · length · n_embd · 4)");
printTable(
  [
    "step",
    "length",
    "used B",
    "prealloc B",
    "×2 cap",
    "×2 alloc B",
    "exact cap",
    "exact alloc B",
    "ms prealloc",
    "ms ×2",
    "ms exact",
  ],
  shown.map((i) => [
    i === 0 ? "prefill" : String(i),
    pre.steps[i].length,
    pre.steps[i].bytesUsed,
    pre.steps[i].bytesAllocated,
    double.steps[i].capacity,
    double.steps[i].bytesAllocated,
    exact.steps[i].capacity,
    exact.steps[i].bytesAllocated,
    pre.steps[i].stepMs,
    double.steps[i].stepMs,
    exact.steps[i].stepMs,
  ]),
);
console.log(`\nper policy (medians of ${ex.reps} runs; decode steps only)`);
printTable(
  ["policy", "ms/step", "ms/growth step", "growths", "bytes copied", "final MiB alloc", "formula"],
  results.map((r) => [
    r.policy,
    r.medianDecodeStepMs,
    r.medianGrowthStepMs ?? "-",
    r.growths,
    r.bytesCopied,
    mib(r.steps[r.steps.length - 1].bytesAllocated),
    r.steps.every((s) => s.matchesFormula) ? "exact" : "MISMATCH",
  ]),
);
const sameTokens = results.every((r) => r.tokens.join() === pre.tokens.join());
console.log(`\nsame tokens under every policy: ${sameTokens ? "yes" : "NO"}`);
console.log(
  `GPU bytes held before ${gpuBytesBefore}, after ${gpuBytesAfter}: ` +
    (gpuBytesBefore === gpuBytesAfter ? "no leak" : "LEAK"),
);

const USED = "used: 2·L·T·C·4 B";
const points = results.flatMap((r) =>
  r.steps.map((s, i) => ({
    policy: r.policy,
    length: s.length,
    allocatedMiB: s.bytesAllocated / 2 ** 20,
    stepMs: i === 0 ? null : s.stepMs,
  }))
);
const used = pre.steps.map((s) => ({
  policy: USED,
  length: s.length,
  allocatedMiB: s.bytesUsed / 2 ** 20,
}));
const x = { field: "length", type: "quantitative", title: "tokens in the cache" } as const;
const color = {
  field: "policy",
  type: "nominal",
  sort: null,
  title: null,
  legend: { labelLimit: 300 },
} as const;
await writeResults(
  ex,
  {
    formula: "bytes = 2 * n_layer * rows * n_embd * 4 (used: rows = length; allocated: capacity)",
    prompt,
    newTokens: ex.settings.tokens,
    reps: ex.reps,
    gpuBytesBefore,
    gpuBytesAfter,
    sameTokens,
    policies: results,
  },
  "KV cache growth: preallocated vs grown on demand",
  {
    vconcat: [
      {
        width: 480,
        height: 200,
        data: { values: [...points, ...used] },
        mark: { type: "line", interpolate: "step-after" },
        encoding: {
          x,
          y: {
            field: "allocatedMiB",
            type: "quantitative",
            title: "MiB of K/V buffers (log)",
            scale: { type: "log" },
          },
          color,
          strokeDash: {
            condition: { test: `datum.policy === '${USED}'`, value: [4, 3] },
            value: [1, 0],
          },
        },
      },
      {
        width: 480,
        height: 200,
        data: { values: points },
        transform: [{ filter: "datum.stepMs !== null" }],
        mark: { type: "line", point: true },
        encoding: {
          x,
          y: { field: "stepMs", type: "quantitative", title: "ms per decode step (median)" },
          color,
        },
      },
    ],
  },
);
