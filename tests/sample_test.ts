/**
 * kernels/sample.ts: samplePick draws what run/sampling.ts's sampleToken draws from the same
 * generator state, chained draws advance the generator as the CPU's does, and the general decode
 * path's sampled chain (Runner.decodeSample) gives the CPU sampler's ids in one submission.
 */
import assert from "node:assert/strict";
import { gpuSamples, MAX_SAMPLE_VOCAB, samplePick } from "../kernels/sample.ts";
import type { Dispatch } from "../kernels/gpu.ts";
import { parseConfig } from "../model/config.ts";
import { GPT2 } from "../model/gpt2.ts";
import { randomWeights } from "../model/weights.ts";
import { Runner } from "../run/runner.ts";
import { Rng } from "../base/rng.ts";
import { sampleToken, type SamplingOptions } from "../run/sampling.ts";
import { Arena, capturePlans, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

const SAMPLINGS: SamplingOptions[] = [
  { temperature: 0.8, topK: 40, topP: 1 },
  { temperature: 1.3, topK: 0, topP: 1 },
  { temperature: 1, topK: 20, topP: 0.9 },
  { temperature: 0.7, topK: 0, topP: 0.85 },
  { temperature: 1, topK: 200, topP: 1 },
];

const u32 = (a: Float32Array) => [...new Uint32Array(a.buffer)];

/**
 * `draws` samplePicks of one submission, all on the same `logits` row (padded with huge
 * values past V, which must never be drawn), from the generator state of `rng`.
 */
async function pickChain(logits: Float32Array, V: number, s: SamplingOptions, rng: Rng, draws = 4) {
  const arena = new Arena(gpu);
  const l = arena.upload(logits, [1, logits.length], "logits");
  const ids = arena.upload(new Uint32Array([999_999]), [1], "ids");
  const state = new Uint32Array(8);
  state.set([40, 2]);
  state.set(rng.state(), 4);
  const st = arena.upload(state, [8], "state");
  const tokens = arena.upload(new Uint32Array(8).fill(7), [8], "tokens");
  const pick = samplePick(gpu, l, V, s, ids, st, tokens);
  gpu.run(Array.from({ length: draws }, () => pick));
  const [i, after, t] = await gpu.read([ids, st, tokens]);
  arena.destroy();
  return { id: u32(i)[0], state: u32(after), tokens: u32(t) };
}

Deno.test("samplePick: chained draws are sampleToken's, from the same generator", async () => {
  const rng = new TestRng(5);
  for (const V of [65, 256, 3000, 50257]) {
    const logits = rng.normals(V + 13, 3);
    logits.fill(1e9, V);
    for (const [i, s] of SAMPLINGS.entries()) {
      if (!gpuSamples(s, V)) continue; // top-p alone over a vocabulary of more than 256
      const what = `V=${V} ${JSON.stringify(s)}`;
      const seed = 10 * V + i;
      const got = await pickChain(logits, V, s, new Rng(seed));
      const cpu = new Rng(seed);
      const want = Array.from({ length: 4 }, () => sampleToken(logits.subarray(0, V), s, cpu));
      assert.deepEqual(got.tokens.slice(2, 6), want, what);
      assert.deepEqual(got.tokens.filter((_, j) => j < 2 || j >= 6), [7, 7, 7, 7], what);
      assert.equal(got.id, want[3], `${what}: the next input is the last draw`);
      assert.deepEqual(got.state.slice(0, 2), [44, 6], `${what}: pos0 and the count advance`);
      assert.deepEqual(got.state.slice(4), [...cpu.state()], `${what}: one draw a token`);
    }
  }
});

Deno.test("samplePick: refuses what the sampler cannot draw, naming it", () => {
  const arena = new Arena(gpu);
  const l = arena.upload(new Float32Array(300), [1, 300], "logits");
  const one = arena.upload(new Uint32Array(1), [1], "ids");
  const state = arena.upload(new Uint32Array(8), [8], "state");
  const short = arena.upload(new Uint32Array(4), [4], "state");
  const pick = (V: number, s: SamplingOptions, st = state): Dispatch =>
    samplePick(gpu, l, V, s, one, st, one);
  assert.throws(() => pick(300, { temperature: 0, topK: 0, topP: 1 }), /temperature 0 must be > 0/);
  assert.throws(
    () => pick(300, { temperature: 1, topK: 0, topP: 0.9 }),
    /^RangeError: samplePick: sampling sorts 300 candidates .* at most 256$/,
  );
  assert.throws(() => pick(301, { temperature: 1, topK: 0, topP: 1 }), /do not fit/);
  assert.throws(() => pick(300, { temperature: 1, topK: 0, topP: 1 }, short), /do not fit/);
  assert.equal(gpuSamples({ temperature: 1, topK: 40, topP: 1 }, MAX_SAMPLE_VOCAB + 1), false);
  arena.destroy();
});

Deno.test("decodeSample, general path: the CPU sampler's ids, in one submission", async () => {
  const config = parseConfig({
    n_layer: 2,
    n_head: 2,
    n_embd: 32,
    n_positions: 40,
    vocab_size: 500,
    bos_token_id: 0,
    eos_token_id: 0,
  }, "sampled");
  const model = new Runner(new GPT2(gpu, config, randomWeights(config, 3)), { decode: "general" });
  const n = 12;
  for (const [i, sampling] of SAMPLINGS.entries()) {
    const what = JSON.stringify(sampling);
    const cpuCache = model.newCache();
    await model.forward([3, 4], cpuCache);
    const rng = new Rng(50 + i);
    const want: number[] = [];
    for (let token = 1; want.length < n;) {
      const { logits } = await model.forward([token], cpuCache);
      want.push(token = sampleToken(logits, sampling, rng));
    }
    const cache = model.newCache();
    await model.forward([3, 4], cache);
    const drawn = new Rng(50 + i);
    let got: number[] = [];
    const plans = await capturePlans(gpu, async () => {
      got = await model.decodeSample(1, cache, n, sampling, drawn);
    });
    assert.deepEqual(got, want, what);
    const onGpu = gpuSamples(sampling, config.vocabSize);
    assert.equal(onGpu, sampling.topK > 0 || sampling.topP === 1, what);
    assert.equal(
      plans.filter((p) => p.some((s) => "pipeline" in s)).length,
      onGpu ? 1 : n,
      `${what}: submissions`,
    );
    assert.deepEqual(drawn.state(), rng.state(), `${what}: the generator advanced by ${n}`);
    assert.equal(cache.length, 2 + n);
    for (const c of [cache, cpuCache]) c.destroy();
  }
  model.destroy();
});
