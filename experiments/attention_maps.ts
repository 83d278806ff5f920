/**
 * Experiment: what each attention head looks at. Runs windows of the validation text (or
 * `--prompt`) through the model with `attention: true`, which returns the softmax rows exactly
 * as the attention kernel wrote them, checks that every row sums to 1 and that masked weights
 * are 0, and measures per head, over every query after the first of every window:
 *
 * - the weight on the window's first token, on the previous token, on the token itself, on
 *   the last whitespace token before the query (where the current word starts), on newline
 *   tokens, and on "induction" keys (the token after an earlier occurrence of the
 *   current and previous tokens), each beside what uniform attention would give;
 * - the mean distance attended back, and the entropy (also as a share of uniform's);
 * - the most common offset of each query's top key, and a pattern by a fixed rule (see
 *   {@link pattern}).
 *
 * It draws one heatmap per layer and head for the first window: query token down, key token
 * across, weight as colour, the causal mask (weight 0) blank.
 *
 * Default: the trained char model (data/shakespeare-char), 32 windows of 64 tokens from the
 * start of the validation split, every layer and head: seconds. `--model embedded`: the random
 * 124M (GPT-2 tokens). `--quick`: the tiny fixture, 2 windows.
 *
 * @module
 */
import { integer, integerList, UsageError } from "../cli/usage.ts";
import { printTable, startExperiment, TRAINED_MODEL, validationIds, writeResults } from "./lib.ts";

const ex = await startExperiment({
  name: "attention_maps",
  about: "what each attention head looks at, in numbers and heatmaps, from the kernel's softmax",
  defaultModel: TRAINED_MODEL,
  options: {
    prompt: { help: "TEXT  one prompt instead of windows of the validation text" },
    length: { help: "T     tokens per window (default 64, at most the context)" },
    windows: { help: "N    validation windows measured; the first is drawn (default 32)" },
    layers: { help: "I,…   layers to show (default all)" },
    heads: { help: "H,…    heads to show (default all)" },
  },
  settings: (v, quick) => {
    if (v.prompt !== undefined && !v.prompt.trim()) {
      throw new UsageError(`--prompt: must not be empty, got "${v.prompt}"`);
    }
    return {
      prompt: v.prompt ?? null,
      length: v.length === undefined ? null : integer("--length", v.length, 2, 1_000_000),
      windows: integer("--windows", v.windows ?? (quick ? "2" : "32"), 1, 10_000),
      layers: v.layers === undefined ? null : integerList("--layers", v.layers, 0, 1000),
      heads: v.heads === undefined ? null : integerList("--heads", v.heads, 0, 1000),
    };
  },
  check: ({ layers, heads, length }, config) => {
    if (length !== null && length > config.nPositions) {
      throw new UsageError(`--length ${length}: the model's context has ${config.nPositions}`);
    }
    if (layers && layers.at(-1)! >= config.nLayer) {
      throw new UsageError(`--layers ${layers}: the model has layers 0..${config.nLayer - 1}`);
    }
    if (heads && heads.at(-1)! >= config.nHead) {
      throw new UsageError(`--heads ${heads}: the model has heads 0..${config.nHead - 1}`);
    }
  },
});
const { model, tokenizer } = ex.opened;
const { nLayer, nHead, nPositions } = model.config;
const every = (n: number) => Array.from({ length: n }, (_, i) => i);
const layers = ex.settings.layers ?? every(nLayer);
const heads = ex.settings.heads ?? every(nHead);

/** The token windows measured: the prompt alone, or consecutive windows of the validation text. */
async function windowsToRun(): Promise<number[][]> {
  const { prompt } = ex.settings;
  if (prompt !== null) {
    let ids: number[];
    try {
      ids = tokenizer.encode(prompt);
    } catch (e) {
      throw new UsageError(`--prompt: ${(e as Error).message}`);
    }
    if (ids.length > nPositions) {
      throw new UsageError(
        `--prompt (${ids.length} tokens): the model's context has ${nPositions}`,
      );
    }
    return [ids];
  }
  const T = ex.settings.length ?? Math.min(64, nPositions);
  const val = await validationIds(tokenizer);
  const n = Math.min(ex.settings.windows, Math.floor(val.length / T));
  return every(n).map((w) => val.slice(w * T, (w + 1) * T));
}
const windows = await windowsToRun();

/** A token as an axis label: newline as ⏎, blank as ␣. */
const show = (id: number) => {
  const text = tokenizer.decode([id]).replaceAll("\n", "⏎");
  return text.trim() ? text.trim() : "␣";
};
const isNewline = (id: number) => tokenizer.decode([id]).includes("\n");
const isSpace = (id: number) => /\s/.test(tokenizer.decode([id]));

/** Sums over every (window, query t ≥ 1) of one head; divided by `queries` at the end. */
interface HeadSums {
  first: number;
  uniformFirst: number;
  previous: number;
  self: number;
  wordStart: number;
  uniformWordStart: number;
  newline: number;
  newlineShare: number;
  distance: number;
  uniformDistance: number;
  entropyBits: number;
  entropyShare: number;
  queries: number;
  induction: number;
  inductionShare: number;
  inductionQueries: number;
  topOffsets: Map<number, number>;
}
const sums: HeadSums[][] = every(nLayer).map(() =>
  every(nHead).map(() => ({
    first: 0,
    uniformFirst: 0,
    previous: 0,
    self: 0,
    wordStart: 0,
    uniformWordStart: 0,
    newline: 0,
    newlineShare: 0,
    distance: 0,
    uniformDistance: 0,
    entropyBits: 0,
    entropyShare: 0,
    queries: 0,
    induction: 0,
    inductionShare: 0,
    inductionQueries: 0,
    topOffsets: new Map(),
  }))
);
let maxRowSumError = 0;
let maskedNonZero = 0;
/** The first window's weights per drawn layer and head, [T, T] each (row query, column key). */
let drawn: number[][][][] = [];

for (const [w, ids] of windows.entries()) {
  const T = ids.length;
  const newlines = ids.map(isNewline);
  // The last whitespace token before each query (-1: none): the start of the current word.
  const wordStarts = ids.map((_, t) => ids.slice(0, t).findLastIndex(isSpace));
  const cache = model.newCache();
  const { attention } = await model.forward(ids, cache, { attention: true });
  cache.destroy();
  // attention[l] is [nHead, T, nPositions]: head h, query t, key k.
  const weight = (l: number, h: number, t: number, k: number) =>
    attention![l][(h * T + t) * nPositions + k];
  if (w === 0) {
    drawn = layers.map((l) =>
      heads.map((h) => every(T).map((t) => every(T).map((k) => weight(l, h, t, k))))
    );
  }
  for (let l = 0; l < nLayer; l++) {
    for (let h = 0; h < nHead; h++) {
      const s = sums[l][h];
      for (let t = 0; t < T; t++) {
        let sum = 0, entropy = 0, distance = 0, newline = 0, newlineKeys = 0;
        let induction = 0, inductionKeys = 0, top = 0;
        for (let k = 0; k <= t; k++) {
          const p = weight(l, h, t, k);
          sum += p;
          if (p > 0) entropy -= p * Math.log2(p);
          distance += p * (t - k);
          if (newlines[k]) {
            newline += p;
            newlineKeys++;
          }
          if (k >= 2 && k < t && ids[k - 1] === ids[t] && ids[k - 2] === ids[t - 1]) {
            induction += p;
            inductionKeys++;
          }
          if (p > weight(l, h, t, top)) top = k;
        }
        maxRowSumError = Math.max(maxRowSumError, Math.abs(sum - 1));
        for (let k = t + 1; k < nPositions; k++) if (weight(l, h, t, k) !== 0) maskedNonZero++;
        if (t === 0) continue; // the first query can only attend to itself
        s.queries++;
        s.first += weight(l, h, t, 0);
        s.uniformFirst += 1 / (t + 1);
        s.previous += weight(l, h, t, t - 1);
        s.self += weight(l, h, t, t);
        if (wordStarts[t] >= 0) {
          s.wordStart += weight(l, h, t, wordStarts[t]);
          s.uniformWordStart += 1 / (t + 1);
        }
        s.newline += newline;
        s.newlineShare += newlineKeys / (t + 1);
        s.distance += distance;
        s.uniformDistance += t / 2;
        s.entropyBits += entropy;
        s.entropyShare += entropy / Math.log2(t + 1);
        s.topOffsets.set(t - top, (s.topOffsets.get(t - top) ?? 0) + 1);
        if (inductionKeys > 0) {
          s.inductionQueries++;
          s.induction += induction;
          s.inductionShare += inductionKeys / (t + 1);
        }
      }
    }
  }
}

/** Summary measures of one head, in the order {@link pattern} tests them. */
interface HeadStats {
  meanOnPrevious: number;
  meanOnSelf: number;
  meanOnFirst: number;
  meanOnNewline: number;
  meanOnInduction: number | null;
  entropyShareOfUniform: number;
}

/**
 * A head's pattern, by a rule fixed before looking at any model: the first of previous token,
 * self, first token, newline, induction whose mean weight is at least 0.5; else "diffuse" when
 * its entropy is at least 0.8 of uniform attention's, else "mixed".
 */
function pattern(s: HeadStats): string {
  if (s.meanOnPrevious >= 0.5) return "previous token";
  if (s.meanOnSelf >= 0.5) return "self";
  if (s.meanOnFirst >= 0.5) return "first token";
  if (s.meanOnNewline >= 0.5) return "newline";
  if ((s.meanOnInduction ?? 0) >= 0.5) return "induction";
  return s.entropyShareOfUniform >= 0.8 ? "diffuse" : "mixed";
}

const headStats = layers.flatMap((l) =>
  heads.map((h) => {
    const s = sums[l][h];
    const q = s.queries;
    const [topOffset, topCount] = [...s.topOffsets].reduce((a, b) => (b[1] > a[1] ? b : a));
    const stats = {
      layer: l,
      head: h,
      meanOnFirst: s.first / q,
      uniformOnFirst: s.uniformFirst / q,
      meanOnPrevious: s.previous / q,
      meanOnSelf: s.self / q,
      meanOnWordStart: s.wordStart / q,
      uniformOnWordStart: s.uniformWordStart / q,
      meanOnNewline: s.newline / q,
      uniformOnNewline: s.newlineShare / q,
      meanOnInduction: s.inductionQueries ? s.induction / s.inductionQueries : null,
      uniformOnInduction: s.inductionQueries ? s.inductionShare / s.inductionQueries : null,
      inductionQueries: s.inductionQueries,
      meanDistance: s.distance / q,
      uniformDistance: s.uniformDistance / q,
      meanEntropyBits: s.entropyBits / q,
      entropyShareOfUniform: s.entropyShare / q,
      topOffset,
      topOffsetShare: topCount / q,
    };
    return { ...stats, pattern: pattern(stats) };
  })
);

const first = windows[0];
const T = first.length;
/** Axis labels: position and token, unique even when a token repeats. */
const labels = first.map((id, i) => `${i} ${show(id)}`);
const queries = headStats[0].inductionQueries; // same for every head
const tokens = windows.reduce((n, w) => n + w.length, 0);
console.log(
  `\n${windows.length} window(s), ${tokens} tokens (${tokenizer.name} tokenizer); ` +
    `first: ${JSON.stringify(tokenizer.decode(first))}`,
);
console.log(
  "Mean over queries t ≥ 1 of the weight on each kind of key (uniform attention's in brackets);",
);
console.log(`induction: over the ${queries} queries whose last two tokens occurred before.`);
const pair = (x: number | null, u: number | null) =>
  x === null ? "-" : `${x.toFixed(2)} (${u!.toFixed(2)})`;
printTable(
  [
    "layer",
    "head",
    "pattern",
    "first",
    "previous",
    "self",
    "word start",
    "newline",
    "induction",
    "distance",
    "entropy",
    "top offset",
  ],
  headStats.map((s) => [
    s.layer,
    s.head,
    s.pattern,
    pair(s.meanOnFirst, s.uniformOnFirst),
    s.meanOnPrevious,
    s.meanOnSelf,
    pair(s.meanOnWordStart, s.uniformOnWordStart),
    pair(s.meanOnNewline, s.uniformOnNewline),
    pair(s.meanOnInduction, s.uniformOnInduction),
    pair(s.meanDistance, s.uniformDistance),
    `${s.meanEntropyBits.toFixed(2)} b (${(100 * s.entropyShareOfUniform).toFixed(0)} %)`,
    `${s.topOffset} (${(100 * s.topOffsetShare).toFixed(0)} %)`,
  ]),
);
console.log(
  `\nrows sum to 1 within ${maxRowSumError.toExponential(1)}; ` +
    `weights past the causal limit that are not 0: ${maskedNonZero}`,
);

/** Panel titles, in layer then head order: what the head does most, in numbers. */
const panel = (l: number, h: number) => {
  const s = headStats.find((x) => x.layer === l && x.head === h)!;
  const f = (x: number) => x.toFixed(2);
  return `L${l} H${h}: prev ${f(s.meanOnPrevious)} self ${f(s.meanOnSelf)} ` +
    `word ${f(s.meanOnWordStart)} ⏎ ${f(s.meanOnNewline)} dist ${s.meanDistance.toFixed(1)}`;
};
const panels = layers.flatMap((l) => heads.map((h) => panel(l, h)));
const cells = layers.flatMap((l, li) =>
  heads.flatMap((h, hi) =>
    first.flatMap((_, t) =>
      // Weights under 0.001 are left blank (they would be white), which keeps the SVG small.
      first.slice(0, t + 1).flatMap((_, k) =>
        drawn[li][hi][t][k] < 0.001
          ? []
          : [{ panel: panel(l, h), query: labels[t], key: labels[k], weight: drawn[li][hi][t][k] }]
      )
    )
  )
);
const cell = Math.max(5, Math.min(16, Math.floor(384 / T)));
/** Shows only the token of a "position token" label. */
const tokenOnly = "slice(datum.label, indexof(datum.label, ' ') + 1)";
await writeResults(
  ex,
  {
    prompt: ex.settings.prompt,
    tokenizer: tokenizer.name,
    windows: windows.length,
    tokensMeasured: tokens,
    ids: first,
    tokens: labels,
    layers,
    heads,
    maxRowSumError,
    maskedNonZero,
    summary: headStats,
    // The first window's [T, T] weights per shown layer and head (row query, column key; 0 above).
    weights: drawn,
  },
  `Attention of each head on ${JSON.stringify(tokenizer.decode(first).slice(0, 40))}…: ` +
    "query ↓, key →",
  {
    data: { values: cells },
    facet: { field: "panel", type: "ordinal", sort: panels, title: null },
    columns: heads.length,
    spacing: 8,
    spec: {
      width: cell * T,
      height: cell * T,
      mark: { type: "rect", aria: false },
      encoding: {
        x: {
          field: "key",
          type: "ordinal",
          sort: labels,
          title: null,
          axis: { labelFontSize: 7, labelAngle: 0, labelExpr: tokenOnly },
        },
        y: {
          field: "query",
          type: "ordinal",
          sort: labels,
          title: null,
          axis: { labelFontSize: 7, labelExpr: tokenOnly },
        },
        color: {
          field: "weight",
          type: "quantitative",
          scale: { type: "sqrt", domain: [0, 1], range: ["#ffffff", "#08306b"] },
          title: "weight (√)",
        },
      },
    },
  },
);
