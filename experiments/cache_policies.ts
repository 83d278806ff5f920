/**
 * Experiment: every cache policy side by side on one workload.
 *
 * Each policy (`parseCachePolicy`: preallocated, grow, f16, int8, window:S,R) generates the
 * same greedy continuation of a prompt. For each it reports the bytes the cache allocated and
 * used at the end (read from the cache's own buffers), decode tokens per second, and the
 * parity cost against the preallocated f32 cache: the largest |logit difference| over the
 * same tokens fed step by step (teacher forcing), and how many greedy tokens agree.
 *
 * The window only acts once the cache is full: policies without one stop at the context, and
 * the comparison covers the tokens both produced; the window's row shows what it evicted.
 *
 * Default (embedded 124M): a 16-token prompt and 128 tokens, window:4,60: about 2 minutes.
 * `--quick` (tiny fixture): 200 tokens, so the window drops tokens, seconds.
 *
 * @module
 */
import { generate, greedyOptions, parseCachePolicy } from "../mod.ts";
import { checkWindow } from "../run/sliding_window.ts";
import { integer, UsageError } from "../cli/usage.ts";
import { mib, printTable, startExperiment, textTokens, writeResults } from "./lib.ts";

/** Parses `--window S,R` into the window policy, or says what is wrong with it. */
function windowPolicy(value: string) {
  try {
    return parseCachePolicy(`window:${value}`);
  } catch (e) {
    throw new UsageError(`--window: expected S,R (two integers), got "${value}"`, { cause: e });
  }
}

const ex = await startExperiment({
  name: "cache_policies",
  about: "every cache policy side by side: bytes, tok/s and parity cost",
  options: {
    tokens: { help: "N    greedy tokens after the prompt (default 128; --quick 200)" },
    window: { help: "S,R  the window policy's sinks and recent tokens (default 4,60)" },
  },
  settings: (v, quick) => ({
    tokens: integer("--tokens", v.tokens ?? (quick ? "200" : "128"), 1, 100_000),
    window: windowPolicy(v.window ?? "4,60"),
  }),
  check: ({ window }, config) => {
    try {
      checkWindow(window.window!, config.nPositions);
    } catch (e) {
      throw new UsageError(`--window: ${(e as Error).message}`);
    }
  },
});
const { model } = ex.opened;
const { tokens } = ex.settings;
const { nPositions } = model.config;
const prompt = textTokens(16);
const policies = [
  ...["preallocated", "grow", "f16", "int8"].map(parseCachePolicy),
  ex.settings.window,
];

/** Logits of the prefill and of every step fed `feed`, evicting as generate does. */
async function logitsOf(i: number, feed: number[]): Promise<Float32Array[]> {
  const p = policies[i];
  const cache = model.newCache(p.cache);
  const out = [(await model.forward(prompt, cache)).logits];
  for (const id of feed) {
    if (p.window && cache.length >= nPositions - 1) cache.evict(p.window.sinks, p.window.recent);
    out.push((await model.forward([id], cache)).logits);
  }
  cache.destroy();
  return out;
}

const rows = [];
let base: { ids: number[]; logits: Float32Array[] } | null = null;
for (const [i, p] of policies.entries()) {
  const cache = model.newCache(p.cache);
  const r = await generate(model, cache, prompt, { ...greedyOptions(tokens), window: p.window });
  const run = {
    ids: r.ids,
    bytesAllocated: cache.bytesAllocated,
    bytesUsed: cache.bytesUsed,
    tokPerS: r.decodeSteps / (r.decodeMs / 1000),
    evicted: r.evictedTokens,
  };
  cache.destroy();
  // Compared over the tokens both produced (policies without a window stop at the context),
  // every policy fed the first policy's tokens.
  const n = Math.min(run.ids.length, base?.ids.length ?? Infinity);
  const logits = await logitsOf(i, (base?.ids ?? run.ids).slice(0, n - 1));
  base ??= { ids: run.ids, logits };
  let maxLogitDiff = 0;
  logits.slice(0, n).forEach((row, s) =>
    row.forEach((v, j) => (maxLogitDiff = Math.max(maxLogitDiff, Math.abs(v - base!.logits[s][j]))))
  );
  const same = run.ids.slice(0, n).filter((id, j) => id === base!.ids[j]).length;
  rows.push({ policy: p.name, ...run, maxLogitDiff, greedyAgreement: same / n });
  console.log(
    `  ${p.name}: ${run.tokPerS.toFixed(1)} tok/s, ${same}/${run.ids.length} tokens as the first`,
  );
}

console.log(
  `\nprompt ${prompt.length} tokens + ${tokens} greedy tokens; parity against ${rows[0].policy}`,
);
printTable(
  ["policy", "MiB allocated", "MiB used", "tok/s", "evicted", "max |Δlogit|", "greedy agree"],
  rows.map((r) => [
    r.policy,
    mib(r.bytesAllocated),
    mib(r.bytesUsed),
    r.tokPerS,
    r.evicted,
    r.maxLogitDiff === 0 ? "0" : r.maxLogitDiff.toExponential(2),
    `${(100 * r.greedyAgreement).toFixed(0)} %`,
  ]),
);

const bar = (field: string, title: string) => ({
  width: 200,
  height: 200,
  mark: "bar" as const,
  encoding: {
    x: { field: "policy", type: "nominal" as const, sort: null, title: null },
    y: { field, type: "quantitative" as const, title },
    color: { field: "policy", type: "nominal" as const, legend: null },
  },
});
await writeResults(
  ex,
  { prompt, tokens, rows },
  "Cache policies side by side: bytes, speed and parity cost",
  {
    data: { values: rows.map((r) => ({ ...r, mibAllocated: mib(r.bytesAllocated) })) },
    hconcat: [
      bar("mibAllocated", "MiB allocated"),
      bar("tokPerS", "decode tok/s"),
      bar("greedyAgreement", "greedy tokens equal to the first policy's"),
    ],
  },
);
