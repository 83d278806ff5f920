/**
 * The GPT2 module on small random models (not the HF fixture): the shapes of every step of
 * the recorded plan and of the workspace, agreement with a float64 CPU GPT-2 built from
 * tests/cpu_reference.ts, cached decode against the no-cache forward, and input errors.
 */
import assert from "node:assert/strict";
import type { Copy, Dispatch } from "../kernels/gpu.ts";
import { type GPT2Config, parseConfig } from "../model/config.ts";
import { GPT2 } from "../model/gpt2.ts";
import { Runner } from "../run/runner.ts";
import type { KVCache } from "../model/kv_cache.ts";
import { randomWeights } from "../model/weights.ts";
import { Workspace } from "../run/workspace.ts";
import { gpt2Ref } from "./cpu_reference.ts";
import { assertClose, capturePlans, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

/** f32 model against the f64 reference: diff <= TOL · max(1, |ref|). */
const TOL = 1e-4;
/** Cached decode against the no-cache forward: diff <= TOL_DECODE · max |logits|. */
const TOL_DECODE = 1e-5;

/** Tied lm_head, n_inner 100, head_dim 16. */
const TIED = parseConfig({
  n_layer: 2,
  n_head: 3,
  n_embd: 48,
  n_positions: 64,
  vocab_size: 500,
  n_inner: 100,
  bos_token_id: 0,
  eos_token_id: 0,
}, "tied test config");
/** Untied lm_head, n_inner null (4 · 48), head_dim 12. */
const UNTIED = parseConfig({
  n_layer: 2,
  n_head: 4,
  n_embd: 48,
  n_positions: 64,
  vocab_size: 500,
  n_inner: null,
  tie_word_embeddings: false,
  bos_token_id: 0,
  eos_token_id: 0,
}, "untied test config");

const MODELS = [TIED, UNTIED].map((config, i) => {
  const weights = randomWeights(config, 100 + i);
  return { config, weights, model: new Runner(new GPT2(gpu, config, weights)) };
});

/** The labels (with their shapes) the plan of one forward must have, in order. */
function expectedLabels(c: GPT2Config, T: number, rows: number, hidden: boolean): string[] {
  const { nEmbd: C, nInner: I, vocabSize: V, nHead: H, nPositions: P } = c;
  const save = (i: number) => (hidden ? [`hidden ${i}`] : []);
  const block = (i: number) => [
    `layernorm ${T}x${C}`, // ln_1: [T, C]
    `matmul ${T}x${C}x${3 * C}`, // c_attn: qkv [T, 3C]
    `store_kv ${T}x${C}`, // K, V of T tokens
    ...(T === 1 ? [`attend.one ${C}`] : [ // decode: scores, softmax and values in one
      `attend.scores ${T}x${C}`, // scores [nHead, T, P]
      `softmax ${H * T}x${P}`, // causal softmax rows
      `attend.values ${T}x${C}`, // attention output [T, C]
    ]),
    `matmul ${T}x${C}x${C} add`, // attn.c_proj, added to the residual stream [T, C]
    `layernorm ${T}x${C}`, // ln_2
    `matmul ${T}x${C}x${I} gelu`, // c_fc and its GELU: [T, I]
    `matmul ${T}x${I}x${C} add`, // mlp.c_proj, added: the block output [T, C]
    ...save(i + 1),
  ];
  return [
    `embedding ${T}x${C}`, // [T, C] (one wte chunk at this size)
    ...save(0),
    ...Array.from({ length: c.nLayer }, (_, i) => block(i)).flat(),
    `layernorm ${T}x${C}`, // ln_f: [T, C]
    ...save(c.nLayer + 1),
    `lm_head ${rows}x${C}x${V}`, // logits [rows, V]
  ];
}

function cacheBytes(c: GPT2Config, length: number) {
  return 2 * c.nLayer * length * c.nEmbd * 4;
}

for (const { config: c, model } of MODELS) {
  const name = c.tieWordEmbeddings ? "tied" : "untied";
  const { nEmbd: C, nLayer: L, nHead: H, nPositions: P, vocabSize: V } = c;

  Deno.test(`gpt2 (${name}): shapes of every step, the workspace and the outputs`, async () => {
    const rng = new TestRng(200);
    const cache = model.newCache();
    assert.equal(cache.bytesAllocated, 2 * L * P * C * 4);
    for (const [T, logits] of [[7, "all"], [1, "last"], [5, "last"], [1, "all"]] as const) {
      const before = cache.length;
      let out!: Awaited<ReturnType<Runner["forward"]>>;
      const [plan] = await capturePlans(gpu, async () => {
        out = await model.forward(rng.ids(T, V), cache, {
          logits,
          hidden: true,
          attention: true,
        });
      });
      const rows = logits === "all" ? T : 1;
      assert.deepEqual(plan.map((s) => s.label), expectedLabels(c, T, rows, true), `T=${T}`);
      for (const s of plan.filter((s): s is Copy => "from" in s)) {
        assert.deepEqual([s.from.shape, s.to.shape], [[T, C], [T, C]], s.label);
      }
      for (const s of plan.filter((s): s is Dispatch => "pipeline" in s)) {
        assert.ok(s.workgroups.every((n) => n >= 1), `${s.label}: ${s.workgroups}`);
      }
      assert.equal(out.logits.length, rows * V);
      assert.equal(out.hidden!.length, (L + 2) * T * C);
      assert.equal(out.attention!.length, L);
      for (const a of out.attention!) assert.equal(a.length, H * T * P);
      assert.equal(cache.length, before + T);
      assert.equal(cache.bytesAllocated, 2 * L * P * C * 4);
      assert.equal(cache.bytesUsed, cacheBytes(c, cache.length));
    }
    assert.equal(cache.length, 14);
    cache.destroy();
  });

  Deno.test(`gpt2 (${name}): workspace tensors for T tokens`, () => {
    for (const T of [1, 7]) {
      for (const logits of ["all", "last"] as const) {
        const ws = new Workspace(gpu, c, T, { logits, hidden: true, attention: true });
        assert.deepEqual(ws.x.shape, [T, C]); // embeddings, then the residual stream
        assert.deepEqual(ws.ln.shape, [T, C]);
        assert.deepEqual(ws.qkv.shape, [T, 3 * C]);
        assert.deepEqual(ws.att.shape, [T, C]);
        assert.deepEqual(ws.fc.shape, [T, c.nInner]);
        assert.equal(ws.logits.shape[0], logits === "all" ? T : 1);
        assert.ok(ws.logits.shape[1] >= V && (ws.logits.shape[1] * 4) % gpu.bindingAlignment === 0);
        assert.deepEqual(ws.hidden!.shape, [L + 2, T, C]);
        for (let i = 0; i < L + 2; i++) assert.deepEqual(ws.hiddenAt(i).shape, [T, C]);
        assert.deepEqual(ws.probs.map((p) => p.shape), Array(L).fill([H, T, P]));
        ws.destroy();
      }
    }
  });
}

for (const { config: c, weights, model } of MODELS) {
  const name = c.tieWordEmbeddings ? "tied" : "untied";
  const { nEmbd: C, nLayer: L, nHead: H, nPositions: P, vocabSize: V, headDim: D } = c;

  Deno.test(`gpt2 (${name}): hidden, logits, attention and cache match a CPU GPT-2`, async () => {
    const T = 13;
    const ids = new TestRng(300).ids(T, V);
    const ref = gpt2Ref(c, weights, ids);
    const cache = model.newCache();
    const out = await model.forward(ids, cache, { logits: "all", hidden: true, attention: true });
    assertClose(out.hidden!, ref.hidden, TOL, `${name} hidden [${L + 2},${T},${C}]`);
    assertClose(out.logits, ref.logits, TOL, `${name} logits [${T},${V}]`);
    for (let l = 0; l < L; l++) {
      assertClose(out.attention![l], ref.probs[l], TOL, `${name} attention[${l}] [${H},${T},${P}]`);
    }
    const kv = await cache.read();
    for (let l = 0; l < L; l++) {
      const trim = (a: Float64Array) => {
        const o = new Float64Array(H * T * D);
        for (let h = 0; h < H; h++) o.set(a.subarray(h * P * D, (h * P + T) * D), h * T * D);
        return o;
      };
      assertClose(kv[l].k, trim(ref.cache[l].k), TOL, `${name} cache[${l}].k [${H},${T},${D}]`);
      assertClose(kv[l].v, trim(ref.cache[l].v), TOL, `${name} cache[${l}].v`);
    }
    // "last" logits are the last row of "all".
    const cache2 = model.newCache();
    const last = await model.forward(ids, cache2);
    assertClose(last.logits, ref.logits.subarray((T - 1) * V), TOL, `${name} last logits [1,${V}]`);
    cache.destroy();
    cache2.destroy();
  });

  Deno.test(`gpt2 (${name}): cached decode gives the no-cache logits`, async () => {
    const T = 12;
    const ids = new TestRng(400).ids(T, V);
    const cached = model.newCache();
    // Prefill T - 4 tokens, then decode the other 4 one at a time.
    let out = await model.forward(ids.slice(0, T - 4), cached);
    let worst = 0;
    for (let n = T - 4; n <= T; n++) {
      if (n > T - 4) out = await model.forward([ids[n - 1]], cached);
      const fresh = model.newCache();
      const want = (await model.forward(ids.slice(0, n), fresh)).logits;
      fresh.destroy();
      const scale = want.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      const d = assertClose(out.logits, want, TOL_DECODE * scale, `${name} decode at ${n}`);
      worst = Math.max(worst, d.maxAbs / scale);
    }
    console.log(`  ${name}: cached vs no-cache, max diff / max|logit| ${worst.toExponential(2)}`);
    assert.equal(cached.length, T);
    cached.destroy();
  });

  Deno.test(`gpt2 (${name}): attention past the causal limit is 0 when a workspace is reused`, async () => {
    // The same [nHead, T, P] probs buffers serve every forward of this shape: a step that
    // starts at a smaller pos0 than the last one must not leave that step's rows behind.
    const rng = new TestRng(500);
    const cache = model.newCache();
    await model.forward(rng.ids(5, V), cache);
    await model.forward(rng.ids(3, V), cache, { attention: true }); // pos0 = 5
    cache.reset();
    const out = await model.forward(rng.ids(3, V), cache, { attention: true }); // pos0 = 0
    for (const [l, a] of out.attention!.entries()) {
      for (let h = 0; h < H; h++) {
        for (let t = 0; t < 3; t++) {
          const row = a.subarray((h * 3 + t) * P, (h * 3 + t + 1) * P);
          const sum = row.subarray(0, t + 1).reduce((x, y) => x + y, 0);
          assert.ok(Math.abs(sum - 1) < 1e-5, `layer ${l} h${h} t${t}: sum ${sum}`);
          assert.ok(
            row.subarray(t + 1).every((x) => x === 0),
            `layer ${l} h${h} t${t}: keys past ${t} are ${row.subarray(t + 1, t + 7)}, not 0`,
          );
        }
      }
    }
    cache.destroy();
  });
}

Deno.test("gpt2: bad input is rejected with a clear message and changes nothing", async () => {
  const { model, config } = MODELS[0];
  const cache = model.newCache();
  const check = async (ids: number[], message: RegExp, cache: KVCache) => {
    const before = cache.length;
    await assert.rejects(model.forward(ids, cache), message);
    assert.equal(cache.length, before, "the cache length changed");
  };
  await check([1, 500, 2], /token id 500 at position 1 is outside 0\.\.499/, cache);
  await check([-1], /token id -1 at position 0 is outside 0\.\.499/, cache);
  await check([3, 1.5], /token id 1\.5 at position 1/, cache);
  await check([], /no tokens/, cache);
  await check(
    Array(65).fill(0),
    /0 cached \+ 65 new tokens exceed the context \(n_positions 64\)/,
    cache,
  );
  await model.forward(Array(config.nPositions - 1).fill(7), cache);
  await model.forward([7], cache); // exactly full
  assert.equal(cache.length, config.nPositions);
  assert.equal(cache.bytesUsed, cache.bytesAllocated);
  await check([7], /64 cached \+ 1 new tokens exceed the context \(n_positions 64\)/, cache);
  cache.reset();
  assert.equal((await model.forward([7], cache)).logits.length, config.vocabSize);
  cache.destroy();
});

Deno.test({
  name: "gpt2: profile times every dispatch in plan order and changes no output",
  ignore: !gpu.hasTimestamps,
  fn: async () => {
    const { model, config } = MODELS[0];
    const cache = model.newCache();
    const ids = new TestRng(300).ids(6, config.vocabSize);
    const plain = await model.forward(ids, cache);
    assert.equal(plain.profile, undefined);
    cache.reset();
    let profiled!: Awaited<ReturnType<Runner["forward"]>>;
    const [plan] = await capturePlans(gpu, async () => {
      profiled = await model.forward(ids, cache, { profile: true });
    });
    assert.deepEqual(profiled.logits, plain.logits);
    const dispatches = plan.filter((s): s is Dispatch => "pipeline" in s);
    assert.deepEqual(profiled.profile!.map((k) => k.label), dispatches.map((s) => s.label));
    assert.ok(profiled.profile!.every((k) => Number.isFinite(k.ns) && k.ns >= 0));
    assert.ok(profiled.profile!.some((k) => k.ns > 0));
    assert.deepEqual(await gpu.readProfile(), [], "read once");
    cache.destroy();
  },
});
