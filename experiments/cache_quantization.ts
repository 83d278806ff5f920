/**
 * Experiment: what storing the KV cache in f16 or int8 saves, and what it costs.
 *
 * For each storage type (`model.newCache({ dtype })`: f32, f16, int8 with one scale per head
 * and token) it reports the bytes per token, read from a real cache, and how many tokens fit
 * a memory budget; then its cost against the f32 cache:
 *
 * - the largest |logit difference| over a 16-token prompt of the validation text and `--steps`
 *   cached decode steps fed the same tokens (teacher forcing);
 * - how many of `--steps` greedy tokens generated freely agree with the f32 cache's (position
 *   by position, and up to the first difference);
 * - the validation loss: the mean cross-entropy over `--windows` windows of n_positions tokens
 *   of the validation split, each prefilled through an empty cache of that dtype. A prefill
 *   writes every K/V row in the cache's dtype first and every query reads them back from there,
 *   as a decode step does; the first window is also decoded token by token to show that both
 *   give the same logits. Also: how often the top-1 token is f32's.
 *
 * Default: the trained char model (data/shakespeare-char): 47 steps (the rest of its 64-token
 * context), 256 windows (16,384 of the 111,540 validation tokens): about a minute here.
 * `--model embedded`: the random 124M. `--quick` (tiny fixture): 100 steps, 2 windows, seconds.
 *
 * @module
 */
import { type CacheDType, generate, greedyOptions } from "../mod.ts";
import { integer } from "../cli/usage.ts";
import {
  fitContext,
  mib,
  negLogLikelihood,
  printTable,
  startExperiment,
  TRAINED_MODEL,
  validationIds,
  writeResults,
} from "./lib.ts";

/** Tokens of the prompt the parity and greedy runs start from. */
const PROMPT_TOKENS = 16;

const ex = await startExperiment({
  name: "cache_quantization",
  about: "KV cache bytes per token in f32, f16 and int8, and their logit, token and loss cost",
  defaultModel: TRAINED_MODEL,
  options: {
    steps: {
      help: "N   decode steps compared (default: up to 128 in the context; --quick 100)",
    },
    budget: { help: "MiB memory budget for the cache (default 64)" },
    windows: { help: "N validation windows of n_positions tokens scored (default 256; --quick 2)" },
  },
  settings: (v, quick) => ({
    steps: v.steps === undefined ? (quick ? 100 : null) : integer("--steps", v.steps, 1, 100_000),
    budget: integer("--budget", v.budget ?? "64", 1, 1_000_000),
    windows: integer("--windows", v.windows ?? (quick ? "2" : "256"), 1, 1_000_000),
  }),
  check: ({ steps }, config) => {
    if (steps === null) return;
    fitContext(
      `--steps ${steps} after a ${PROMPT_TOKENS}-token prompt`,
      PROMPT_TOKENS + steps + 1,
      config,
    );
  },
});
const { model, tokenizer } = ex.opened;
const { nPositions, vocabSize } = model.config;
const { budget } = ex.settings;
const steps = ex.settings.steps ?? Math.min(128, nPositions - PROMPT_TOKENS - 1);
const DTYPES: CacheDType[] = ["f32", "f16", "int8"];

const val = await validationIds(tokenizer);
const prompt = val.slice(0, PROMPT_TOKENS);
const windowCount = Math.min(ex.settings.windows, Math.floor((val.length - 1) / nPositions));
/** Window w: inputs val[w·P .. w·P + P - 1], each predicting the token after it. */
const windowStart = (w: number) => w * nPositions;

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

/** The index of the largest of one row of logits. */
function top1(logits: Float32Array, row: number): number {
  let best = 0;
  for (let j = 1; j < vocabSize; j++) {
    if (logits[row * vocabSize + j] > logits[row * vocabSize + best]) best = j;
  }
  return best;
}

/**
 * The validation loss through a cache of `dtype`: per window, a prefill with the logits of
 * every position. Returns the mean cross-entropy, the top-1 token of every position, and the
 * largest |logit difference| between the first window's prefill and decoding it token by token.
 */
async function validationLoss(dtype: CacheDType) {
  const cache = model.newCache({ dtype });
  let sum = 0;
  const tops: number[] = [];
  let prefillVsDecode = 0;
  for (let w = 0; w < windowCount; w++) {
    const inputs = val.slice(windowStart(w), windowStart(w) + nPositions);
    cache.reset();
    const { logits } = await model.forward(inputs, cache, { logits: "all" }); // [P, V]
    for (let t = 0; t < nPositions; t++) {
      sum += negLogLikelihood(logits, vocabSize, t, val[windowStart(w) + t + 1]);
      tops.push(top1(logits, t));
    }
    if (w > 0) continue;
    cache.reset();
    for (let t = 0; t < nPositions; t++) {
      const step = (await model.forward([inputs[t]], cache)).logits; // [V]
      for (let j = 0; j < vocabSize; j++) {
        prefillVsDecode = Math.max(prefillVsDecode, Math.abs(step[j] - logits[t * vocabSize + j]));
      }
    }
  }
  cache.destroy();
  return { loss: sum / (windowCount * nPositions), tops, prefillVsDecode };
}

const base = await greedyOf("f32");
const baseLogits = await logitsOf("f32", base.ids.slice(0, steps - 1));
const baseLoss = await validationLoss("f32");
const rows = [];
for (const dtype of DTYPES) {
  const run = dtype === "f32" ? base : await greedyOf(dtype);
  const logits = dtype === "f32" ? baseLogits : await logitsOf(dtype, base.ids.slice(0, steps - 1));
  const loss = dtype === "f32" ? baseLoss : await validationLoss(dtype);
  let maxLogitDiff = 0;
  logits.forEach((row, i) => {
    for (let j = 0; j < row.length; j++) {
      maxLogitDiff = Math.max(maxLogitDiff, Math.abs(row[j] - baseLogits[i][j]));
    }
  });
  const same = run.ids.filter((id, i) => id === base.ids[i]).length;
  const firstDiff = run.ids.findIndex((id, i) => id !== base.ids[i]);
  const sameTop1 = loss.tops.filter((id, i) => id === baseLoss.tops[i]).length;
  rows.push({
    dtype,
    bytesPerToken: run.bytesPerToken,
    fullContextBytes: run.bytesPerToken * nPositions,
    tokensInBudget: Math.floor((budget * 2 ** 20) / run.bytesPerToken),
    maxLogitDiff,
    greedyAgreement: same / steps,
    sameUntil: firstDiff < 0 ? steps : firstDiff,
    valLoss: loss.loss,
    valLossChange: loss.loss - baseLoss.loss,
    top1Agreement: sameTop1 / baseLoss.tops.length,
    prefillVsDecodeMaxDiff: loss.prefillVsDecode,
  });
  console.log(
    `  ${dtype}: max |Δlogit| ${maxLogitDiff.toExponential(2)}, ${same}/${steps} tokens, ` +
      `val loss ${loss.loss.toFixed(5)}`,
  );
}

const scored = windowCount * nPositions;
console.log(
  `\nprompt ${prompt.length} tokens, ${steps} steps; budget ${budget} MiB; ` +
    `validation loss over ${windowCount} windows of ${nPositions} (${scored} of ` +
    `${val.length} tokens); parity against the f32 cache`,
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
    "val loss",
    "Δ val loss",
    "top-1 = f32",
    "prefill vs decode",
  ],
  rows.map((r) => [
    r.dtype,
    r.bytesPerToken,
    mib(r.fullContextBytes),
    r.tokensInBudget,
    r.maxLogitDiff === 0 ? "0" : r.maxLogitDiff.toExponential(2),
    `${(100 * r.greedyAgreement).toFixed(0)} %`,
    r.sameUntil,
    r.valLoss.toFixed(4),
    r.valLossChange === 0 ? "0" : r.valLossChange.toExponential(2),
    `${(100 * r.top1Agreement).toFixed(2)} %`,
    r.prefillVsDecodeMaxDiff.toExponential(1),
  ]),
);

/** The floor of the log-scale panel: f32's 0 is drawn as this (no bar). */
const LOG_FLOOR = 1e-7;
const bar = (field: string, title: string, log = false) => ({
  width: 150,
  height: 200,
  mark: "bar" as const,
  encoding: {
    x: { field: "dtype", type: "nominal" as const, sort: DTYPES, title: null },
    y: {
      field,
      type: "quantitative" as const,
      title,
      ...(log
        ? {
          scale: { type: "log" as const, domainMin: LOG_FLOOR },
          axis: { format: "~e", values: [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1] },
        }
        : {}),
    },
    // A bar on a log scale needs a floor to start from: 0 has no logarithm.
    ...(log ? { y2: { datum: LOG_FLOOR } } : {}),
    color: { field: "dtype", type: "nominal" as const, sort: DTYPES, legend: null },
  },
});
await writeResults(
  ex,
  {
    prompt,
    steps,
    budgetMiB: budget,
    baseIds: base.ids,
    validationWindows: windowCount,
    validationTokensScored: scored,
    rows,
  },
  "Quantized KV cache: bytes per token and cost against f32",
  {
    data: {
      values: rows.map((r) => ({ ...r, maxLogitDiff: Math.max(r.maxLogitDiff, LOG_FLOOR) })),
    },
    hconcat: [
      bar("bytesPerToken", "bytes per token"),
      bar("maxLogitDiff", "max |Δlogit| vs f32 (f32: 0)", true),
      bar("greedyAgreement", "greedy tokens equal to f32's"),
      bar("valLossChange", "Δ validation loss vs f32 (nats)"),
    ],
  },
);
