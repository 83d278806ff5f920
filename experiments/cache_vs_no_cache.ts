/**
 * Experiment: generation with and without the KV cache as the sequence grows.
 *
 * To produce the token after a sequence of L tokens, a model without a cache recomputes all
 * L positions (a forward of L tokens: O(L) work per step, O(n²) to generate n tokens); with
 * the cache it runs only the newest token against the L − 1 cached keys and values (nearly
 * constant work per step, O(n) in all). For each length L this times both steps: the
 * uncached one (a forward of the first L tokens from an empty cache) and the cached one
 * (the cache rewound to L − 1 tokens, the L-th token decoded), and reports tokens per
 * second and the speedup. Then it generates a few tokens greedily both ways with
 * `generate()` and checks that they are the same tokens.
 *
 * Times are medians of up to `--reps` runs after a warm-up run, within a 15 s budget per
 * measurement (a single run longer than that is the one timing kept).
 *
 * Default (embedded 124M): L = 1, 16, 64, 256, 1024 and 8 generated tokens: about 2–3
 * minutes here (one uncached step at 1024 is over a minute). `--quick` (tiny fixture):
 * L = 1, 16, 32, 64, 96, 128 and 24 tokens, seconds.
 *
 * @module
 */
import { generate, greedyOptions } from "../mod.ts";
import { integer, integerList } from "../cli/usage.ts";
import {
  fitContext,
  measure,
  printTable,
  startExperiment,
  textTokens,
  writeResults,
} from "./lib.ts";
import { lineChart } from "../io/chart.ts";

const BUDGET_MS = 15_000;

const ex = await startExperiment({
  name: "cache_vs_no_cache",
  about: "tokens per second with and without the KV cache, by sequence length",
  options: {
    lengths: {
      help: "L,…  sequence lengths (default 1,16,64,256,1024; --quick 1,16,32,64,96,128)",
    },
    tokens: { help: "N     tokens generated both ways to compare (default 8; --quick 24)" },
  },
  reps: 3,
  settings: (v, quick) => ({
    lengths: integerList(
      "--lengths",
      v.lengths ?? (quick ? "1,16,32,64,96,128" : "1,16,64,256,1024"),
      1,
      1e6,
    ),
    tokens: integer("--tokens", v.tokens ?? (quick ? "24" : "8"), 1, 1000),
  }),
  check: ({ lengths }, config) => fitContext(`--lengths ${lengths}`, lengths.at(-1)!, config),
});
const { model } = ex.opened;
const { lengths, tokens } = ex.settings;
const { reps } = ex;

const sequence = textTokens(lengths.at(-1)!);
const cache = model.newCache();
const rows = [];
for (const L of lengths) {
  const ids = sequence.slice(0, L);
  // Without the cache: all L tokens from scratch. This also leaves their K/V in the cache.
  const uncached = await measure(
    () => {
      cache.reset();
      return model.forward(ids, cache);
    },
    reps,
    BUDGET_MS,
  );
  // With the cache: keep the first L − 1 tokens' K/V and run only the L-th token.
  const cached = await measure(
    () => {
      cache.length = L - 1;
      return model.forward([ids[L - 1]], cache);
    },
    reps,
    BUDGET_MS,
  );
  rows.push({
    length: L,
    cachedMs: cached.medianMs,
    uncachedMs: uncached.medianMs,
    cachedTokensPerSecond: 1000 / cached.medianMs,
    uncachedTokensPerSecond: 1000 / uncached.medianMs,
    speedup: uncached.medianMs / cached.medianMs,
    cached,
    uncached,
  });
  console.log(
    `  L=${L}: cached ${cached.medianMs.toFixed(1)} ms, uncached ${
      uncached.medianMs.toFixed(1)
    } ms`,
  );
}
cache.destroy();

console.log(`\ntime of the step that produces token L+1 (medians of up to ${reps} runs)`);
printTable(
  ["L", "cached ms", "cached tok/s", "uncached ms", "uncached tok/s", "speedup"],
  rows.map((r) => [
    r.length,
    r.cachedMs,
    r.cachedTokensPerSecond,
    r.uncachedMs,
    r.uncachedTokensPerSecond,
    `${r.speedup.toFixed(1)}×`,
  ]),
);

// Same tokens both ways: greedy generation after a short prompt.
const prompt = textTokens(8);
const options = (useCache: boolean) => ({ ...greedyOptions(tokens), useCache });
const check = model.newCache();
const withCache = await generate(model, check, prompt, options(true));
const withoutCache = await generate(model, check, prompt, options(false));
check.destroy();
const sameTokens = withCache.ids.join() === withoutCache.ids.join();
console.log(
  `\n${tokens} greedy tokens after an ${prompt.length}-token prompt: ` +
    `cached ${withCache.decodeMs.toFixed(0)} ms, uncached ${withoutCache.decodeMs.toFixed(0)} ms ` +
    `of decoding; same tokens: ${sameTokens ? "yes" : "NO"}`,
);

const points = rows.flatMap((r) => [
  { length: r.length, how: "with the KV cache", ms: r.cachedMs, tps: r.cachedTokensPerSecond },
  {
    length: r.length,
    how: "without (recompute all)",
    ms: r.uncachedMs,
    tps: r.uncachedTokensPerSecond,
  },
]);
const x = { field: "length", type: "quantitative", title: "sequence length L (tokens)" } as const;
await writeResults(
  ex,
  {
    lengths,
    reps,
    budgetMs: BUDGET_MS,
    rows,
    generation: {
      prompt,
      tokens,
      cachedIds: withCache.ids,
      uncachedIds: withoutCache.ids,
      cachedDecodeMs: withCache.decodeMs,
      uncachedDecodeMs: withoutCache.decodeMs,
    },
    sameTokens,
  },
  "With vs without the KV cache: one generation step at length L",
  {
    hconcat: [
      {
        ...lineChart(
          points,
          x,
          { field: "ms", type: "quantitative", title: "ms per step (median)" },
          "how",
        ),
        width: 300,
      },
      {
        ...lineChart(
          points,
          x,
          {
            field: "tps",
            type: "quantitative",
            title: "tokens per second",
            scale: { type: "log" },
          },
          "how",
        ),
        width: 300,
      },
      {
        ...lineChart(rows, x, {
          field: "speedup",
          type: "quantitative",
          title: "speedup of the cache (×)",
        }),
        width: 220,
      },
    ],
  },
);
