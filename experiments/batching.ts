/**
 * Experiment: decoding B prompts together.
 *
 * A decode step reads every weight for a single token; `generateBatch` feeds B sequences'
 * tokens through one step, so each weight read serves B rows, while each sequence attends
 * over its own cache (prompts of different lengths, nothing padded). For each B this times
 * the batched decode and reports aggregate and per-sequence tokens per second, and checks
 * that every sequence's greedy tokens are those it gets decoded alone.
 *
 * Default (embedded 124M): B = 1, 2, 4, 8 and 32 tokens: about a minute here.
 * `--quick` (tiny fixture): B = 1, 2, 4 and 16 tokens, seconds.
 *
 * @module
 */
import { generate, generateBatch, greedyOptions } from "../mod.ts";
import { integer, integerList } from "../cli/usage.ts";
import { fitContext, printTable, startExperiment, textTokens, writeResults } from "./lib.ts";
import { lineChart } from "../io/chart.ts";

/** The longest of B prompts (4, 7, 10, … tokens: different lengths, nothing padded). */
const longestPrompt = (B: number) => 4 + 3 * (B - 1);

const ex = await startExperiment({
  name: "batching",
  about: "aggregate decode tokens per second with B prompts decoded together",
  options: {
    batches: { help: "B,…  batch sizes (default 1,2,4,8; --quick 1,2,4)" },
    tokens: { help: "N    tokens per sequence (default 32; --quick 16)" },
  },
  settings: (v, quick) => ({
    batches: integerList("--batches", v.batches ?? (quick ? "1,2,4" : "1,2,4,8"), 1, 256),
    tokens: integer("--tokens", v.tokens ?? (quick ? "16" : "32"), 2, 10_000),
  }),
  check: ({ batches, tokens }, config) =>
    fitContext(
      `--batches ${batches} --tokens ${tokens}`,
      longestPrompt(batches.at(-1)!) + tokens,
      config,
    ),
});
const { model } = ex.opened;
const { batches, tokens } = ex.settings;
const text = textTokens(64);
const promptsOf = (B: number) =>
  Array.from({ length: B }, (_, b) => text.slice(b, b + longestPrompt(b + 1)));
const opts = greedyOptions(tokens);

await generateBatch(model, promptsOf(batches.at(-1)!), { ...opts, maxTokens: 2 }); // warm-up
interface Row {
  batch: number;
  promptLengths: number[];
  stepMs: number;
  aggregateTokensPerSecond: number;
  perSequenceTokensPerSecond: number;
  sameAsAlone: boolean;
}
const rows: Row[] = [];
for (const B of batches) {
  const prompts = promptsOf(B);
  const batch = await generateBatch(model, prompts, opts);
  let same = true;
  for (const [b, p] of prompts.entries()) {
    const cache = model.newCache();
    const alone = await generate(model, cache, p, { ...opts, chainOnGpu: false });
    cache.destroy();
    same &&= alone.ids.join() === batch.ids[b].join();
  }
  const stepMs = batch.decodeMs / batch.decodeSteps;
  rows.push({
    batch: B,
    promptLengths: prompts.map((p) => p.length),
    stepMs,
    aggregateTokensPerSecond: batch.decodeTokens / (batch.decodeMs / 1000),
    perSequenceTokensPerSecond: 1000 / stepMs,
    sameAsAlone: same,
  });
  console.log(`  B=${B}: ${stepMs.toFixed(1)} ms per step, same tokens as alone: ${same}`);
}

console.log(`\n${tokens} greedy tokens per sequence, prompts of 4, 7, 10, … tokens`);
printTable(
  ["B", "ms per step", "aggregate tok/s", "tok/s per sequence", "speedup", "same as alone"],
  rows.map((r) => [
    r.batch,
    r.stepMs,
    r.aggregateTokensPerSecond,
    r.perSequenceTokensPerSecond,
    `${(r.aggregateTokensPerSecond / rows[0].aggregateTokensPerSecond).toFixed(1)}×`,
    r.sameAsAlone ? "yes" : "NO",
  ]),
);

await writeResults(
  ex,
  { tokens, rows },
  "Batched decoding: aggregate tokens per second by batch size",
  lineChart(
    rows,
    { field: "batch", type: "quantitative", title: "sequences decoded together (B)" },
    { field: "aggregateTokensPerSecond", type: "quantitative", title: "aggregate tok/s" },
  ),
);
