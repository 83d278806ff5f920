/**
 * Experiment: what each attention head looks at. Runs a prompt (tokenized with GPT-2's
 * tokenizer) through the model once with `attention: true`, which returns the softmax rows
 * exactly as the attention kernel wrote them, and draws one heatmap per layer and head:
 * query token down, key token across, weight as colour. Above the diagonal is the causal
 * mask (weight 0, left blank). It checks that every row sums to 1 and that masked weights
 * are 0, and prints per head: weight on the first token, on the token itself, mean entropy,
 * and the token the last query attends to most.
 *
 * With the embedded model the weights are random: attention is near uniform over the
 * visible tokens (about 1/(t+1) per key). Real GPT-2 (`deno task download gpt2`) shows the
 * familiar patterns: previous-token heads, first-token "sinks", copying.
 *
 * Default: every layer and head (`--layers`, `--heads` pick some); one forward pass,
 * seconds even on the 124M model. `--quick`: the tiny fixture.
 *
 * @module
 */
import { gpt2Tokenizer } from "../mod.ts";
import { integerList, UsageError } from "../cli/usage.ts";
import { fitContext, printTable, startExperiment, writeResults } from "./lib.ts";

const tokenizer = gpt2Tokenizer();
const ex = await startExperiment({
  name: "attention_maps",
  about: "heatmaps of attention weights per layer and head, from the kernel's softmax",
  options: {
    prompt: { help: "TEXT  the prompt (default a sentence about the cache)" },
    layers: { help: "I,…  layers to draw (default all)" },
    heads: { help: "H,…   heads to draw (default all)" },
  },
  settings: (v) => {
    const prompt = v.prompt ??
      "The KV cache keeps the keys and values of every token, so each new token attends to them.";
    if (!prompt.trim()) throw new UsageError(`--prompt: must not be empty, got "${prompt}"`);
    return {
      prompt,
      ids: tokenizer.encode(prompt),
      layers: v.layers === undefined ? null : integerList("--layers", v.layers, 0, 1000),
      heads: v.heads === undefined ? null : integerList("--heads", v.heads, 0, 1000),
    };
  },
  check: ({ ids, layers, heads }, config) => {
    fitContext(`--prompt (${ids.length} tokens)`, ids.length, config);
    if (layers && layers.at(-1)! >= config.nLayer) {
      throw new UsageError(`--layers ${layers}: the model has layers 0..${config.nLayer - 1}`);
    }
    if (heads && heads.at(-1)! >= config.nHead) {
      throw new UsageError(`--heads ${heads}: the model has heads 0..${config.nHead - 1}`);
    }
  },
});
const { model } = ex.opened;
const { nLayer, nHead, nPositions } = model.config;
const every = (n: number) => Array.from({ length: n }, (_, i) => i);
const layers = ex.settings.layers ?? every(nLayer);
const heads = ex.settings.heads ?? every(nHead);
const { ids } = ex.settings;
const T = ids.length;
/** Axis labels: position and token text, unique even when a token repeats. */
const labels = ids.map((id, i) => `${i} ${tokenizer.decode([id]).trim() || "␣"}`);

const cache = model.newCache();
const { attention } = await model.forward(ids, cache, { attention: true });
cache.destroy();

/** Weight of query t on key k in one head: attention[layer] is [nHead, T, nPositions]. */
const weight = (l: number, h: number, t: number, k: number) =>
  attention![l][(h * T + t) * nPositions + k];

let maxRowSumError = 0;
let maskedNonZero = 0;
for (let l = 0; l < nLayer; l++) {
  for (let h = 0; h < nHead; h++) {
    for (let t = 0; t < T; t++) {
      let sum = 0;
      for (let k = 0; k <= t; k++) sum += weight(l, h, t, k);
      maxRowSumError = Math.max(maxRowSumError, Math.abs(sum - 1));
      for (let k = t + 1; k < nPositions; k++) if (weight(l, h, t, k) !== 0) maskedNonZero++;
    }
  }
}

/** What one head does, in numbers. */
function headSummary(l: number, h: number) {
  let first = 0, self = 0, entropy = 0;
  for (let t = 0; t < T; t++) {
    first += weight(l, h, t, 0);
    self += weight(l, h, t, t);
    for (let k = 0; k <= t; k++) {
      const p = weight(l, h, t, k);
      if (p > 0) entropy -= p * Math.log2(p);
    }
  }
  let top = 0;
  for (let k = 1; k < T; k++) if (weight(l, h, T - 1, k) > weight(l, h, T - 1, top)) top = k;
  return {
    layer: l,
    head: h,
    meanOnFirstToken: first / T,
    meanOnItself: self / T,
    meanEntropyBits: entropy / T,
    lastQueryTopKey: labels[top],
    lastQueryTopWeight: weight(l, h, T - 1, top),
  };
}
const headStats = layers.flatMap((l) => heads.map((h) => headSummary(l, h)));

console.log(`\nprompt: ${T} tokens: ${labels.join(" | ")}`);
printTable(
  ["layer", "head", "on first", "on itself", "entropy bits", "last query's top key", "weight"],
  headStats.map((s) => [
    s.layer,
    s.head,
    s.meanOnFirstToken,
    s.meanOnItself,
    s.meanEntropyBits,
    s.lastQueryTopKey,
    s.lastQueryTopWeight,
  ]),
);
console.log(
  `\nrows sum to 1 within ${maxRowSumError.toExponential(1)}; ` +
    `weights past the causal limit that are not 0: ${maskedNonZero}`,
);

const cells = layers.flatMap((l) =>
  heads.flatMap((h) =>
    ids.flatMap((_, t) =>
      ids.slice(0, t + 1).map((_, k) => ({
        layer: l,
        head: h,
        query: labels[t],
        key: labels[k],
        weight: weight(l, h, t, k),
      }))
    )
  )
);
const cell = Math.max(6, Math.min(16, Math.floor(320 / T)));
await writeResults(
  ex,
  {
    prompt: ex.settings.prompt,
    ids,
    tokens: labels,
    layers,
    heads,
    maxRowSumError,
    maskedNonZero,
    summary: headStats,
    // Per drawn layer and head, the [T, T] weights (row = query, column = key; 0 above).
    weights: layers.map((l) =>
      heads.map((h) => ids.map((_, t) => ids.map((_, k) => weight(l, h, t, k))))
    ),
  },
  "Attention weights per layer (rows) and head (columns): query ↓, key →",
  {
    data: { values: cells },
    facet: {
      row: { field: "layer", type: "ordinal", header: { labelFontSize: 11 } },
      column: { field: "head", type: "ordinal", header: { labelFontSize: 11 } },
    },
    spacing: 6,
    spec: {
      width: cell * T,
      height: cell * T,
      mark: "rect",
      encoding: {
        x: {
          field: "key",
          type: "ordinal",
          sort: labels,
          title: null,
          axis: { labelFontSize: 8, labelAngle: -60 },
        },
        y: {
          field: "query",
          type: "ordinal",
          sort: labels,
          title: null,
          axis: { labelFontSize: 8 },
        },
        color: {
          field: "weight",
          type: "quantitative",
          scale: { scheme: "blues", domain: [0, 1] },
          title: "weight",
        },
      },
    },
  },
);
