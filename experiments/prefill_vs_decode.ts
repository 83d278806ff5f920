/**
 * Experiment: prefill versus decode. A prefill runs L prompt tokens through the model in one
 * pass (matrix-matrix work); a decode step runs one token against the L keys already cached
 * (matrix-vector work, a full pass over the weights for one token).
 *
 * For each prompt length L it times the prefill of L tokens into an empty cache, and the
 * decode step whose query attends to L keys (the cache is rewound to L − 1 tokens and one
 * token decoded, again and again). It reports ms per token and tokens per second, and,
 * where the adapter has `timestamp-query`, the GPU time of every kernel from a profiled run,
 * grouped as matmul (projections, MLP with its GELU, residual adds, lm_head), attention
 * (store_kv, scores, softmax, values, or decode's single attend.one) and the rest (embedding,
 * layernorm).
 * Wall times include the read-back of the logits (on llvmpipe a CPU wait costs ~10 ms).
 *
 * Times are medians of up to `--reps` runs after a warm-up run, within a 15 s budget per
 * measurement; the warm-up run is the profiled one, and when it alone takes longer than the
 * budget it is also the one timing kept (profiling adds ~0.1 ms per kernel).
 *
 * Default (embedded 124M): L = 1, 8, 64, 256, 1024: about 2–3 minutes here (the 1024-token
 * prefill alone is over a minute). `--quick` (tiny fixture): L = 1, 8, 32, 128, seconds.
 *
 * @module
 */
import type { KernelTime } from "../mod.ts";
import { integerList } from "../cli/usage.ts";
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
  name: "prefill_vs_decode",
  about: "prefill and decode time per token, and GPU time per kernel group, by length",
  decode: "general", // the kernels one by one (a small model's fused step is one dispatch)
  options: {
    lengths: { help: "L,…  prompt lengths (default 1,8,64,256,1024; --quick 1,8,32,128)" },
  },
  reps: 3,
  settings: (v, quick) => ({
    lengths: integerList(
      "--lengths",
      v.lengths ?? (quick ? "1,8,32,128" : "1,8,64,256,1024"),
      1,
      1e6,
    ),
  }),
  check: ({ lengths }, config) => fitContext(`--lengths ${lengths}`, lengths.at(-1)!, config),
});
const { model } = ex.opened;
const { lengths } = ex.settings;
const { reps } = ex;
if (!ex.gpu.hasTimestamps) console.log("no timestamp-query on this adapter: no kernel times");

/** Which group a dispatch label belongs to (labels look like `matmul 1x768x2304`). */
function groupOf(label: string): "matmul" | "attention" | "rest" {
  const kind = label.split(" ")[0];
  if (kind === "matmul" || kind === "lm_head") return "matmul";
  // K/V into the cache, then scores, the causal softmax and the weighted values.
  if (kind === "store_kv" || kind.startsWith("attend") || kind === "softmax") return "attention";
  return "rest";
}

/** GPU ms per kernel group, from a profiled run. */
function kernelGroups(times: readonly KernelTime[] | undefined) {
  if (!times) return null;
  const groups = { matmul: 0, attention: 0, rest: 0 };
  for (const { label, ns } of times) groups[groupOf(label)] += ns / 1e6;
  return groups;
}

const profile = ex.gpu.hasTimestamps;
const cache = model.newCache();
const rows = [];
for (const L of lengths) {
  const ids = textTokens(L);
  let prefillKernels: KernelTime[] | undefined;
  const prefill = await measure(
    async (call) => {
      cache.reset();
      const out = await model.forward(ids, cache, { profile: profile && call === 0 });
      if (call === 0) prefillKernels = out.profile;
    },
    reps,
    BUDGET_MS,
  );
  // The cache now holds the L prompt tokens: rewind to L − 1 and decode token L, repeatedly.
  let decodeKernels: KernelTime[] | undefined;
  const decode = await measure(
    async (call) => {
      cache.length = L - 1;
      const out = await model.forward([ids[L - 1]], cache, { profile: profile && call === 0 });
      if (call === 0) decodeKernels = out.profile;
    },
    reps,
    BUDGET_MS,
  );
  rows.push({
    length: L,
    prefill: {
      ...prefill,
      msPerToken: prefill.medianMs / L,
      tokensPerSecond: 1000 * L / prefill.medianMs,
    },
    decode: { ...decode, msPerToken: decode.medianMs, tokensPerSecond: 1000 / decode.medianMs },
    prefillGpuMs: kernelGroups(prefillKernels),
    decodeGpuMs: kernelGroups(decodeKernels),
  });
  console.log(
    `  L=${L}: prefill ${prefill.medianMs.toFixed(1)} ms, decode ${decode.medianMs.toFixed(1)} ms`,
  );
}
cache.destroy();

const gpu = (g: ReturnType<typeof kernelGroups>) =>
  g ? [g.matmul, g.attention, g.rest] : ["-", "-", "-"];
console.log(`\nwall times: medians of up to ${reps} runs; GPU ms: one profiled run`);
printTable(
  [
    "L",
    "prefill ms",
    "prefill tok/s",
    "ms/token",
    "decode ms",
    "decode tok/s",
    "prefill GPU: matmul",
    "attention",
    "rest",
    "decode GPU: matmul",
    "attention",
    "rest",
  ],
  rows.map((r) => [
    r.length,
    r.prefill.medianMs,
    r.prefill.tokensPerSecond,
    r.prefill.msPerToken,
    r.decode.medianMs,
    r.decode.tokensPerSecond,
    ...gpu(r.prefillGpuMs),
    ...gpu(r.decodeGpuMs),
  ]),
);

const perToken = rows.flatMap((r) => [
  { length: r.length, phase: "prefill (ms per prompt token)", ms: r.prefill.msPerToken },
  { length: r.length, phase: "decode (ms per new token)", ms: r.decode.msPerToken },
]);
const kernels = rows.flatMap((r) =>
  (["prefill", "decode"] as const).flatMap((phase) => {
    const g = phase === "prefill" ? r.prefillGpuMs : r.decodeGpuMs;
    const tokens = phase === "prefill" ? r.length : 1;
    return g
      ? Object.entries(g).map(([group, ms]) => ({
        length: r.length,
        phase,
        group,
        msPerToken: ms / tokens,
      }))
      : [];
  })
);
await writeResults(
  ex,
  { lengths, reps, budgetMs: BUDGET_MS, timestamps: profile, rows },
  "Prefill vs decode: time per token by length",
  {
    resolve: { scale: { color: "independent" } },
    vconcat: [
      {
        ...lineChart(
          perToken,
          {
            field: "length",
            type: "quantitative",
            title: "length L (tokens)",
            scale: { type: "log", domain: [lengths[0], lengths.at(-1)!], nice: false },
          },
          {
            field: "ms",
            type: "quantitative",
            title: "ms per token (wall, median)",
            scale: { type: "log" },
          },
          "phase",
        ),
        width: 520,
      },
      {
        data: { values: kernels },
        facet: {
          column: {
            field: "phase",
            type: "nominal",
            sort: ["prefill", "decode"],
            title: "share of GPU time per kernel group (timestamp-query)",
          },
        },
        spec: {
          width: 240,
          height: 160,
          mark: "bar",
          encoding: {
            x: { field: "length", type: "ordinal", title: "length L", axis: { labelAngle: 0 } },
            y: {
              field: "msPerToken",
              type: "quantitative",
              stack: "normalize",
              title: "share",
              axis: { format: "%" },
            },
            color: {
              field: "group",
              type: "nominal",
              title: "kernels",
              sort: ["matmul", "attention", "rest"],
            },
            order: { field: "group" },
          },
        },
      },
    ],
  },
);
