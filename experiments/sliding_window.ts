/**
 * Experiment: generating past the context with a sliding window and attention sinks.
 *
 * GPT-2 has n_positions rows of position embeddings, so a plain cache stops there. With
 * `window: { sinks, recent }` (StreamingLLM's scheme) a full cache keeps its first `sinks`
 * tokens and its last `recent` ones and generation goes on, each new token taking the
 * position of the row it fills. This generates 4 × n_positions tokens greedily, records for
 * every token the cache length, the bytes it holds and the step time, and reports them per
 * context-sized segment: the bytes and the tokens per second stay flat instead of growing.
 *
 * Default (embedded 124M): 4096 tokens with sinks 4 and recent 764: about 5 minutes here.
 * `--quick` (tiny fixture): 512 tokens with sinks 4 and recent 92, seconds.
 *
 * @module
 */
import { generate, greedyOptions } from "../mod.ts";
import { integer, UsageError } from "../cli/usage.ts";
import { checkWindow } from "../run/generate.ts";
import { median, mib, printTable, startExperiment, textTokens, writeResults } from "./lib.ts";

/** The recent tokens kept: `--recent`, or by default a quarter of the context dropped at a time (copies stay rare). */
const recentOf = (s: { sinks: number; recent: number | null }, nPositions: number) =>
  s.recent ?? Math.floor((3 * nPositions) / 4) - s.sinks;

const ex = await startExperiment({
  name: "sliding_window",
  about: "cache bytes and tok/s over 4× the context with a sliding window and attention sinks",
  options: {
    sinks: { help: "S    first tokens always kept (default 4)" },
    recent: { help: "R   last tokens kept when the cache is full (default ¾ n_positions − S)" },
    contexts: { help: "N how many context lengths of tokens to generate (default 4)" },
  },
  settings: (v) => ({
    sinks: integer("--sinks", v.sinks ?? "4", 0, 1e6),
    recent: v.recent === undefined ? null : integer("--recent", v.recent, 1, 1e6),
    contexts: integer("--contexts", v.contexts ?? "4", 1, 64),
  }),
  check: (s, config) => {
    const recent = recentOf(s, config.nPositions);
    try {
      checkWindow({ sinks: s.sinks, recent }, config.nPositions);
    } catch (e) {
      throw new UsageError(`--sinks ${s.sinks} --recent ${recent}: ${(e as Error).message}`);
    }
  },
});
const { model } = ex.opened;
const { nPositions, nLayer, nEmbd } = model.config;
const { sinks, contexts } = ex.settings;
const recent = recentOf(ex.settings, nPositions);
const total = contexts * nPositions;

const cache = model.newCache();
const steps: { token: number; length: number; bytesUsed: number; ms: number }[] = [];
let last = performance.now();
const result = await generate(model, cache, textTokens(8), {
  ...greedyOptions(total),
  argmaxOnGpu: false, // one token per step, so every step is timed on its own
  window: { sinks, recent },
  onToken: () => {
    const now = performance.now();
    steps.push({
      token: steps.length,
      length: cache.length,
      bytesUsed: cache.bytesUsed,
      ms: now - last,
    });
    last = now;
  },
});
const allocated = cache.bytesAllocated;
cache.destroy();

const formula = (rows: number) => 2 * nLayer * rows * nEmbd * 4;
const segments = Array.from({ length: contexts }, (_, i) => {
  const part = steps.slice(i * nPositions + 1, (i + 1) * nPositions); // step 0 is the prefill
  const ms = median(part.map((s) => s.ms));
  return {
    segment: i + 1,
    tokens: `${i * nPositions}–${(i + 1) * nPositions - 1}`,
    msPerToken: ms,
    tokensPerSecond: 1000 / ms,
    maxLength: Math.max(...part.map((s) => s.length)),
    maxBytesUsed: Math.max(...part.map((s) => s.bytesUsed)),
  };
});
const flatBytes = steps.every((s) => s.bytesUsed === formula(s.length)) &&
  Math.max(...steps.map((s) => s.length)) <= nPositions - 1;

console.log(
  `\n${total} tokens (${contexts} × n_positions ${nPositions}), sinks ${sinks}, recent ${recent}; ` +
    `${result.evictedTokens} tokens evicted`,
);
printTable(
  ["segment", "tokens", "ms/token", "tok/s", "max cache length", "max MiB used", "MiB allocated"],
  segments.map((s) => [
    s.segment,
    s.tokens,
    s.msPerToken,
    s.tokensPerSecond,
    s.maxLength,
    mib(s.maxBytesUsed),
    mib(allocated),
  ]),
);
console.log(
  `cache bytes = 2 · n_layer · length · n_embd · 4 at every step, never past n_positions: ` +
    (flatBytes ? "yes" : "NO"),
);

const bin = Math.max(1, Math.floor(nPositions / 16));
const points = [];
for (let i = 1; i + bin <= steps.length; i += bin) {
  const part = steps.slice(i, i + bin);
  points.push({
    token: i,
    tokensPerSecond: 1000 / median(part.map((s) => s.ms)),
    mibUsed: mib(part.at(-1)!.bytesUsed),
  });
}
const x = { field: "token", type: "quantitative", title: "tokens generated" } as const;
await writeResults(
  ex,
  {
    sinks,
    recent,
    nPositions,
    total,
    evictedTokens: result.evictedTokens,
    tokens: result.ids.length,
    flatBytes,
    bytesAllocated: allocated,
    segments,
    steps,
  },
  "Sliding window + attention sinks: generating past the context",
  {
    vconcat: [
      {
        width: 560,
        height: 160,
        data: { values: points },
        mark: { type: "line", color: "#4c78a8" },
        encoding: { x, y: { field: "mibUsed", type: "quantitative", title: "cache MiB used" } },
      },
      {
        width: 560,
        height: 160,
        data: { values: points },
        mark: { type: "line", color: "#f58518" },
        encoding: {
          x,
          y: { field: "tokensPerSecond", type: "quantitative", title: "tokens per second" },
        },
      },
    ],
  },
);
