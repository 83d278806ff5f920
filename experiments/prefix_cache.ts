/**
 * Experiment: a shared prefix (a system prompt) prefilled once and reused.
 *
 * Production LLM servers keep the K/V of a system prompt that many requests share, so each
 * request pays only for its own tokens. For each prefix length S this times the time to first
 * token (TTFT: the logits of the first new token) of a request made of the prefix and a short
 * user prompt, two ways: a full prefill of S + U tokens, and copying the prefix's K/V from a
 * cache filled once (`KVCache.copyPrefix`) then prefilling only the U user tokens. It also
 * generates greedy tokens both ways and checks they are the same ids, and reports what N
 * requests cost in all (the prefix once plus N reuses, against N full prefills).
 *
 * Default (embedded 124M): S = 16, 64, 256, 512, U = 8, 8 tokens compared, N = 10: about
 * a minute here. `--quick` (tiny fixture): S = 8, 32, 96, seconds.
 *
 * @module
 */
import { generate, greedyOptions, prefillPrefix } from "../mod.ts";
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
const USER_TOKENS = 8;
/** Tokens generated per request. */
const TOKENS = 8;

const ex = await startExperiment({
  name: "prefix_cache",
  about: "time to first token with and without reusing a prefilled prefix",
  options: {
    lengths: { help: "S,…  prefix lengths (default 16,64,256,512; --quick 8,32,96)" },
    requests: { help: "N   requests sharing the prefix, for the totals (default 10)" },
  },
  reps: 3,
  settings: (v, quick) => ({
    lengths: integerList("--lengths", v.lengths ?? (quick ? "8,32,96" : "16,64,256,512"), 1, 1e6),
    requests: integer("--requests", v.requests ?? "10", 1, 10_000),
  }),
  check: ({ lengths }, config) =>
    fitContext(
      `--lengths ${lengths} (and a ${USER_TOKENS}-token request, ${TOKENS} tokens generated)`,
      lengths.at(-1)! + USER_TOKENS + TOKENS,
      config,
    ),
});
const { model } = ex.opened;
const { lengths, requests } = ex.settings;
const { reps } = ex;
const tokens = TOKENS;

const text = textTokens(lengths.at(-1)! + USER_TOKENS);
const user = text.slice(text.length - USER_TOKENS);
const greedy = greedyOptions(tokens);
const cache = model.newCache();
const rows = [];
for (const S of lengths) {
  const system = text.slice(0, S);
  const prefillMs = await measure(
    async () => (await prefillPrefix(model, system)).destroy(),
    reps,
    BUDGET_MS,
  );
  const prefix = await prefillPrefix(model, system);
  // Full prefill of prefix + user prompt, as a request that shares nothing.
  const full = await measure(
    () => {
      cache.reset();
      return model.forward([...system, ...user], cache);
    },
    reps,
    BUDGET_MS,
  );
  // The prefix's K/V copied from the shared cache, then only the user's tokens.
  const reused = await measure(
    () => {
      cache.copyPrefix(prefix);
      return model.forward(user, cache);
    },
    reps,
    BUDGET_MS,
  );
  const a = await generate(model, cache, user, { ...greedy, systemIds: system });
  const b = await generate(model, cache, user, { ...greedy, systemIds: system, prefix });
  const c = await generate(model, cache, [...system, ...user], greedy);
  prefix.destroy();
  const sameIds = a.ids.join() === b.ids.join() && b.ids.join() === c.ids.join();
  rows.push({
    prefix: S,
    fullMs: full.medianMs,
    reusedMs: reused.medianMs,
    prefixPrefillMs: prefillMs.medianMs,
    speedup: full.medianMs / reused.medianMs,
    totalFullMs: requests * full.medianMs,
    totalReusedMs: prefillMs.medianMs + requests * reused.medianMs,
    ids: b.ids,
    sameIds,
  });
  console.log(
    `  S=${S}: full ${full.medianMs.toFixed(1)} ms, reused ${reused.medianMs.toFixed(1)} ms`,
  );
}
cache.destroy();

console.log(
  `\ntime to first token of a request: ${USER_TOKENS} user tokens after an S-token prefix ` +
    `(medians of up to ${reps} runs); totals for ${requests} requests`,
);
printTable(
  [
    "S",
    "full prefill ms",
    "reuse ms",
    "speedup",
    `${requests} full ms`,
    `prefix + ${requests} reuses ms`,
    "same ids",
  ],
  rows.map((r) => [
    r.prefix,
    r.fullMs,
    r.reusedMs,
    `${r.speedup.toFixed(1)}×`,
    r.totalFullMs,
    r.totalReusedMs,
    r.sameIds ? "yes" : "NO",
  ]),
);

const points = rows.flatMap((r) => [
  { prefix: r.prefix, how: "full prefill (prefix + prompt)", ms: r.fullMs },
  { prefix: r.prefix, how: "prefix K/V copied, prompt prefilled", ms: r.reusedMs },
]);
await writeResults(
  ex,
  { lengths, reps, requests, userTokens: USER_TOKENS, tokens, budgetMs: BUDGET_MS, rows },
  "Prefix cache: time to first token with and without reusing the prefix",
  lineChart(
    points,
    { field: "prefix", type: "quantitative", title: "shared prefix length S (tokens)" },
    { field: "ms", type: "quantitative", title: "time to first token (ms, median)" },
    "how",
  ),
);
