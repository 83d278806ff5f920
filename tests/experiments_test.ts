/**
 * Every experiment runs in `--quick` mode (the tiny fixture), exits 0 and writes its JSON
 * and SVG; its numbers are checked where they can be: cache bytes equal the formula
 * exactly, nothing leaks, cached and uncached generation give the same tokens, attention
 * rows sum to 1, a snapshot file is as big as its formula and restores exactly.
 */
import assert from "node:assert/strict";
import { assertUsageError, mapConcurrent, needs, runDeno, runScript, slow } from "./helpers.ts";

/** Runs `experiments/<name>.ts` with `args`; returns its exit code and output. */
function runExperiment(name: string, ...args: string[]) {
  return runScript(`experiments/${name}.ts`, ...args);
}

/** Every experiment spawns `deno run -A`, reads the fixture and writes its results. */
const io = needs("run", "read", "write");

/**
 * The experiments past the first two, in the slow set (`KVGPT_SLOW_TESTS=1`, as `.ci/run`
 * sets): each is a process of its own that opens the GPU and compiles its kernels again.
 */
const ioSlow = slow("run", "read", "write");

/** Every experiment script. */
const EXPERIMENTS = [
  "attention_maps",
  "batching",
  "cache_growth",
  "cache_memory",
  "cache_policies",
  "cache_quantization",
  "cache_snapshot",
  "cache_vs_no_cache",
  "prefill_vs_decode",
  "prefix_cache",
  "sliding_window",
];

/** Runs an experiment with `--quick`, checks its files and returns its JSON. */
// deno-lint-ignore no-explicit-any
async function quick(name: string, ...args: string[]): Promise<any> {
  const out = await Deno.makeTempDir({ prefix: `kvgpt-${name}-` });
  const r = await runExperiment(name, "--quick", "--out", out, ...args);
  assert.equal(r.code, 0, `${name} failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /adapter: /, "names the adapter");
  const svg = await Deno.readTextFile(`${out}/${name}.svg`);
  const json = JSON.parse(await Deno.readTextFile(`${out}/${name}.json`));
  await Deno.remove(out, { recursive: true });
  assert.match(svg, /^<svg[^>]*>/);
  assert.ok(svg.trimEnd().endsWith("</svg>"));
  assert.equal(json.experiment, name);
  assert.equal(json.model, "data/tiny-gpt2");
  assert.equal(json.quick, true);
  assert.ok(json.adapter.length > 0);
  return json;
}

const TINY = { nLayer: 2, nEmbd: 64, nPositions: 128 };
/** 2 · n_layer · rows · n_embd · 4 bytes of the tiny fixture. */
const tinyBytes = (rows: number) => 2 * TINY.nLayer * rows * TINY.nEmbd * 4;

Deno.test(
  "cache_memory: the table is the formula, and equals what a KVCache allocates",
  io,
  async () => {
    const r = await quick("cache_memory");
    const names = r.sizes.map((s: { name: string }) => s.name);
    for (const name of ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"]) {
      assert.ok(names.includes(name), name);
    }
    for (const s of r.sizes) {
      assert.equal(s.bytesPerTokenF32, 2 * s.nLayer * s.nEmbd * 4, s.name);
      assert.equal(s.bytesPerTokenF16, 2 * s.nLayer * s.nEmbd * 2, s.name);
      assert.equal(s.fullContextF32, s.bytesPerTokenF32 * s.nPositions, s.name);
      assert.equal(s.measuredFullContextF32, s.fullContextF32, s.name);
    }
    const gpt2 = r.sizes.find((s: { name: string }) => s.name === "gpt2");
    assert.equal(gpt2.bytesPerTokenF32, 73_728); // 2 · 12 · 768 · 4
    assert.equal(gpt2.fullContextF32, 75_497_472); // · 1024 = 72 MiB
    assert.equal(r.gpuBytesAfter, r.gpuBytesBefore);
  },
);

Deno.test(
  "cache_growth: bytes follow the formula every step, no leak, same tokens",
  io,
  async () => {
    const r = await quick("cache_growth", "--reps", "1");
    assert.equal(r.gpuBytesAfter, r.gpuBytesBefore, "GPU bytes leaked");
    assert.equal(r.sameTokens, true);
    const [pre, double, exact] = r.policies;
    assert.deepEqual(r.policies.map((p: { policy: string }) => p.policy), [
      "preallocated",
      "grow ×2",
      "grow exact",
    ]);
    for (const p of r.policies) {
      assert.equal(p.steps.length, r.newTokens + 1, "the prefill, then each new token");
      for (const s of p.steps) {
        assert.ok(s.matchesFormula, `${p.policy} at length ${s.length}`);
        assert.equal(s.bytesUsed, tinyBytes(s.length));
        assert.equal(s.bytesAllocated, tinyBytes(s.capacity));
        assert.equal(s.bytesPerLayer * TINY.nLayer, s.bytesAllocated);
        assert.ok(s.capacity >= s.length);
        assert.ok(s.forwardMs > 0);
      }
    }
    assert.ok(pre.steps.every((s: { capacity: number }) => s.capacity === TINY.nPositions));
    assert.equal(pre.growths, 0);
    assert.ok(double.growths >= 1);
    assert.ok(
      exact.steps.every((s: { capacity: number; length: number }) => s.capacity === s.length),
    );
    assert.equal(exact.growths, r.newTokens + 1, "grows at every step");
  },
);

Deno.test(
  "prefill_vs_decode: a row per length, with kernel times when timestamps exist",
  ioSlow,
  async () => {
    const r = await quick("prefill_vs_decode", "--weights", "f16");
    assert.equal(r.weights, "f16");
    assert.deepEqual(r.rows.map((row: { length: number }) => row.length), [1, 8, 32, 128]);
    for (const row of r.rows) {
      assert.ok(row.prefill.medianMs > 0 && row.decode.medianMs > 0);
      assert.ok(
        Math.abs(row.prefill.tokensPerSecond - 1000 * row.length / row.prefill.medianMs) < 1e-6,
      );
      if (r.timestamps) {
        for (const g of [row.prefillGpuMs, row.decodeGpuMs]) {
          assert.ok(g.matmul > 0 && g.attention > 0 && g.rest > 0, JSON.stringify(g));
        }
      }
    }
  },
);

Deno.test("cache_vs_no_cache: cached and uncached give the same tokens", ioSlow, async () => {
  const r = await quick("cache_vs_no_cache");
  assert.equal(r.sameTokens, true);
  assert.deepEqual(r.generation.cachedIds, r.generation.uncachedIds);
  assert.equal(r.generation.cachedIds.length, r.generation.tokens);
  for (const row of r.rows) {
    assert.ok(row.cachedMs > 0 && row.uncachedMs > 0);
    assert.ok(Math.abs(row.speedup - row.uncachedMs / row.cachedMs) < 1e-9);
  }
});

Deno.test("prefix_cache: reusing the prefix gives the ids of a full prefill", ioSlow, async () => {
  const r = await quick("prefix_cache");
  assert.equal(r.rows.length, 3);
  for (const row of r.rows) {
    assert.equal(row.sameIds, true, `prefix ${row.prefix}`);
    assert.equal(row.ids.length, r.tokens);
    assert.ok(row.fullMs > 0 && row.reusedMs > 0);
    assert.ok(
      Math.abs(row.totalReusedMs - (row.prefixPrefillMs + r.requests * row.reusedMs)) < 1e-6,
    );
  }
});

Deno.test(
  "sliding_window: the methods agree within the context, and go on past it",
  ioSlow,
  async () => {
    const r = await quick("sliding_window");
    assert.equal(r.tokens, 256);
    assert.equal(r.nPositions, TINY.nPositions);
    assert.equal(r.flatBytes, true);
    assert.deepEqual(r.methods, ["sinks", "window", "recompute"]);
    const by = Object.fromEntries(r.summary.map((s: { method: string }) => [s.method, s]));
    assert.ok(by.sinks.evictedTokens > 0 && by.window.evictedTokens > 0);
    assert.equal(by.recompute.evictedTokens, 0);
    assert.ok(by.sinks.maxKeys <= r.nPositions - 1);
    assert.equal(by.recompute.maxKeys, r.recomputeWindow);
    // Before the first eviction every method sees the same tokens at the same positions.
    const past = r.nPositions - 1;
    for (const m of ["window", "recompute"]) {
      assert.equal(r.nll[m].length, r.tokens - 1);
      r.nll[m].slice(0, past).forEach((x: number, i: number) =>
        assert.ok(Math.abs(x - r.nll.sinks[i]) < 1e-3, `${m} at ${i}: ${x} vs ${r.nll.sinks[i]}`)
      );
    }
    // Each bucket's perplexity is exp(mean −log p) of its steps.
    assert.equal(r.buckets.length, Math.ceil((r.tokens - 1) / r.bucket));
    for (const b of r.buckets) {
      for (const m of r.methods) {
        const nll = r.nll[m].slice(b.from - 1, b.to);
        const want = Math.exp(nll.reduce((a: number, x: number) => a + x, 0) / nll.length);
        assert.ok(Math.abs(b.perplexity[m] - want) < 1e-9 * want, `${m} ${b.from}`);
      }
    }
    for (const a of r.attentionMass) {
      for (const x of [a.inContext, ...Object.values(a.pastContext) as number[]]) {
        assert.ok(x > 0 && x <= 1, `layer ${a.layer}: ${x}`);
      }
    }
  },
);

Deno.test(
  "cache_quantization: bytes per token by dtype; f32 is its own reference",
  ioSlow,
  async () => {
    const r = await quick("cache_quantization", "--steps", "48");
    const [f32, f16, int8] = r.rows;
    assert.deepEqual(r.rows.map((x: { dtype: string }) => x.dtype), ["f32", "f16", "int8"]);
    const C = 64, L = 2, H = 4; // the tiny fixture
    assert.equal(f32.bytesPerToken, 2 * L * C * 4);
    assert.equal(f16.bytesPerToken, 2 * L * C * 2);
    assert.equal(int8.bytesPerToken, 2 * L * (C + H * 4));
    assert.equal(f32.maxLogitDiff, 0);
    assert.equal(f32.greedyAgreement, 1);
    assert.ok(f16.maxLogitDiff > 0 && f16.maxLogitDiff < 0.05, `f16 ${f16.maxLogitDiff}`);
    assert.ok(int8.maxLogitDiff > f16.maxLogitDiff);
    assert.equal(f32.valLossChange, 0);
    assert.equal(f32.top1Agreement, 1);
    assert.equal(r.validationTokensScored, 2 * TINY.nPositions);
    for (const x of r.rows) {
      assert.ok(Number.isFinite(x.valLoss) && x.valLoss > 0, `${x.dtype} ${x.valLoss}`);
      assert.ok(Math.abs(x.valLossChange - (x.valLoss - f32.valLoss)) < 1e-12);
      // A prefill reads the K/V back from the cache as a decode step does.
      assert.ok(x.prefillVsDecodeMaxDiff < 1e-3, `${x.dtype} ${x.prefillVsDecodeMaxDiff}`);
    }
    assert.ok(Math.abs(f16.valLossChange) < 1e-3 && Math.abs(int8.valLossChange) < 1e-2);
  },
);

Deno.test("batching: every sequence's tokens equal decoding it alone", ioSlow, async () => {
  const r = await quick("batching");
  assert.deepEqual(r.rows.map((x: { batch: number }) => x.batch), [1, 2, 4]);
  for (const row of r.rows) {
    assert.equal(row.sameAsAlone, true, `B=${row.batch}`);
    assert.ok(
      Math.abs(row.aggregateTokensPerSecond - row.batch * row.perSequenceTokensPerSecond) <
        1e-6 * row.aggregateTokensPerSecond,
    );
  }
});

Deno.test(
  "cache_policies: all policies side by side, exact where they should be",
  ioSlow,
  async () => {
    // 16 + 120 tokens: past the 128 positions, so the window evicts.
    const r = await quick("cache_policies", "--tokens", "120");
    const by = Object.fromEntries(r.rows.map((x: { policy: string }) => [x.policy, x]));
    assert.deepEqual(Object.keys(by), ["preallocated", "grow", "f16", "int8", "window:4,60"]);
    for (const exact of ["preallocated", "grow", "window:4,60"]) {
      assert.equal(by[exact].maxLogitDiff, 0, exact);
      assert.equal(by[exact].greedyAgreement, 1, exact);
    }
    assert.ok(
      by["f16"].maxLogitDiff > 0 && by["f16"].bytesUsed * 2 === by["preallocated"].bytesUsed,
    );
    assert.ok(by["window:4,60"].evicted > 0);
    assert.equal(by["window:4,60"].ids.length, r.tokens);
  },
);

Deno.test(
  "attention_maps: rows sum to 1, nothing past the causal limit, the summary is the weights'",
  ioSlow,
  async () => {
    const r = await quick("attention_maps", "--heads", "0,3", "--windows", "1");
    assert.ok(r.maxRowSumError < 1e-5, `row sum off by ${r.maxRowSumError}`);
    assert.equal(r.maskedNonZero, 0);
    assert.deepEqual(r.layers, [0, 1]);
    assert.deepEqual(r.heads, [0, 3]);
    assert.equal(r.windows, 1);
    const T = r.ids.length;
    assert.equal(T, 64);
    assert.equal(r.tokens.length, T);
    r.weights.forEach((layer: number[][][], li: number) =>
      layer.forEach((head: number[][], hi: number) => {
        head.forEach((row: number[], t: number) => {
          const sum = row.slice(0, t + 1).reduce((a, b) => a + b, 0);
          assert.ok(Math.abs(sum - 1) < 1e-5);
          assert.ok(row.slice(t + 1).every((w) => w === 0));
        });
        // With one window the summary is a mean over its queries 1..T-1.
        const s = r.summary.find((x: { layer: number; head: number }) =>
          x.layer === r.layers[li] && x.head === r.heads[hi]
        );
        const rows = head.slice(1);
        const mean = (f: (row: number[], t: number) => number) =>
          rows.reduce((a, row, i) => a + f(row, i + 1), 0) / rows.length;
        const close = (got: number, want: number) => assert.ok(Math.abs(got - want) < 1e-6);
        close(s.meanOnFirst, mean((row) => row[0]));
        close(s.meanOnPrevious, mean((row, t) => row[t - 1]));
        close(s.meanOnSelf, mean((row, t) => row[t]));
        close(s.meanDistance, mean((row, t) => row.reduce((a, w, k) => a + w * (t - k), 0)));
        close(s.uniformDistance, mean((_, t) => t / 2));
      })
    );
  },
);

Deno.test(
  "cache_snapshot: file bytes are the formula, the restore continues identically",
  ioSlow,
  async () => {
    const r = await quick("cache_snapshot");
    assert.deepEqual(r.lengths, [8, 32, 100]);
    assert.deepEqual(r.rows.map((row: { length: number }) => row.length), [8, 32, 100]);
    assert.equal(r.identical, true);
    assert.equal(r.formulaHolds, true);
    for (const row of r.rows) {
      assert.equal(row.kvBytes, tinyBytes(row.length));
      assert.equal(row.idsBytes, 4 * row.length);
      assert.equal(row.fileBytes, row.kvBytes + row.idsBytes + row.headerBytes);
      assert.ok(row.headerBytes > 8 && row.headerBytes < 2048 && row.headerBytes % 8 === 0);
      assert.ok(row.identicalKv && row.identicalLogits && row.identicalTokens, `L=${row.length}`);
      assert.equal(row.continuation.length, r.tokens);
      assert.ok(row.prefillMs > 0 && row.saveMs > 0 && row.restoreMs > 0);
      assert.ok(Math.abs(row.restoreSpeedup - row.prefillMs / row.restoreMs) < 1e-9);
    }
  },
);

Deno.test(
  "the trained char model is the default of the weight-dependent experiments",
  ioSlow,
  async () => {
    const run = async (name: string, ...args: string[]) => {
      const out = await Deno.makeTempDir({ prefix: `kvgpt-${name}-` });
      const r = await runExperiment(name, "--out", out, ...args);
      assert.equal(r.code, 0, `${name} failed:\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /model: +data\/shakespeare-char: .* char tokenizer/);
      const json = JSON.parse(await Deno.readTextFile(`${out}/${name}.json`));
      await Deno.remove(out, { recursive: true });
      assert.equal(json.model, "data/shakespeare-char");
      return json;
    };
    // Its validation loss is 1.869 over 20 random batches; 8 windows land near it only when
    // the tokenizer and the split are the ones it was trained with.
    const q = await run("cache_quantization", "--windows", "8", "--steps", "8");
    assert.deepEqual(q.rows.map((x: { bytesPerToken: number }) => x.bytesPerToken), [
      2 * 4 * 128 * 4,
      2 * 4 * 128 * 2,
      2 * 4 * (128 + 4 * 4),
    ]);
    assert.ok(q.rows[0].valLoss > 1.6 && q.rows[0].valLoss < 2.2, `${q.rows[0].valLoss}`);
    const a = await run("attention_maps", "--windows", "1");
    assert.equal(a.tokenizer, "char");
    assert.equal(a.ids.length, 64);
    assert.equal(a.tokens[3], "3 G"); // the validation split starts "?\n\nGREMIO:"
    const w = await run("sliding_window", "--tokens", "96", "--methods", "sinks,window");
    assert.equal(w.tokenizer, "char");
    assert.equal(w.flatBytes, true);
    assert.deepEqual(w.summary.map((s: { maxKeys: number }) => s.maxKeys), [63, 63]);
  },
);

Deno.test(
  "experiments: a plain `deno run` that may not read the trained model runs the embedded one",
  slow("run", "read"),
  async () => {
    const args = ["--windows", "1", "--length", "8", "--layers", "0", "--heads", "0"];
    const r = await runDeno({}, "experiments/attention_maps.ts", ...args);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /reading data\/shakespeare-char is not allowed, so this runs the embedded/,
    );
    assert.match(r.stdout, /model: +embedded GPT-2 small/);
    assert.match(r.stdout, /not saved: /);
    assert.doesNotMatch(r.stderr, /Requires|NotCapable|^\s+at /m);
  },
);

Deno.test("experiments: bad arguments exit 2 with one line naming them", ioSlow, async () => {
  const cases: [string, string[], RegExp][] = [
    ["cache_memory", ["--bogus"], /--bogus: unknown option/],
    ["prefill_vs_decode", ["--quick", "--lengths", "8,1"], /--lengths: expected increasing/],
    ["cache_growth", ["--quick", "--tokens", "x"], /--tokens: expected an integer in 1..1000/],
    [
      "cache_growth",
      ["--quick", "--reps", "-1"],
      /--reps: expected an integer in 1..100, got "-1"/,
    ],
    ["attention_maps", ["--quick", "--model", "data/tiny-gpt2"], /--quick runs the tiny fixture/],
    ["cache_snapshot", ["--quick", "--reps", "0"], /--reps: expected an integer in 1..100/],
    ["batching", ["--quick", "--weights", "bf16"], /--weights: expected f32 or f16/],
    ["cache_policies", ["--quick", "--window", "4"], /--window: expected S,R/],
    // Checked against the model's context once its config is known, the same way.
    [
      "prefill_vs_decode",
      ["--quick", "--lengths", "8,200"],
      /--lengths 8,200: needs 200 positions, the model's context has 128/,
    ],
    ["cache_growth", ["--quick", "--tokens", "200"], /--tokens 200 after a \d+-token prompt/],
    ["attention_maps", ["--quick", "--layers", "5"], /--layers 5: the model has layers 0..1/],
    ["cache_policies", ["--quick", "--window", "4,124"], /--window: window: sinks \+ recent/],
    ["sliding_window", ["--quick", "--recent", "124"], /--sinks 4 --recent 124: window:/],
    ["sliding_window", ["--quick", "--methods", "sinks,x"], /--methods: expected some of/],
    ["sliding_window", ["--quick", "--tokens", "100"], /--tokens 100: must go past .* 128/],
    ["attention_maps", ["--quick", "--length", "200"], /--length 200: the model's context/],
    ["attention_maps", ["--prompt", "café"], /--prompt: char tokenizer: "é"/],
  ];
  const runs = await mapConcurrent(cases, 4, ([name, args]) => runExperiment(name, ...args));
  cases.forEach(([name, , message], i) => assertUsageError(runs[i], name, message));
});

Deno.test("experiments: --help shows the task and the plain deno run", io, async () => {
  const runs = await mapConcurrent(EXPERIMENTS, 4, (name) => runExperiment(name, "--help"));
  for (const [i, name] of EXPERIMENTS.entries()) {
    const r = runs[i];
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^usage: deno task ${name} `), name);
    assert.match(r.stdout, new RegExp(`deno run experiments/${name}\\.ts`), name);
  }
});

Deno.test(
  "experiments: a run without write access prints its table and how to save it",
  needs("run", "read"),
  async () => {
    // Reading the fixture is allowed, nothing else: no question (input closed), no trace.
    const r = await runDeno({ flags: ["--allow-read"] }, "experiments/cache_memory.ts", "--quick");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /B\/token f32/);
    assert.match(r.stdout, /not saved: writing results\/ is not allowed; `deno task cache_memory`/);
    assert.doesNotMatch(r.stderr, /Requires|NotCapable|^\s+at /m);
  },
);

Deno.test(
  "experiments: plain `deno run experiments/cache_memory.ts` needs no flag",
  slow("run", "read"), // it builds the embedded 124M model
  async () => {
    // The embedded 124M model: no file read, no environment variable, nothing written.
    const r = await runDeno({}, "experiments/cache_memory.ts");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /model: +embedded GPT-2 small/);
    assert.match(r.stdout, /not saved: /);
    assert.doesNotMatch(r.stderr, /Requires|NotCapable|^\s+at /m);
  },
);

Deno.test(
  "experiments: `deno run experiments/cache_growth.ts --quick` with no flag is one line naming read access and the task",
  needs("run", "read"),
  async () => {
    // As typed: no permission at all, and no terminal to ask in.
    const r = await runDeno({}, "experiments/cache_growth.ts", "--quick");
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.split("\n").filter((l) => l.startsWith("cache_growth:"));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0],
      /--quick runs the tiny fixture data\/tiny-gpt2, which needs read access: `deno task cache_growth --quick` has it/,
    );
    assert.doesNotMatch(r.stderr, /Requires|NotCapable|env access|^\s+at /m);
    assert.equal(r.stdout, "", "nothing ran");
  },
);
