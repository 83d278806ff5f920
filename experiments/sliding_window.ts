/**
 * Experiment: StreamingLLM's test, on the validation text, far past the context the model was
 * trained on. GPT-2 has n_positions rows of position embeddings, so a plain cache stops there.
 * Fed the first `--tokens` tokens of the validation split one by one (teacher forcing), each
 * method scores −log p(next token) at every step:
 *
 * - `sinks`: window + attention sinks, as `generate`'s `window` option runs it: when the cache
 *   is full (n_positions − 1 tokens), `cache.evict(sinks, recent)` keeps its first `sinks`
 *   tokens and its last `recent` ones, and the next token takes the position of the row it
 *   fills; kept tokens keep the K/V computed at their old positions.
 * - `window`: the same cache size without sinks: `cache.evict(0, sinks + recent)`.
 * - `recompute`: the baseline. Every step runs the last n_positions − 1 tokens (as many as the
 *   window's cache holds at most) from scratch through an empty cache, at positions 0 .. W − 1.
 *
 * It reports perplexity per bucket of `--bucket` positions, and per layer the attention mass
 * that the heads put on the first cached token (mean over heads and steps), within the
 * context and past it, beside uniform attention's. Within the context all three methods see
 * the same tokens at the same positions. The `sinks` cache is also checked to hold
 * 2 · n_layer · length · n_embd · 4 bytes at every step, never more than n_positions − 1 rows.
 *
 * Default: the trained char model (data/shakespeare-char, context 64): 2048 tokens with sinks 4
 * and recent 44, all three methods: about 3 minutes here. `--model embedded` (the random 124M)
 * is slow for `recompute` (a 1023-token prefill per token): leave it out with `--methods`.
 * `--quick` (tiny fixture, context 128): 256 tokens, seconds.
 *
 * @module
 */
import { integer, UsageError } from "../cli/usage.ts";
import { checkWindow } from "../run/sliding_window.ts";
import {
  median,
  negLogLikelihood,
  printTable,
  startExperiment,
  TRAINED_MODEL,
  validationIds,
  writeResults,
} from "./lib.ts";

/** The methods compared, in the order they run. */
const METHODS = ["sinks", "window", "recompute"] as const;
type Method = (typeof METHODS)[number];
const LABELS: Record<Method, string> = {
  sinks: "window + sinks",
  window: "window, no sinks",
  recompute: "recompute a sliding window",
};

/** Each method's colour in both charts. */
const COLORS: Record<Method, string> = {
  sinks: "#4c78a8",
  window: "#f58518",
  recompute: "#e45756",
};
const IN_CONTEXT = "within the context (all methods)";
const UNIFORM = "uniform attention within the context";

/** The recent tokens kept: `--recent`, or by default a quarter of the context dropped at a time. */
const recentOf = (s: { sinks: number; recent: number | null }, nPositions: number) =>
  s.recent ?? Math.floor((3 * nPositions) / 4) - s.sinks;

const ex = await startExperiment({
  name: "sliding_window",
  about: "perplexity far past the context: window + sinks, window alone, recomputing a window",
  defaultModel: TRAINED_MODEL,
  options: {
    tokens: { help: "N    validation tokens fed (default 2048; --quick 256)" },
    sinks: { help: "S     first tokens always kept (default 4)" },
    recent: { help: "R    last tokens kept when the cache is full (default ¾ n_positions − S)" },
    methods: { help: "M,… of sinks, window, recompute (default all)" },
    bucket: { help: "B    positions per perplexity bucket (default n_positions)" },
  },
  settings: (v, quick) => {
    const methods = (v.methods ?? METHODS.join(",")).split(",");
    for (const m of methods) {
      if (!(METHODS as readonly string[]).includes(m)) {
        throw new UsageError(`--methods: expected some of ${METHODS.join(",")}, got "${m}"`);
      }
    }
    return {
      tokens: integer("--tokens", v.tokens ?? (quick ? "256" : "2048"), 2, 1_000_000),
      sinks: integer("--sinks", v.sinks ?? "4", 0, 1e6),
      recent: v.recent === undefined ? null : integer("--recent", v.recent, 1, 1e6),
      methods: METHODS.filter((m) => methods.includes(m)),
      bucket: v.bucket === undefined ? null : integer("--bucket", v.bucket, 1, 1e6),
    };
  },
  check: (s, config) => {
    const recent = recentOf(s, config.nPositions);
    try {
      checkWindow({ sinks: s.sinks, recent }, config.nPositions);
    } catch (e) {
      throw new UsageError(`--sinks ${s.sinks} --recent ${recent}: ${(e as Error).message}`);
    }
    if (s.tokens <= config.nPositions) {
      throw new UsageError(
        `--tokens ${s.tokens}: must go past the model's context of ${config.nPositions}`,
      );
    }
  },
});
const { model, tokenizer } = ex.opened;
const { nPositions, nLayer, nHead, nEmbd, vocabSize } = model.config;
const { sinks, methods } = ex.settings;
const recent = recentOf(ex.settings, nPositions);
const bucket = ex.settings.bucket ?? nPositions;
/** Tokens the `recompute` baseline runs per step: the most the window's cache holds. */
const W = nPositions - 1;

const val = await validationIds(tokenizer);
if (val.length < ex.settings.tokens) {
  throw new UsageError(`--tokens ${ex.settings.tokens}: the validation split has ${val.length}`);
}
const text = val.slice(0, ex.settings.tokens);
/** Steps: token i is fed and scored on token i + 1. */
const STEPS = text.length - 1;

/** What one method measured at every step. */
interface Run {
  nll: number[];
  /** Per layer, per step: mean over heads of the weight on the first cached key (or NaN). */
  firstMass: number[][];
  /** Per step: keys the fed token attends to (itself included). */
  keys: number[];
  ms: number[];
  evicted: number;
  /** `sinks` only: every step's cache length and bytes matched the formula. */
  flatBytes: boolean;
  maxLength: number;
}

/** Mean over heads of the weight on key 0 in query row `t` of layer `l`'s [nHead, T, P]. */
function onFirstKey(attention: Float32Array[], l: number, T: number, t: number): number {
  let sum = 0;
  for (let h = 0; h < nHead; h++) sum += attention[l][(h * T + t) * nPositions];
  return sum / nHead;
}

/** A run with nothing measured yet. */
function emptyRun(): Run {
  return {
    nll: [],
    firstMass: Array.from({ length: nLayer }, () => []),
    keys: [],
    ms: [],
    evicted: 0,
    flatBytes: true,
    maxLength: 0,
  };
}

/** Feeds the text token by token through one cache that evicts as `generate` does. */
async function streamed(keepSinks: number, keepRecent: number): Promise<Run> {
  const cache = model.newCache();
  const run = emptyRun();
  for (let i = 0; i < STEPS; i++) {
    const t0 = performance.now();
    if (cache.length >= nPositions - 1) run.evicted += cache.evict(keepSinks, keepRecent);
    const { logits, attention } = await model.forward([text[i]], cache, { attention: true });
    run.nll.push(negLogLikelihood(logits, vocabSize, 0, text[i + 1]));
    run.ms.push(performance.now() - t0);
    for (let l = 0; l < nLayer; l++) run.firstMass[l].push(onFirstKey(attention!, l, 1, 0));
    run.keys.push(cache.length);
    run.maxLength = Math.max(run.maxLength, cache.length);
    if (cache.bytesUsed !== 2 * nLayer * cache.length * nEmbd * 4) run.flatBytes = false;
  }
  cache.destroy();
  run.flatBytes &&= run.maxLength <= nPositions - 1;
  return run;
}

/**
 * The baseline: each step runs the last W tokens from scratch. Their attention is read back
 * only while it is small ([nHead, W, n_positions] per layer, at most 64 MiB in all).
 */
async function recomputed(): Promise<Run> {
  const cache = model.newCache();
  const readAttention = nLayer * nHead * W * nPositions * 4 <= 64 * 2 ** 20;
  const run = emptyRun();
  for (let i = 0; i < STEPS; i++) {
    const t0 = performance.now();
    const window = text.slice(Math.max(0, i - W + 1), i + 1);
    cache.reset();
    const { logits, attention } = await model.forward(window, cache, {
      attention: readAttention,
    });
    run.nll.push(negLogLikelihood(logits, vocabSize, 0, text[i + 1]));
    run.ms.push(performance.now() - t0);
    for (let l = 0; l < nLayer; l++) {
      const T = window.length;
      run.firstMass[l].push(readAttention ? onFirstKey(attention!, l, T, T - 1) : NaN);
    }
    run.keys.push(window.length);
    run.maxLength = Math.max(run.maxLength, window.length);
  }
  cache.destroy();
  return run;
}

const runs = new Map<Method, Run>();
for (const method of methods) {
  const t0 = performance.now();
  runs.set(
    method,
    method === "sinks"
      ? await streamed(sinks, recent)
      : method === "window"
      ? await streamed(0, sinks + recent)
      : await recomputed(),
  );
  console.log(`  ${LABELS[method]}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

/** The first step past the context: where the methods start to differ. */
const PAST = nPositions - 1;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const perplexity = (nll: number[]) => Math.exp(mean(nll));

/** Each method's value of `f`, by method name. */
const byMethod = (f: (r: Run) => number) =>
  Object.fromEntries([...runs].map(([m, r]) => [m, f(r)])) as Partial<Record<Method, number>>;
const buckets = Array.from({ length: Math.ceil(STEPS / bucket) }, (_, b) => {
  const from = b * bucket, to = Math.min(STEPS, from + bucket);
  // Steps from .. to - 1 predict tokens from + 1 .. to.
  return { from: from + 1, to, perplexity: byMethod((r) => perplexity(r.nll.slice(from, to))) };
});
const summary = [...runs].map(([m, r]) => ({
  method: m,
  label: LABELS[m],
  perplexityInContext: perplexity(r.nll.slice(0, PAST)),
  perplexityPastContext: perplexity(r.nll.slice(PAST)),
  msPerTokenPastContext: median(r.ms.slice(PAST)),
  evictedTokens: r.evicted,
  maxKeys: r.maxLength,
}));
/** Per layer: mass on the first cached key within the context (the first method's) and past it. */
const attentionMass = Array.from({ length: nLayer }, (_, l) => ({
  layer: l,
  inContext: mean(runs.get(methods[0])!.firstMass[l].slice(0, PAST)),
  pastContext: byMethod((r) => mean(r.firstMass[l].slice(PAST))),
}));
/** What uniform attention would put on one key: the mean of 1 / keys. */
const uniform = (r: Run, from: number, to?: number) =>
  mean(r.keys.slice(from, to).map((k) => 1 / k));
const uniformMass = {
  inContext: uniform(runs.get(methods[0])!, 0, PAST),
  pastContext: byMethod((r) => uniform(r, PAST)),
};

console.log(
  `\n${text.length} validation tokens (${tokenizer.name} tokenizer), context ${nPositions}; ` +
    `sinks ${sinks}, recent ${recent} (no sinks: recent ${sinks + recent}); recompute: the last ` +
    `${W} tokens`,
);
printTable(
  ["method", "ppl 1..context", "ppl past context", "ms/token", "evicted", "max keys"],
  summary.map((s) => [
    s.label,
    s.perplexityInContext,
    s.perplexityPastContext,
    s.msPerTokenPastContext,
    s.evictedTokens,
    s.maxKeys,
  ]),
);
console.log("\nperplexity per bucket of predicted positions");
printTable(
  ["positions", ...methods.map((m) => LABELS[m])],
  buckets.map((b) => [`${b.from}–${b.to}`, ...methods.map((m) => b.perplexity[m]!)]),
);
console.log(
  "\nattention on the first cached token per layer, mean over heads and steps; uniform " +
    `attention's in the header (${uniformMass.inContext.toFixed(3)} within the context)`,
);
printTable(
  [
    "layer",
    "in context",
    ...methods.map((m) => `${LABELS[m]} (${uniformMass.pastContext[m]!.toFixed(3)})`),
  ],
  attentionMass.map((a) => [a.layer, a.inContext, ...methods.map((m) => a.pastContext[m]!)]),
);
const sinksRun = runs.get("sinks");
if (sinksRun) {
  console.log(
    `window + sinks: cache bytes = 2 · n_layer · length · n_embd · 4 at every step, never past ` +
      `n_positions − 1 rows: ${sinksRun.flatBytes ? "yes" : "NO"}`,
  );
}

const points = buckets.flatMap((b) =>
  methods.map((m) => ({
    position: (b.from + b.to) / 2,
    method: LABELS[m],
    perplexity: b.perplexity[m],
  }))
);
const massPoints = attentionMass.flatMap((a) => [
  { layer: a.layer, series: IN_CONTEXT, mass: a.inContext },
  ...methods.map((m) => ({
    layer: a.layer,
    series: `past it: ${LABELS[m]}`,
    mass: a.pastContext[m]!,
  })),
  { layer: a.layer, series: UNIFORM, mass: uniformMass.inContext },
]).filter((p) => Number.isFinite(p.mass));
/** The legend of both charts: on the right, one entry per line. */
const legend = { orient: "right", labelLimit: 300 } as const;
await writeResults(
  ex,
  {
    tokenizer: tokenizer.name,
    tokens: text.length,
    nPositions,
    sinks,
    recent,
    recomputeWindow: W,
    bucket,
    methods,
    flatBytes: sinksRun?.flatBytes ?? null,
    summary,
    buckets,
    attentionMass,
    uniformMass,
    nll: Object.fromEntries([...runs].map(([m, r]) => [m, r.nll])),
  },
  "Past the context on the validation text: perplexity, and attention on the first cached token",
  {
    vconcat: [
      {
        width: 520,
        height: 180,
        data: { values: points },
        mark: { type: "line", point: true },
        encoding: {
          x: {
            field: "position",
            type: "quantitative",
            title: `predicted position (buckets of ${bucket}; context ${nPositions})`,
          },
          y: {
            field: "perplexity",
            type: "quantitative",
            title: "perplexity",
            scale: { type: "log" },
          },
          color: {
            field: "method",
            type: "nominal",
            title: null,
            legend,
            scale: { domain: methods.map((m) => LABELS[m]), range: methods.map((m) => COLORS[m]) },
          },
        },
      },
      {
        width: 520,
        height: 180,
        data: { values: massPoints },
        mark: { type: "line", point: true },
        encoding: {
          x: { field: "layer", type: "ordinal", title: "layer", axis: { labelAngle: 0 } },
          y: { field: "mass", type: "quantitative", title: "attention on the first cached token" },
          color: {
            field: "series",
            type: "nominal",
            title: null,
            legend,
            scale: {
              domain: [IN_CONTEXT, ...methods.map((m) => `past it: ${LABELS[m]}`), UNIFORM],
              range: ["#54a24b", ...methods.map((m) => COLORS[m]), "#bab0ac"],
            },
          },
        },
      },
    ],
    resolve: { scale: { color: "independent" }, legend: { color: "independent" } },
  },
);
