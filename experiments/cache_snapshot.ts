/**
 * Experiment: resuming from a cache snapshot instead of prefilling. For each prompt length L
 * it times the prefill of L tokens into an empty cache, the save of that cache to a snapshot
 * file (`saveSnapshot`: read the rows back from the GPU, hash, write atomically) and its
 * restore into another cache of the model (`loadSnapshot`: read and check the file, verify
 * its checksum, write the rows to the GPU and wait for them). It reports the file's size next
 * to its formula, 2 · n_layer · L · n_embd · 4 bytes of K/V + 4 · L bytes of token ids + the
 * header, and checks that the restore is exact: the restored K/V are bit-identical, and the
 * continuation (a few follow-up tokens, then greedy decoding) gives bit-identical logits and
 * the same tokens from the restored cache as from the prefilled one.
 *
 * Times are medians of up to `--reps` runs after a warm-up run, within a 20 s budget per
 * measurement. The snapshot files go to a temporary folder, removed at the end, so the file
 * is read back from the OS page cache: the restore time is that of a warm file.
 *
 * Default (embedded 124M): L = 16, 64, 256, 512: about a minute here. `--quick` (tiny
 * fixture): L = 8, 32, 100, seconds.
 *
 * @module
 */
import { argmax, gpt2Tokenizer, type KVCache, loadSnapshot, saveSnapshot } from "../mod.ts";
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

const BUDGET_MS = 20_000;
/** What the conversation goes on with after the snapshot. */
const followUp = gpt2Tokenizer().encode(" And then it went on");

const ex = await startExperiment({
  name: "cache_snapshot",
  about: "restoring a saved KV cache vs prefilling the prompt, by length; exact continuation",
  options: {
    lengths: { help: "L,…  prompt lengths (default 16,64,256,512; --quick 8,32,100)" },
    tokens: { help: "N     greedy tokens after the follow-up, compared both ways (default 8)" },
  },
  reps: 3,
  settings: (v, quick) => ({
    lengths: integerList("--lengths", v.lengths ?? (quick ? "8,32,100" : "16,64,256,512"), 1, 1e6),
    tokens: integer("--tokens", v.tokens ?? "8", 1, 1000),
  }),
  check: ({ lengths, tokens }, config) =>
    fitContext(
      `--lengths ${lengths} --tokens ${tokens} (and ${followUp.length} follow-up tokens)`,
      lengths.at(-1)! + followUp.length + tokens,
      config,
    ),
});
const { model } = ex.opened;
const { lengths, tokens } = ex.settings;
const { reps } = ex;
const { nLayer, nEmbd } = model.config;

/** 2 · n_layer · L · n_embd · 4 bytes of K/V. */
const kvFormula = (L: number) => 2 * nLayer * L * nEmbd * 4;

/** The follow-up tokens, then `tokens` greedy tokens: every logits row and the tokens. */
async function continueFrom(cache: KVCache) {
  const { logits } = await model.forward(followUp, cache, { logits: "all" });
  const greedy = await model.decodeGreedy(
    argmax(logits.slice(-model.config.vocabSize)),
    cache,
    tokens,
  );
  return { logits, greedy };
}

/** Bitwise equality of float arrays (NaN-safe, -0 ≠ 0). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.every((v, i) => v === y[i]);
}

const dir = await Deno.makeTempDir({ prefix: "kvgpt-cache-snapshot-" });
const prefilled = model.newCache();
const restored = model.newCache();
const rows = [];
try {
  for (const L of lengths) {
    const prompt = textTokens(L);
    const path = `${dir}/L${L}.safetensors`;
    const prefill = await measure(
      () => {
        prefilled.reset();
        return model.forward(prompt, prefilled);
      },
      reps,
      BUDGET_MS,
    );
    const save = await measure(
      () => saveSnapshot(path, prefilled, prompt, model.model),
      reps,
      BUDGET_MS,
    );
    const restore = await measure(() => loadSnapshot(path, model.model, restored), reps, BUDGET_MS);

    const file = await Deno.readFile(path);
    const fileBytes = file.length;
    const headerBytes = 8 + Number(new DataView(file.buffer).getBigUint64(0, true));
    const kvBytes = kvFormula(L);
    const idsBytes = 4 * L;

    // Exactness: the K/V, then the continuation from each cache.
    const [want, got] = [await prefilled.read(), await restored.read()];
    const identicalKv = restored.length === L &&
      want.every((l, i) => sameBits(l.k, got[i].k) && sameBits(l.v, got[i].v));
    const a = await continueFrom(prefilled);
    const b = await continueFrom(restored);
    const identicalLogits = sameBits(a.logits, b.logits);
    const identicalTokens = a.greedy.join() === b.greedy.join();

    rows.push({
      length: L,
      prefillMs: prefill.medianMs,
      saveMs: save.medianMs,
      restoreMs: restore.medianMs,
      restoreSpeedup: prefill.medianMs / restore.medianMs,
      fileBytes,
      kvBytes,
      idsBytes,
      headerBytes,
      fileBytesMatchFormula: fileBytes === kvBytes + idsBytes + headerBytes,
      identicalKv,
      identicalLogits,
      identicalTokens,
      continuation: a.greedy,
      timings: { prefill, save, restore },
    });
    console.log(
      `  L=${L}: prefill ${prefill.medianMs.toFixed(1)} ms, save ${save.medianMs.toFixed(1)} ms, ` +
        `restore ${restore.medianMs.toFixed(1)} ms`,
    );
  }
} finally {
  prefilled.destroy();
  restored.destroy();
  await Deno.remove(dir, { recursive: true });
}

console.log(`\nresume a prompt of L tokens (medians of up to ${reps} runs)`);
printTable(
  [
    "L",
    "prefill ms",
    "save ms",
    "restore ms",
    "restore speedup",
    "file B",
    "K/V+ids+header B",
    "identical",
  ],
  rows.map((r) => [
    r.length,
    r.prefillMs,
    r.saveMs,
    r.restoreMs,
    `${r.restoreSpeedup.toFixed(1)}×`,
    r.fileBytes,
    `${r.kvBytes}+${r.idsBytes}+${r.headerBytes}`,
    r.identicalKv && r.identicalLogits && r.identicalTokens ? "yes" : "NO",
  ]),
);
const identical = rows.every((r) => r.identicalKv && r.identicalLogits && r.identicalTokens);
const formulaHolds = rows.every((r) => r.fileBytesMatchFormula);
console.log(
  `\nfile bytes = 2·n_layer·L·n_embd·4 + 4·L + header: ${formulaHolds ? "exact" : "MISMATCH"}` +
    `\nrestored K/V, follow-up logits and ${tokens} greedy tokens identical: ` +
    (identical ? "yes" : "NO"),
);

const points = rows.flatMap((r) => [
  { length: r.length, what: "prefill the prompt", ms: r.prefillMs },
  { length: r.length, what: "save a snapshot", ms: r.saveMs },
  { length: r.length, what: "restore the snapshot", ms: r.restoreMs },
]);
const x = {
  field: "length",
  type: "quantitative",
  title: "prompt length L (tokens)",
  scale: { type: "log" },
} as const;
await writeResults(
  ex,
  {
    lengths,
    reps,
    budgetMs: BUDGET_MS,
    followUp,
    tokens,
    formula: "file bytes = 2 * n_layer * L * n_embd * 4 + 4 * L + header bytes",
    identical,
    formulaHolds,
    rows,
  },
  "Cache snapshots: restore vs prefill",
  {
    hconcat: [
      {
        ...lineChart(
          points,
          x,
          { field: "ms", type: "quantitative", title: "ms (median, log)", scale: { type: "log" } },
          "what",
        ),
        width: 320,
      },
      {
        ...lineChart(
          rows.map((r) => ({ length: r.length, fileMiB: r.fileBytes / 2 ** 20 })),
          x,
          {
            field: "fileMiB",
            type: "quantitative",
            title: "snapshot file (MiB)",
            scale: { type: "log" },
          },
        ),
        width: 220,
      },
    ],
  },
);
