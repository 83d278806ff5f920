/**
 * The fused decode step (kernels/fused_decode.ts) on small random models: its logits and cache
 * against a float64 CPU GPT-2 (tests/cpu_reference.ts), its greedy chain against the CPU
 * argmax of that reference (ties to the first id, across the lm_head's workgroups too), its
 * sampler against run/sampling.ts's on the same generator state, f16/int8 caches and f16
 * weights, and how the runner picks the path.
 */
import assert from "node:assert/strict";
import { fusedDecodeLimit, stepHasHead } from "../kernels/fused_decode.ts";
import { gpuSamples } from "../kernels/sample.ts";
import { type Dispatch, isSoftwareAdapter, type Plan } from "../kernels/gpu.ts";
import type { RowChunks } from "../kernels/matmul.ts";
import { type GPT2Config, parseConfig } from "../model/config.ts";
import { GPT2 } from "../model/gpt2.ts";
import { Runner } from "../run/runner.ts";
import type { CacheDType } from "../model/kv_cache.ts";
import { type GPT2Weights, randomWeights } from "../model/weights.ts";
import {
  chooseDecodePath,
  type DecodeChoiceInput,
  type DecodePath,
  type RunnerOptions,
} from "../run/runner.ts";
import { Rng } from "../base/rng.ts";
import { argmax, sampleToken, type SamplingOptions } from "../run/sampling.ts";
import { gpt2Ref } from "./cpu_reference.ts";
import { assertClose, capturePlans, TestRng } from "./helpers.ts";
import { modelOptionsFromEnv, openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

/** f32 against the f64 reference: diff <= TOL · max(1, |ref|), as tests/gpt2_test.ts. */
const TOL = 1e-4;

function config(fields: Record<string, unknown>, name: string): GPT2Config {
  return parseConfig({ bos_token_id: 0, eos_token_id: 0, ...fields }, name);
}

/** 500 tokens: the step runs the lm_head itself (one dispatch a token). */
const SMALL_VOCAB = config({
  n_layer: 2,
  n_head: 3,
  n_embd: 48,
  n_positions: 32,
  vocab_size: 500,
  n_inner: 104,
}, "small vocabulary");
/** 3000 tokens, untied: the lm_head is a wide dispatch of its own, 47 workgroups. */
const LARGE_VOCAB = config({
  n_layer: 3,
  n_head: 2,
  n_embd: 32,
  n_positions: 40,
  vocab_size: 3000,
  n_inner: null,
  tie_word_embeddings: false,
}, "large vocabulary");
/**
 * 40000 tokens: more than llvmpipe lets one invocation loop over (65,535 iterations in all),
 * so the sampler must share the vocabulary across the workgroup.
 */
const HUGE_VOCAB = config({
  n_layer: 1,
  n_head: 2,
  n_embd: 32,
  n_positions: 24,
  vocab_size: 40000,
}, "huge vocabulary");
/** A character model's shape, 65 tokens: top-p alone is sampled on the GPU. */
const CHARS = config({
  n_layer: 2,
  n_head: 2,
  n_embd: 32,
  n_positions: 48,
  vocab_size: 65,
}, "characters");

/** A model on the fused path and one on the general path, with the same weights. */
function models(c: GPT2Config, w: GPT2Weights, weights: "f32" | "f16" = "f32") {
  const fused = new Runner(new GPT2(gpu, c, w, { weights }), { decode: "fused" });
  const general = new Runner(new GPT2(gpu, c, w, { weights }), { decode: "general" });
  return { fused, general, [Symbol.dispose]: () => [fused, general].forEach((m) => m.destroy()) };
}

/** Each weight rounded to f16, as `weights: "f16"` stores it. */
function roundedToF16(w: GPT2Weights): GPT2Weights {
  const r = (a: Float32Array) => Float32Array.from(new Float16Array(a));
  const linear = (l: GPT2Weights["blocks"][number]["attn"]["cAttn"]) => ({
    ...l,
    weight: r(l.weight),
  });
  return {
    ...w,
    wte: r(w.wte),
    lmHead: w.lmHead && r(w.lmHead),
    blocks: w.blocks.map((b) => ({
      ...b,
      attn: { cAttn: linear(b.attn.cAttn), cProj: linear(b.attn.cProj) },
      mlp: { cFc: linear(b.mlp.cFc), cProj: linear(b.mlp.cProj) },
    })),
  };
}

/** The labels of the dispatches of `plans`, in order. */
function dispatchLabels(plans: Plan[]): string[] {
  return plans.flat().filter((s): s is Dispatch => "pipeline" in s).map((s) => s.label);
}

/**
 * Whether this adapter takes the fused step for a model of shape `c`: OpenGL's llvmpipe
 * gives a dispatch 16 storage bindings, enough for two layers but not three, so there the
 * tests of deeper models are ignored (the limit test still runs).
 */
function fusedHere(c: GPT2Config): boolean {
  const chunk = (rows: number) => oneChunk(rows, c.nEmbd);
  return fusedDecodeLimit(gpu, c, "f32", chunk(c.vocabSize), chunk(c.vocabSize)) === null;
}

function oneChunk(rows: number, cols: number): RowChunks {
  return { rows, cols, format: "f32", parts: [{ row0: 0, tensor: gpu.unused("limit test") }] };
}

/** A test of the fused step on models of shapes `uses`: ignored where the adapter cannot. */
function fusedTest(
  name: string,
  uses: GPT2Config[],
  fn: () => Promise<void> | void,
): void {
  Deno.test({ name, ignore: !uses.every(fusedHere), fn });
}

for (const [c, weights] of [[SMALL_VOCAB, "f32"], [LARGE_VOCAB, "f32"], [CHARS, "f16"]] as const) {
  const name = `${c.vocabSize} tokens, ${c.nLayer} layers, ${weights} weights`;
  fusedTest(`decode (${name}): fused steps and cache match a float64 GPT-2`, [c], async () => {
    const w = randomWeights(c, c.vocabSize);
    const ref = weights === "f16" ? roundedToF16(w) : w;
    using m = models(c, w, weights);
    assert.equal(m.fused.decodePath, "fused");
    const ids = new TestRng(1).ids(9, c.vocabSize);
    const cache = m.fused.newCache();
    await m.fused.forward(ids.slice(0, 5), cache); // a prefill: the general path
    for (let n = 6; n <= ids.length; n++) {
      const plans = await capturePlans(gpu, async () => {
        const { logits } = await m.fused.forward([ids[n - 1]], cache);
        const want = gpt2Ref(c, ref, ids.slice(0, n)).logits.subarray((n - 1) * c.vocabSize);
        assertClose(logits, want, TOL, `${name}: logits after ${n} tokens`);
      });
      const dispatches = dispatchLabels(plans);
      assert.equal(dispatches.length, stepHasHead(c) ? 1 : 2, dispatches.join());
    }
    const { cache: want } = gpt2Ref(c, ref, ids);
    const { nHead: H, headDim: D, nPositions: P } = c;
    const T = ids.length;
    for (const [l, kv] of (await cache.read()).entries()) {
      const rows = (a: Float64Array) => {
        const o = new Float64Array(H * T * D);
        for (let h = 0; h < H; h++) o.set(a.subarray(h * P * D, (h * P + T) * D), h * T * D);
        return o;
      };
      assertClose(kv.k, rows(want[l].k), TOL, `${name}: cache[${l}].k`);
      assertClose(kv.v, rows(want[l].v), TOL, `${name}: cache[${l}].v`);
    }
    cache.destroy();
  });
}

for (const c of [SMALL_VOCAB, LARGE_VOCAB]) {
  fusedTest(
    `decode (${c.vocabSize} tokens): the greedy chain is the float64 argmax`,
    [c],
    async () => {
      const w = randomWeights(c, 7);
      using m = models(c, w);
      const ids = new TestRng(2).ids(4, c.vocabSize);
      const cache = m.fused.newCache();
      await m.fused.forward(ids.slice(0, 3), cache);
      const n = 6;
      const plans = await capturePlans(gpu, async () => {
        const got = await m.fused.decodeGreedy(ids[3], cache, n);
        const seq = [...ids];
        for (let i = 0; i < n; i++) {
          const logits = gpt2Ref(c, w, seq).logits.subarray((seq.length - 1) * c.vocabSize);
          seq.push(argmax(Float32Array.from(logits)));
        }
        assert.deepEqual(got, seq.slice(ids.length));
      });
      const dispatches = dispatchLabels(plans).length;
      assert.equal(dispatches, (stepHasHead(c) ? 1 : 2) * n + 1, "dispatches of the chain");
      assert.equal(cache.length, 3 + n);
      cache.destroy();
    },
  );

  fusedTest(
    `decode (${c.vocabSize} tokens): equal best logits give the first id`,
    [c],
    async () => {
      // Two lm_head rows equal to the step's ln_f output, every other row 0: the two largest
      // logits are equal (and, with the wide head, in different workgroups).
      const untied = config({ ...configFields(c), tie_word_embeddings: false }, "ties");
      const w = randomWeights(untied, 8);
      const ids = [5, 9, 2];
      const T = ids.length;
      const { hidden } = gpt2Ref(untied, w, ids);
      const h = hidden.subarray((untied.nLayer + 1) * T * c.nEmbd + (T - 1) * c.nEmbd);
      const [first, second] = [c.vocabSize / 5, c.vocabSize - 3].map(Math.floor);
      const lmHead = new Float32Array(c.vocabSize * c.nEmbd);
      for (const row of [first, second]) lmHead.set(h, row * c.nEmbd);
      using m = models(untied, { ...w, lmHead });
      const cache = m.fused.newCache();
      await m.fused.forward(ids.slice(0, -1), cache);
      assert.deepEqual(await m.fused.decodeGreedy(ids[T - 1], cache, 1), [first]);
      cache.destroy();
    },
  );
}

/** The fields of a parsed config, back in config.json's names. */
function configFields(c: GPT2Config) {
  return {
    n_layer: c.nLayer,
    n_head: c.nHead,
    n_embd: c.nEmbd,
    n_positions: c.nPositions,
    vocab_size: c.vocabSize,
    n_inner: c.nInner,
  };
}

for (const dtype of ["f16", "int8"] as const satisfies CacheDType[]) {
  fusedTest(
    `decode: an ${dtype} cache holds what the general path stores`,
    [LARGE_VOCAB],
    async () => {
      const c = LARGE_VOCAB;
      using m = models(c, randomWeights(c, 9));
      const ids = new TestRng(3).ids(8, c.vocabSize);
      const out = [];
      const caches = [];
      for (const model of [m.fused, m.general]) {
        const cache = model.newCache({ dtype, policy: "grow", initialCapacity: 4 });
        await model.forward(ids.slice(0, 3), cache);
        const logits = [];
        for (const id of ids.slice(3, 6)) logits.push((await model.forward([id], cache)).logits);
        const greedy = await model.decodeGreedy(ids[6], cache, 5);
        out.push({ logits, greedy, kv: await cache.read(), growths: cache.growths });
        caches.push(cache);
      }
      const [fused, general] = out;
      assert.ok(fused.growths > 0, "the cache grew while decoding");
      const scale = Math.max(...general.logits.map((l) => Math.max(...l.map(Math.abs))));
      fused.logits.forEach((l, i) => assertClose(l, general.logits[i], 1e-3 * scale, `step ${i}`));
      assert.deepEqual(fused.greedy, general.greedy);
      fused.kv.forEach((kv, l) => {
        assertClose(kv.k, general.kv[l].k, 1e-3, `${dtype} cache[${l}].k`);
        assertClose(kv.v, general.kv[l].v, 1e-3, `${dtype} cache[${l}].v`);
      });
      for (const cache of caches) cache.destroy();
    },
  );
}

Deno.test("TestRng: state() and setState() carry the generator's position", () => {
  for (const seed of [0, 1, -7, 2 ** 40 + 3]) {
    const rng = new Rng(seed);
    const copy = new Rng(99);
    copy.setState(rng.state());
    for (let i = 0; i < 5; i++) assert.equal(copy.nextUint32(), rng.nextUint32(), `seed ${seed}`);
  }
  assert.throws(() => new Rng(1).setState([1, 2, 3]), /four 32-bit words/);
});

const SAMPLINGS: SamplingOptions[] = [
  { temperature: 0.8, topK: 40, topP: 1 },
  { temperature: 1.3, topK: 0, topP: 1 },
  { temperature: 1, topK: 20, topP: 0.9 },
  { temperature: 0.7, topK: 0, topP: 0.85 },
];

for (const c of [CHARS, SMALL_VOCAB, LARGE_VOCAB, HUGE_VOCAB]) {
  fusedTest(`decode (${c.vocabSize} tokens): sampled ids are the CPU sampler's`, [c], async () => {
    using m = models(c, randomWeights(c, 10));
    const n = 12;
    for (const [i, sampling] of SAMPLINGS.entries()) {
      const seed = 100 + i;
      const first = i + 1;
      // The CPU sampler on the general path's logits, one wait per token.
      const cpuCache = m.general.newCache();
      await m.general.forward([3, 4], cpuCache);
      const rng = new Rng(seed);
      const want: number[] = [];
      for (let token = first; want.length < n;) {
        const { logits } = await m.general.forward([token], cpuCache);
        want.push(token = sampleToken(logits, sampling, rng));
      }
      const cache = m.fused.newCache();
      await m.fused.forward([3, 4], cache);
      const drawn = new Rng(seed);
      let got: number[] = [];
      const plans = await capturePlans(gpu, async () => {
        got = await m.fused.decodeSample(first, cache, n, sampling, drawn);
      });
      const what = `${JSON.stringify(sampling)}, seed ${seed}`;
      assert.deepEqual(got, want, what);
      // On the GPU one submission chains every step; else each step's logits come back.
      const onGpu = gpuSamples(sampling, c.vocabSize);
      assert.equal(onGpu, c.vocabSize <= 256 || sampling.topK > 0 || sampling.topP === 1, what);
      const stepping = plans.filter((plan) => dispatchLabels([plan]).length > 0);
      assert.equal(stepping.length, onGpu ? 1 : n, `${what}: submissions of steps`);
      assert.deepEqual(drawn.state(), rng.state(), `${what}: the generator advanced by ${n}`);
      assert.equal(cache.length, 2 + n);
      for (const c of [cache, cpuCache]) c.destroy();
    }
  });
}

/** The path and reason of a CHARS model made with `decode` (or these options). */
function pathOf(decode?: DecodePath | RunnerOptions) {
  const options = typeof decode === "string" ? { decode } : decode ?? {};
  const model = new Runner(new GPT2(gpu, CHARS, randomWeights(CHARS, 11)), options);
  const { decodePath, decodeReason, fusedForward } = model;
  model.destroy();
  return { decodePath, decodeReason, fusedForward };
}

fusedTest("decode: the runner picks the path by shape, or as the options say", [CHARS], () => {
  assert.deepEqual(pathOf("general"), {
    decodePath: "general",
    decodeReason: "asked for",
    fusedForward: false,
  });
  assert.deepEqual(pathOf("fused"), {
    decodePath: "fused",
    decodeReason: "asked for",
    fusedForward: true,
  });
  // f16 weights need rows of a multiple of 8: n_inner 100 keeps this model general.
  const odd = config({ ...configFields(CHARS), n_inner: 100 }, "n_inner 100");
  const oddWeights = randomWeights(odd, 12);
  const general = new Runner(new GPT2(gpu, odd, oddWeights, { weights: "f16" }), {
    decode: "general",
  });
  assert.equal(general.decodePath, "general");
  general.destroy();
  assert.throws(
    () => new Runner(new GPT2(gpu, odd, oddWeights, { weights: "f16" }), { decode: "fused" }),
    /decode "fused": this model cannot take the fused step: f16 rows of n_embd 32 and n_inner 100/,
  );
});

fusedTest("decode: KVGPT_DECODE (cli/env_options.ts) overrides the choice", [CHARS], () => {
  // The environment as a map: the process's own is read by other test files at the same time.
  const env = (value?: string) => (name: string) => name === "KVGPT_DECODE" ? value : undefined;
  // Chains take the fused path; a lone forward of one token only where it was asked for.
  assert.deepEqual(pathOf(modelOptionsFromEnv(env())), {
    decodePath: "fused",
    decodeReason: "a software adapter, and the model's activations fit one workgroup",
    fusedForward: false,
  });
  assert.deepEqual(pathOf(modelOptionsFromEnv(env("general"))), {
    decodePath: "general",
    decodeReason: "KVGPT_DECODE=general",
    fusedForward: false,
  });
  assert.equal(pathOf("fused").decodePath, "fused", "the library reads no environment");
  assert.deepEqual(pathOf(modelOptionsFromEnv(env("fused"))), {
    decodePath: "fused",
    decodeReason: "KVGPT_DECODE=fused",
    fusedForward: true,
  });
  const odd = config({ ...configFields(CHARS), n_inner: 100 }, "n_inner 100");
  const model = new Runner(
    new GPT2(gpu, odd, randomWeights(odd, 12), { weights: "f16" }),
    modelOptionsFromEnv(env("fused")),
  );
  assert.equal(model.decodePath, "general");
  assert.match(
    model.decodeReason,
    /^KVGPT_DECODE=fused, but the fused step does not fit: f16/,
  );
  model.destroy();
  assert.throws(
    () => modelOptionsFromEnv(env("fast")),
    /KVGPT_DECODE: expected general or fused, got "fast"/,
  );
});

Deno.test("chooseDecodePath: the fused step on software adapters only, unless asked", () => {
  const adapter = (fields: Partial<GPUAdapterInfo>) =>
    ({ vendor: "", architecture: "", device: "", description: "", ...fields }) as GPUAdapterInfo;
  const choose = (info: GPUAdapterInfo, more: Partial<DecodeChoiceInput> = {}) =>
    chooseDecodePath({ fusedLimit: null, software: isSoftwareAdapter(info), ...more });
  const h100 = adapter({ vendor: "nvidia", description: "NVIDIA H100 80GB HBM3" });
  for (
    const info of [
      adapter({ description: "llvmpipe (LLVM 15.0.6, 256 bits)" }),
      adapter({ vendor: "google", architecture: "swiftshader" }),
      adapter({ description: "Microsoft Basic Render Driver (WARP)" }),
    ]
  ) {
    assert.equal(choose(info).path, "fused", JSON.stringify(info));
    assert.match(choose(info).reason, /^a software adapter/);
  }
  assert.deepEqual(choose(h100), {
    path: "general",
    reason: "a GPU adapter: the fused step would run the model on one compute unit",
    fusedForward: false,
  });
  assert.deepEqual(choose(h100, { asked: "fused" }), {
    path: "fused",
    reason: "asked for",
    fusedForward: true,
  });
  assert.deepEqual(choose(h100, { asked: "fused", source: "KVGPT_DECODE=fused" }).path, "fused");
  const tooBig = { fusedLimit: "too big" };
  assert.equal(
    choose(adapter({ description: "llvmpipe" }), tooBig).reason,
    "the fused step does not fit: too big",
  );
  assert.throws(
    () => choose(h100, { ...tooBig, asked: "fused" }),
    /cannot take the fused step: too big/,
  );
  assert.throws(
    () => choose(h100, { asked: "fast" as DecodePath }),
    /decode must be "general" or "fused"/,
  );
});

Deno.test("fusedDecodeLimit: what keeps a model off the fused step", () => {
  const chunks = (rows: number, cols: number, parts = 1): RowChunks => ({
    rows,
    cols,
    format: "f32",
    parts: Array.from({ length: parts }, () => ({ row0: 0, tensor: gpu.unused("limit test") })),
  });
  const shape = (fields: Partial<GPT2Config>) => ({ ...CHARS, ...fields });
  const limit = (fields: Partial<GPT2Config>, parts = 1) =>
    fusedDecodeLimit(gpu, shape(fields), "f32", chunks(65, 32, parts), chunks(65, 32));
  const l = gpu.device.limits;
  if (fusedHere(CHARS)) assert.equal(limit({}), null);
  else assert.match(limit({}) ?? "", /storage bindings, more than the \d+ a dispatch has/);
  // GPT-2 small: 768 wide, 1024 positions, 12 heads.
  assert.match(
    limit({ nEmbd: 768, nHead: 12, nInner: 3072, nPositions: 1024 }) ?? "",
    new RegExp(`more than the ${l.maxComputeWorkgroupStorageSize} a workgroup has`),
  );
  const layers = Math.ceil(l.maxStorageBuffersPerShaderStage / 4);
  assert.match(
    limit({ nLayer: layers }) ?? "",
    new RegExp(`${layers} layers need \\d+ storage bindings`),
  );
  // One layer, so that the bindings of OpenGL's llvmpipe (16) are not the first reason.
  assert.match(limit({ nLayer: 1, nHead: 16 }) ?? "", /head_dim 2 is not a multiple of 4/);
  assert.match(limit({ nLayer: 1 }, 2) ?? "", /wte does not fit one binding/);
  // Deep enough that one invocation would loop past what llvmpipe runs (~3,600 a layer here).
  const deep = { nLayer: 20, nEmbd: 256, nHead: 4, nInner: 1024, nPositions: 512 };
  assert.match(limit(deep) ?? "", /would loop ~\d+ times in one invocation/);
});
