import assert from "node:assert/strict";

import { generate, generateBatch, type GenerateOptions, prefillPrefix } from "../run/generate.ts";
import { GPT2 } from "../model/gpt2.ts";
import { Runner } from "../run/runner.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { loadCheckpoint } from "../model/weights.ts";
import { granted, needs } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();
// Every test here needs the fixture: without read access (plain `deno test`) they are ignored.
const readable = granted("read");
const model = readable ? await Runner.load(gpu, "data/tiny-gpt2") : undefined!;
const ref = readable
  ? await SafetensorsFile.open("data/tiny-gpt2/reference.safetensors")
  : undefined!;
const prompt = readable ? [...ref.i32("p1.input_ids")] : []; // 10 tokens
const hfGreedy = readable ? [...ref.i32("p1.generated_ids")].slice(prompt.length) : []; // 20 tokens

const greedy: GenerateOptions = {
  maxTokens: 20,
  temperature: 0,
  topK: 0,
  topP: 1,
  seed: 0,
  useCache: true,
  stopAtEos: false,
};
const sampled: GenerateOptions = { ...greedy, temperature: 1, topK: 50, topP: 0.95, seed: 7 };

async function run(ids: number[], opts: GenerateOptions) {
  const cache = model.newCache();
  try {
    return await generate(model, cache, ids, opts);
  } finally {
    cache.destroy();
  }
}

Deno.test(
  "greedy generation equals HF generate(), with and without the cache",
  needs("read"),
  async () => {
    assert.deepEqual((await run(prompt, greedy)).ids, hfGreedy);
    assert.deepEqual((await run(prompt, { ...greedy, useCache: false })).ids, hfGreedy);
  },
);

Deno.test(
  "tokens picked on the GPU (argmax or draw) equal the CPU's, over long runs",
  needs("read"),
  async () => {
    for (const opts of [greedy, sampled, { ...sampled, topK: 0, topP: 1, temperature: 0.9 }]) {
      const long = { ...opts, maxTokens: 60 }; // past the first batches of a chained run
      const gpuPicked = await run(prompt, long);
      const cpuPicked = await run(prompt, { ...long, chainOnGpu: false });
      const what = JSON.stringify(opts);
      assert.deepEqual(gpuPicked.ids, cpuPicked.ids, what);
      assert.equal(gpuPicked.decodeSteps, 59, what);
      assert.equal(gpuPicked.cacheBytesUsed, cpuPicked.cacheBytesUsed, what);
    }
  },
);

Deno.test(
  "the same seed gives the same tokens; another seed other tokens",
  needs("read"),
  async () => {
    const a = await run(prompt, sampled);
    const b = await run(prompt, sampled);
    const c = await run(prompt, { ...sampled, seed: 8 });
    assert.deepEqual(a.ids, b.ids);
    assert.notDeepEqual(a.ids, c.ids);
    assert.deepEqual((await run(prompt, { ...sampled, useCache: false })).ids, a.ids);
  },
);

Deno.test(
  "a system prompt is prefilled first and kept at the front of the cache",
  needs("read"),
  async () => {
    const system = prompt.slice(0, 6);
    const rest = prompt.slice(6);
    const r = await run(rest, { ...greedy, systemIds: system });
    assert.deepEqual(r.ids, hfGreedy);
    assert.equal(r.systemTokens, 6);
    assert.equal(r.promptTokens, 4);
    const nc = await run(rest, { ...greedy, systemIds: system, useCache: false });
    assert.deepEqual(nc.ids, hfGreedy);
  },
);

Deno.test(
  "a prefilled prefix is copied, not recomputed: same tokens as a full prefill",
  needs("read"),
  async () => {
    const system = prompt.slice(0, 6);
    const rest = prompt.slice(6);
    const prefix = await prefillPrefix(model, system);
    assert.equal(prefix.length, 6);
    for (const chainOnGpu of [true, false]) {
      // Several requests share the prefix; each one matches HF's greedy ids for the whole prompt.
      for (let request = 0; request < 2; request++) {
        const r = await run(rest, { ...greedy, systemIds: system, prefix, chainOnGpu });
        assert.deepEqual(r.ids, hfGreedy);
      }
    }
    // The copied K/V rows are bit-identical to prefilling the prefix in place.
    const copied = model.newCache();
    const computed = model.newCache({ policy: "grow", initialCapacity: 2 });
    copied.copyPrefix(prefix);
    await model.forward(system, computed);
    const [a, b] = [await copied.read(), await computed.read()];
    a.forEach((layer, i) => {
      assert.deepEqual(layer.k, b[i].k);
      assert.deepEqual(layer.v, b[i].v);
    });
    await assert.rejects(
      run(rest, { ...greedy, systemIds: system.slice(1), prefix }),
      /prefix cache holds 6 tokens, the system prompt has 5/,
    );
    for (const c of [copied, computed, prefix]) c.destroy();
  },
);

Deno.test("generation reports what it did and what the cache holds", needs("read"), async () => {
  const onToken: number[] = [];
  const r = await run(prompt, { ...greedy, maxTokens: 5, onToken: (id) => onToken.push(id) });
  assert.deepEqual(onToken, r.ids);
  assert.equal(r.ids.length, 5);
  assert.equal(r.decodeSteps, 4);
  assert.equal(r.stop, "max-tokens");
  const { nLayer, nEmbd, nPositions } = model.config;
  assert.equal(r.cacheBytesUsed, 2 * nLayer * (prompt.length + 4) * nEmbd * 4);
  assert.equal(r.cacheBytesAllocated, 2 * nLayer * nPositions * nEmbd * 4);
});

Deno.test("generation stops at the context and at end-of-text", needs("read"), async () => {
  const { nPositions, eosTokenId } = model.config;
  const long = Array.from({ length: nPositions - 3 }, (_, i) => (i * 31) % 50000);
  const r = await run(long, { ...greedy, maxTokens: 50 });
  assert.equal(r.stop, "context");
  assert.equal(long.length + r.ids.length, nPositions);
  // A model whose end-of-text token is a later greedy token stops right after its first use.
  const k = hfGreedy.findIndex((id, i) => i > 0 && hfGreedy.indexOf(id) === i);
  const { config, weights } = await loadCheckpoint("data/tiny-gpt2");
  const eosModel = new Runner(new GPT2(gpu, { ...config, eosTokenId: hfGreedy[k] }, weights));
  const cache = eosModel.newCache();
  for (const chainOnGpu of [true, false]) {
    const eos = await generate(eosModel, cache, prompt, {
      ...greedy,
      stopAtEos: true,
      chainOnGpu,
    });
    assert.equal(eos.stop, "eos");
    assert.deepEqual(eos.ids, hfGreedy.slice(0, k + 1));
    // Only tokens fed before the end-of-text token are cached, however the GPU batched them.
    assert.equal(cache.length, prompt.length + k);
  }
  cache.destroy();
  assert.notEqual(hfGreedy[k], eosTokenId);
});

Deno.test(
  "a sliding window with sinks generates past the context with a flat cache",
  needs("read"),
  async () => {
    const { nPositions, nLayer, nEmbd } = model.config;
    const window = { sinks: 4, recent: 60 };
    // Past the context by more than the window: it fills and is cut twice.
    const maxTokens = nPositions + 2 * window.recent;
    for (const chainOnGpu of [true, false]) {
      const lengths: number[] = [];
      const cache = model.newCache();
      const r = await generate(model, cache, prompt, {
        ...greedy,
        maxTokens,
        window,
        chainOnGpu,
        onToken: () => lengths.push(cache.length),
      });
      // Until the cache is first full, it is plain greedy decoding (HF's ids).
      assert.deepEqual(r.ids.slice(0, hfGreedy.length), hfGreedy);
      assert.equal(r.ids.length, maxTokens);
      assert.equal(r.stop, "max-tokens");
      assert.ok(Math.max(...lengths) <= nPositions - 1, "never past the context");
      // Every token fed but the last is cached or evicted; the cache holds at most the context.
      const fed = prompt.length + maxTokens - 1;
      assert.ok(r.evictedTokens >= fed - (nPositions - 1), `${r.evictedTokens} tokens evicted`);
      assert.ok(r.cacheBytesUsed <= 2 * nLayer * (nPositions - 1) * nEmbd * 4);
      cache.destroy();
    }
  },
);

Deno.test(
  "a recomputed sliding window goes past the context as a cropped sequence would",
  needs("read"),
  async () => {
    const { nPositions } = model.config;
    const window = { sinks: 2, recent: 90 };
    // Two slides: one when the sequence reaches the context, then one 35 tokens later.
    const maxTokens = nPositions + 40;
    const opts = { ...greedy, maxTokens, window, windowMode: "recompute" as const };
    // Through the cache a slide prefills the kept tokens again; without the cache every step
    // recomputes the kept sequence anyway: the same tokens at the same positions.
    const chained = await run(prompt, opts);
    const stepped = await run(prompt, { ...opts, chainOnGpu: false });
    const uncached = await run(prompt, { ...opts, useCache: false });
    assert.deepEqual(chained.ids.slice(0, hfGreedy.length), hfGreedy);
    assert.equal(chained.ids.length, maxTokens);
    assert.equal(chained.stop, "max-tokens");
    assert.deepEqual(stepped.ids, chained.ids);
    assert.deepEqual(uncached.ids, chained.ids);
    // 10 + 168 tokens through a context of 128 that keeps 92 per slide: a slide when the
    // sequence reaches 128, then every 35 tokens.
    const slides = Math.ceil((prompt.length + maxTokens - nPositions) / 35);
    assert.equal(slides, 2);
    assert.equal(chained.slides.length, slides);
    for (const s of chained.slides) {
      assert.equal(s.refilled, window.sinks + window.recent, "the kept tokens but the unfed one");
      assert.ok(s.ms > 0);
    }
    assert.equal(chained.evictedTokens, chained.slides.reduce((n, s) => n + s.dropped, 0));
    assert.ok(uncached.slides.every((s) => s.refilled === 0), "nothing cached to refill");
    // The first token after the first slide is the greedy choice after the kept tokens alone.
    const before = [...prompt, ...chained.ids].slice(0, nPositions);
    const kept = [...before.slice(0, 2), ...before.slice(nPositions - 1 - 90)];
    const fresh = await run(kept, { ...greedy, maxTokens: 1 });
    assert.equal(chained.ids[nPositions - prompt.length], fresh.ids[0]);
  },
);

Deno.test(
  "evict keeps the sink rows and moves the recent rows after them",
  needs("read"),
  async () => {
    const cache = model.newCache({ policy: "grow", initialCapacity: 20 });
    const ids = Array.from({ length: 20 }, (_, i) => 100 + i);
    await model.forward(ids, cache);
    const before = await cache.read();
    assert.equal(cache.evict(3, 5), 12);
    assert.equal(cache.length, 8);
    const after = await cache.read();
    const { nHead, headDim } = model.config;
    const rowsOf = (a: Float32Array, n: number, h: number, from: number, to: number) =>
      a.slice((h * n + from) * headDim, (h * n + to) * headDim);
    after.forEach((layer, i) => {
      for (const key of ["k", "v"] as const) {
        for (let h = 0; h < nHead; h++) {
          assert.deepEqual(rowsOf(layer[key], 8, h, 0, 3), rowsOf(before[i][key], 20, h, 0, 3));
          assert.deepEqual(rowsOf(layer[key], 8, h, 3, 8), rowsOf(before[i][key], 20, h, 15, 20));
        }
      }
    });
    assert.equal(cache.evict(3, 5), 0, "nothing to drop");
    cache.destroy();
  },
);

Deno.test(
  "batched generation: each sequence gets the tokens it gets alone",
  needs("read"),
  async () => {
    const prompts = [prompt, prompt.slice(0, 1), [...prompt, ...prompt, ...prompt], [5, 6, 7]];
    for (const opts of [{ ...greedy, maxTokens: 12 }, { ...sampled, maxTokens: 12 }]) {
      const batch = await generateBatch(model, prompts, opts);
      for (const [b, p] of prompts.entries()) {
        assert.deepEqual(batch.ids[b], (await run(p, opts)).ids, `sequence ${b}`);
      }
      assert.equal(batch.decodeTokens, 4 * 11);
    }
    // Sequences finish at different times: a short budget near the context stops one early.
    const long = Array.from({ length: model.config.nPositions - 3 }, (_, i) => (i * 31) % 50000);
    const mixed = await generateBatch(model, [long, prompt], { ...greedy, maxTokens: 6 });
    assert.deepEqual(mixed.stops, ["context", "max-tokens"]);
    assert.equal(mixed.ids[0].length, 3);
    assert.deepEqual(mixed.ids[1], hfGreedy.slice(0, 6));
    await assert.rejects(
      generateBatch(model, [prompt], { ...greedy, useCache: false }),
      /needs the cache/,
    );
  },
);

Deno.test("bad generation input is a clear error", needs("read"), async () => {
  await assert.rejects(run([], greedy), /no tokens/);
  const tooLong = Array.from({ length: model.config.nPositions + 1 }, () => 1);
  await assert.rejects(run(tooLong, greedy), /longer than the context \(n_positions 128\)/);
  await assert.rejects(run(prompt, { ...greedy, maxTokens: 0 }), /maxTokens/);
  await assert.rejects(run(prompt, { ...greedy, temperature: -1 }), /temperature/);
  await assert.rejects(run([50257], greedy), /token id 50257 at position 0/);
  const window = { sinks: 4, recent: 200 };
  await assert.rejects(run(prompt, { ...greedy, window }), /must leave room in the context/);
  await assert.rejects(
    run(prompt, { ...greedy, window: { sinks: 4, recent: 8 }, useCache: false }),
    /needs the cache/,
  );
});
