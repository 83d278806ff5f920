import assert from "node:assert/strict";
import { Rng } from "../base/rng.ts";
import {
  argmax,
  sampleToken,
  type SamplingOptions,
  topKIndices,
  validateSampling,
} from "../run/sampling.ts";

const GREEDY: SamplingOptions = { temperature: 0, topK: 0, topP: 1 };

/** Logits whose softmax (at temperature 1) is exactly `probs`. */
function logitsOf(probs: number[]): Float32Array {
  return Float32Array.from(probs, (p) => Math.log(p));
}

function randomLogits(n: number, rng: Rng, scale = 3): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.next() - 0.5) * 2 * scale);
}

function softmax(logits: Float32Array, temperature = 1): number[] {
  const max = Math.max(...logits);
  const e = Array.from(logits, (l) => Math.exp((l - max) / temperature));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / total);
}

/** Counts how often each id is drawn in `draws` samples. */
function histogram(logits: Float32Array, opts: SamplingOptions, draws: number, seed = 7) {
  const rng = new Rng(seed);
  const counts = new Map<number, number>();
  for (let i = 0; i < draws; i++) {
    const id = sampleToken(logits, opts, rng);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

/** Reference nucleus: sort everything, keep the shortest prefix with mass >= p. */
function referenceNucleus(probs: number[], p: number): Set<number> {
  const order = probs.map((_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
  const kept = new Set<number>();
  let mass = 0;
  for (const i of order) {
    kept.add(i);
    mass += probs[i];
    if (mass >= p) break;
  }
  return kept;
}

/** Asserts empirical frequencies match `expected` probabilities (chi-square and max deviation). */
function assertMatches(counts: Map<number, number>, expected: number[], draws: number): void {
  let chi2 = 0;
  let cells = 0;
  expected.forEach((p, id) => {
    const seen = counts.get(id) ?? 0;
    if (p === 0) {
      assert.equal(seen, 0, `id ${id} has probability 0 but was drawn ${seen} times`);
      return;
    }
    chi2 += (seen - p * draws) ** 2 / (p * draws);
    cells++;
    assert.ok(Math.abs(seen / draws - p) < 0.01, `id ${id}: frequency ${seen / draws} vs ${p}`);
  });
  // 99.9th percentile of chi-square with up to 9 degrees of freedom is 27.9.
  assert.ok(cells <= 10);
  assert.ok(chi2 < 27.9, `chi-square ${chi2.toFixed(2)} with ${cells - 1} degrees of freedom`);
}

Deno.test("Rng: next() is uniform in [0, 1) (the frequencies test of sampleToken)", () => {
  const rng = new Rng(123);
  const bins = new Array(10).fill(0);
  const n = 100_000;
  for (let i = 0; i < n; i++) {
    const x = rng.next();
    assert.ok(x >= 0 && x < 1, `${x} out of range`);
    bins[Math.floor(x * 10)]++;
  }
  assertMatches(new Map(bins.map((c, i) => [i, c])), new Array(10).fill(0.1), n);
});

Deno.test("argmax: first maximum on ties, NaN skipped", () => {
  assert.equal(argmax(Float32Array.of(1, 3, 2, 3)), 1);
  assert.equal(argmax(Float32Array.of(-5)), 0);
  assert.equal(argmax(Float32Array.of(NaN, -1, NaN, 4, 4)), 3);
  assert.equal(argmax(Float32Array.of(-Infinity, -Infinity, -3)), 2);
  assert.throws(() => argmax(new Float32Array(0)), /empty/);
});

Deno.test("topKIndices: best first, ties by lower id", () => {
  const logits = Float32Array.of(0.5, 2, 2, -1, 7, 0.5, 3);
  assert.deepEqual([...topKIndices(logits, 3)], [4, 6, 1]);
  assert.deepEqual([...topKIndices(logits, 4)], [4, 6, 1, 2]);
  assert.deepEqual([...topKIndices(logits, 100)], [4, 6, 1, 2, 0, 5, 3]);
  assert.deepEqual([...topKIndices(logits, 0)], []);
  const rng = new Rng(5);
  const big = randomLogits(5000, rng);
  const sorted = [...big.keys()].sort((a, b) => big[b] - big[a] || a - b);
  assert.deepEqual([...topKIndices(big, 50)], sorted.slice(0, 50));
});

/** `n` distinct logits 0.01 apart, shuffled, so a tiny temperature leaves one token. */
function spacedLogits(n: number, rng: Rng): Float32Array {
  const logits = Float32Array.from({ length: n }, (_, i) => i * 0.01 - 5);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [logits[i], logits[j]] = [logits[j], logits[i]];
  }
  return logits;
}

Deno.test("sampleToken: temperature 0 and tiny temperatures are argmax", () => {
  const rng = new Rng(1);
  for (let trial = 0; trial < 50; trial++) {
    const logits = spacedLogits(1000, rng);
    const best = argmax(logits);
    assert.equal(sampleToken(logits, GREEDY, rng), best);
    assert.equal(sampleToken(logits, { ...GREEDY, topK: 5, topP: 0.5 }, rng), best);
    for (const temperature of [1e-6, 1e-4]) {
      assert.equal(sampleToken(logits, { temperature, topK: 0, topP: 1 }, rng), best);
      assert.equal(sampleToken(logits, { temperature, topK: 40, topP: 0.9 }, rng), best);
      assert.equal(sampleToken(logits, { temperature, topK: 0, topP: 0.9 }, rng), best);
    }
  }
});

Deno.test("sampleToken: same seed gives the same tokens, other seeds differ", () => {
  const logits = randomLogits(50257, new Rng(3), 1);
  const opts = { temperature: 1, topK: 0, topP: 0.95 };
  const run = (seed: number) => {
    const rng = new Rng(seed);
    return Array.from({ length: 20 }, () => sampleToken(logits, opts, rng));
  };
  assert.deepEqual(run(11), run(11));
  assert.notDeepEqual(run(11), run(12));
});

Deno.test("sampleToken: frequencies match softmax(logits / T)", () => {
  const logits = Float32Array.of(1.2, -0.3, 0.4, 2.0, 0.0, -1.5);
  for (const temperature of [1, 0.7, 2]) {
    const opts = { temperature, topK: 0, topP: 1 };
    const draws = 60_000;
    assertMatches(histogram(logits, opts, draws), softmax(logits, temperature), draws);
  }
});

Deno.test("sampleToken: top-k never leaves the k best and renormalises them", () => {
  const rng = new Rng(9);
  const logits = randomLogits(200, rng);
  const best = new Set([...logits.keys()].sort((a, b) => logits[b] - logits[a]).slice(0, 5));
  const counts = histogram(logits, { temperature: 1, topK: 5, topP: 1 }, 20_000);
  for (const id of counts.keys()) assert.ok(best.has(id), `id ${id} is not among the 5 best`);
  assert.equal(counts.size, 5, "every one of the 5 best is drawn");

  const small = Float32Array.of(0.1, 1.5, -2, 0.9, 0.6, 2.2);
  const masked = small.map((l, i) => (i === 1 || i === 5 || i === 3 ? l : -Infinity));
  const draws = 60_000;
  assertMatches(
    histogram(small, { temperature: 1, topK: 3, topP: 1 }, draws),
    softmax(masked),
    draws,
  );
});

Deno.test("sampleToken: top-p keeps the smallest set with mass >= p", () => {
  const probs = [0.05, 0.4, 0.02, 0.2, 0.3, 0.03];
  const logits = logitsOf(probs);
  for (
    const [topP, expected] of [[0.3, [1]], [0.5, [1, 4]], [0.8, [1, 4, 3]], [0.92, [
      1,
      4,
      3,
      0,
    ]]] as const
  ) {
    const counts = histogram(logits, { temperature: 1, topK: 0, topP }, 10_000);
    assert.deepEqual([...counts.keys()].sort(), [...expected].sort(), `topP ${topP}`);
  }
  const draws = 60_000;
  const renormalised = [0, 0.4 / 0.9, 0, 0.2 / 0.9, 0.3 / 0.9, 0];
  assertMatches(
    histogram(logits, { temperature: 1, topK: 0, topP: 0.8 }, draws),
    renormalised,
    draws,
  );
});

Deno.test("sampleToken: top-p over a full vocabulary matches a sorted reference", () => {
  const rng = new Rng(21);
  const cases = [[50257, 8, 0.9], [8000, 8, 0.5], [8000, 4, 0.95], [8000, 0.01, 0.001]];
  for (const [n, scale, topP] of cases) {
    const logits = randomLogits(n, rng, scale);
    const nucleus = referenceNucleus(softmax(logits), topP);
    const draws = Math.min(1000, nucleus.size * 100);
    const counts = histogram(logits, { temperature: 1, topK: 0, topP }, draws);
    for (const id of counts.keys()) assert.ok(nucleus.has(id), `id ${id} is outside the nucleus`);
    if (nucleus.size <= 10) assert.equal(counts.size, nucleus.size, "the whole nucleus is drawn");
  }
});

Deno.test("sampleToken: top-p on tied logits takes the lowest ids", () => {
  const logits = new Float32Array(10); // uniform: 0.1 each
  const counts = histogram(logits, { temperature: 1, topK: 0, topP: 0.35 }, 4000);
  assert.deepEqual([...counts.keys()].sort(), [0, 1, 2, 3]);
});

Deno.test("sampleToken: top-p applies to the renormalised top-k", () => {
  const probs = [0.3, 0.25, 0.2, 0.15, 0.1];
  // top-3 renormalised: 0.4, 0.333, 0.267; top-p 0.6 then keeps ids 0 and 1.
  const counts = histogram(logitsOf(probs), { temperature: 1, topK: 3, topP: 0.6 }, 5000);
  assert.deepEqual([...counts.keys()].sort(), [0, 1]);
});

Deno.test("sampleToken: -Infinity logits are never drawn; NaN is an error", () => {
  const logits = Float32Array.of(-Infinity, 0, -Infinity, 0.5, -Infinity);
  for (const opts of [{ temperature: 1, topK: 0, topP: 1 }, { temperature: 1, topK: 4, topP: 1 }]) {
    const counts = histogram(logits, opts, 2000);
    assert.deepEqual([...counts.keys()].sort(), [1, 3]);
  }
  const rng = new Rng(1);
  const opts = { temperature: 1, topK: 0, topP: 1 };
  assert.throws(() => sampleToken(Float32Array.of(0, NaN), opts, rng), /logits\[1\] is NaN/);
  assert.throws(() => sampleToken(Float32Array.of(0, Infinity), opts, rng), /logits\[1\]/);
  assert.throws(() => sampleToken(Float32Array.of(-Infinity), opts, rng), /-Infinity/);
  assert.throws(() => sampleToken(new Float32Array(0), opts, rng), /empty/);
});

Deno.test("validateSampling: errors name the option", () => {
  validateSampling({ temperature: 0, topK: 0, topP: 1 });
  validateSampling({ temperature: 0.7, topK: 50, topP: 0.01 });
  const bad: [Partial<SamplingOptions>, RegExp][] = [
    [{ temperature: -0.1 }, /^RangeError: temperature/],
    [{ temperature: NaN }, /^RangeError: temperature/],
    [{ temperature: Infinity }, /^RangeError: temperature/],
    [{ topK: -1 }, /^RangeError: topK/],
    [{ topK: 2.5 }, /^RangeError: topK/],
    [{ topP: 0 }, /^RangeError: topP/],
    [{ topP: 1.01 }, /^RangeError: topP/],
    [{ topP: NaN }, /^RangeError: topP/],
  ];
  for (const [change, pattern] of bad) {
    const opts = { temperature: 1, topK: 0, topP: 1, ...change };
    assert.throws(() => validateSampling(opts), (e) => pattern.test(String(e)));
    assert.throws(() => sampleToken(Float32Array.of(0, 1), opts, new Rng(0)), pattern);
  }
});

Deno.test("sampleToken: fast on a GPT-2 sized vocabulary", () => {
  const rng = new Rng(4);
  const logits = randomLogits(50257, rng, 4);
  for (
    const opts of [
      { temperature: 1, topK: 0, topP: 1 },
      { temperature: 0.8, topK: 40, topP: 1 },
      { temperature: 0.8, topK: 40, topP: 0.95 },
      { temperature: 1, topK: 0, topP: 0.9 },
    ]
  ) {
    for (let i = 0; i < 3; i++) sampleToken(logits, opts, rng); // warm up
    const start = performance.now();
    for (let i = 0; i < 20; i++) sampleToken(logits, opts, rng);
    const ms = (performance.now() - start) / 20;
    // Typically well under 5 ms; the bound is loose so a busy CI machine passes.
    assert.ok(ms < 25, `${JSON.stringify(opts)} took ${ms.toFixed(2)} ms per token`);
  }
});
