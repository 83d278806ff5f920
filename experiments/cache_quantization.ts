/**
 * Experiment: what storing the KV cache in f16 or int8 saves, and what it costs.
 *
 * For each storage type (`model.newCache({ dtype })`: f32, f16, int8 with one scale per head
 * and token) it reports the bytes per token, read from a real cache, and how many tokens fit
 * a memory budget; then the parity cost against the f32 cache: the largest |logit difference|
 * over a prefill and `--steps` cached decode steps fed the same tokens (teacher forcing), and
 * how many of `--steps` greedy tokens generated freely agree with the f32 cache's (position by
 * position, and up to the first difference).
 *
 * Default (embedded 124M): a 16-token prompt, 128 steps, 64 MiB budget: about a minute here.
 * `--quick` (tiny fixture): 100 steps, seconds.
 *
 * @module
 */
import { type CacheDType, generate, greedyOptions } from "../mod.ts";
import { integer } from "../cli/usage.ts";
import { fitContext, mib, printTable, startExperiment, textTokens, writeResults } from "./lib.ts";

const prompt = textTokens(16);

const ex = await startExperiment({
  name: "cache_quantization",
  about: "KV cache bytes per token in f32, f16 and int8, and the logit and token cost",
  options: {
    steps: { help: "N   decode steps compared (default 128; --quick 100)" },
    budget: { help: "MiB memory budget for the cache (default 64)" },
  },
  settings: (v, quick) => ({
    steps: integer("--steps", v.steps ?? (quick ? "100" : "128"), 1, 100_000),
    budget: integer("--budget", v.budget ?? "64", 1, 1_000_000),
  }),
  check: ({ steps }, config) =>
    fitContext(
      `--steps ${steps} after a ${prompt.length}-token prompt`,
      prompt.length + steps + 1,
      config,
    ),
});
const { model } = ex.opened;
const { steps, budget } = ex.settings;
const DTYPES: CacheDType[] = ["f32", "f16", "int8"];

/** Logits of the prefill and of each step fed `feed`, through a cache of `dtype`. */
async function logitsOf(dtype: CacheDType, feed: number[]): Promise<Float32Array[]> {
  const cache = model.newCache({ dtype });
  const out = [(await model.forward(prompt, cache)).logits];
  for (const id of feed) out.push((await model.forward([id], cache)).logits);
  cache.destroy();
  return out;
}

/** Greedy tokens generated through a cache of `dtype`, and its bytes per token. */
async function greedyOf(dtype: CacheDType) {
  const cache = model.newCache({ dtype });
  const r = await generate(model, cache, prompt, greedyOptions(steps));
  const bytesPerToken = cache.bytesUsed / cache.length;
  cache.destroy();
  return { ids: r.ids, bytesPerToken };
}

const base = await greedyOf("f32");
const baseLogits = await logitsOf("f32", base.ids.slice(0, steps - 1));
const rows = [];
for (const dtype of DTYPES) {
  const run = dtype === "f32" ? base : await greedyOf(dtype);
  const logits = dtype === "f32" ? baseLogits : await logitsOf(dtype, base.ids.slice(0, steps - 1));
  let maxLogitDiff = 0;
  logits.forEach((row, i) => {
    for (let j = 0; j < row.length; j++) {
      maxLogitDiff = Math.max(maxLogitDiff, Math.abs(row[j] - baseLogits[i][j]));
    }
  });
  const same = run.ids.filter((id, i) => id === base.ids[i]).length;
  const firstDiff = run.ids.findIndex((id, i) => id !== base.ids[i]);
  rows.push({
    dtype,
    bytesPerToken: run.bytesPerToken,
    fullContextBytes: run.bytesPerToken * model.config.nPositions,
    tokensInBudget: Math.floor((budget * 2 ** 20) / run.bytesPerToken),
    maxLogitDiff,
    greedyAgreement: same / steps,
    sameUntil: firstDiff < 0 ? steps : firstDiff,
  });
  console.log(`  ${dtype}: max |Δlogit| ${maxLogitDiff.toExponential(2)}, ${same}/${steps} tokens`);
}

console.log(
  `\nprompt ${prompt.length} tokens, ${steps} steps; budget ${budget} MiB; ` +
    `parity against the f32 cache`,
);
printTable(
  [
    "dtype",
    "B/token",
    "MiB full context",
    `tokens in ${budget} MiB`,
    "max |Δlogit|",
    "greedy agree",
    "same until",
  ],
  rows.map((r) => [
    r.dtype,
    r.bytesPerToken,
    mib(r.fullContextBytes),
    r.tokensInBudget,
    r.maxLogitDiff === 0 ? "0" : r.maxLogitDiff.toExponential(2),
    `${(100 * r.greedyAgreement).toFixed(0)} %`,
    r.sameUntil,
  ]),
);

const bar = (field: string, title: string, scale?: { type: "log" }) => ({
  width: 180,
  height: 200,
  mark: "bar" as const,
  encoding: {
    x: { field: "dtype", type: "nominal" as const, sort: DTYPES, title: null },
    y: { field, type: "quantitative" as const, title, ...(scale ? { scale } : {}) },
    color: { field: "dtype", type: "nominal" as const, legend: null },
  },
});
await writeResults(
  ex,
  { prompt, steps, budgetMiB: budget, baseIds: base.ids, rows },
  "Quantized KV cache: bytes per token and parity cost against f32",
  {
    data: { values: rows.map((r) => ({ ...r, maxLogitDiff: Math.max(r.maxLogitDiff, 1e-9) })) },
    hconcat: [
      bar("bytesPerToken", "bytes per token"),
      bar("maxLogitDiff", "max |Δlogit| vs f32 (f32: 0)", { type: "log" }),
      bar("greedyAgreement", "greedy tokens equal to f32's"),
    ],
  },
);
