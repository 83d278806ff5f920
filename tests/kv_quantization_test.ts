/**
 * KV caches stored as f16 and int8: the stored values stay within their rounding bound, the
 * attention kernels read exactly what the cache holds, and the bytes follow the formula.
 */
import assert from "node:assert/strict";
import { attend, cacheWords, storeKv } from "../kernels/attention.ts";

import type { GPT2Config } from "../model/config.ts";
import { Runner } from "../run/runner.ts";
import type { CacheDType, KVCache, LayerKV } from "../model/kv_cache.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { attentionRef } from "./cpu_reference.ts";
import { Arena, assertClose, granted, needs, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();
// Every test here needs the fixture: without read access (plain `deno test`) they are ignored.
const readable = granted("read");
const model = readable ? await Runner.load(gpu, "data/tiny-gpt2") : undefined!;
const ref = readable
  ? await SafetensorsFile.open("data/tiny-gpt2/reference.safetensors")
  : undefined!;
const ids = readable ? [...ref.i32("p2.input_ids")] : []; // 108 tokens
const { nHead, headDim, nLayer, nEmbd } = readable ? model.config : ({} as GPT2Config);

async function prefilled(dtype: CacheDType): Promise<KVCache> {
  const cache = model.newCache({ dtype });
  await model.forward(ids, cache);
  return cache;
}

/**
 * Worst |stored - exact| / bound over layer 0's values (later layers' K/V already depend on
 * the quantized attention below them), where bound is half the rounding step.
 */
function worstRatio(got: LayerKV[], exact: LayerKV[], dtype: CacheDType): number {
  let worst = 0;
  got.slice(0, 1).forEach((layer, i) => {
    for (const key of ["k", "v"] as const) {
      const a = layer[key];
      const b = exact[i][key];
      for (let r = 0; r < a.length / headDim; r++) {
        const row = b.subarray(r * headDim, (r + 1) * headDim);
        const max = row.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
        for (let d = 0; d < headDim; d++) {
          const x = row[d];
          // f16: half an ulp (2^-11 relative, 2^-25 absolute near 0); int8: half a step of max/127.
          const bound = dtype === "f16"
            ? Math.max(Math.abs(x) * 2 ** -11, 2 ** -25)
            : (max / 127) * 0.5 * (1 + 1e-3); // x / scale is rounded in f32 on the GPU
          worst = Math.max(worst, Math.abs(a[r * headDim + d] - x) / bound);
        }
      }
    }
  });
  return worst;
}

for (const dtype of ["f16", "int8"] as const) {
  Deno.test(
    `${dtype} cache: stored K/V within rounding of the f32 values`,
    needs("read"),
    async () => {
      const [exact, quant] = [await prefilled("f32"), await prefilled(dtype)];
      const ratio = worstRatio(await quant.read(), await exact.read(), dtype);
      console.log(`  ${dtype}: worst |stored - f32| / rounding bound = ${ratio.toFixed(3)}`);
      assert.ok(ratio <= 1, `${dtype} values off by ${ratio}× their rounding bound`);
      exact.destroy();
      quant.destroy();
    },
  );

  for (const T of [7, 1]) {
    Deno.test(
      `${dtype} cache: attention reads exactly the values the cache holds, T = ${T}`,
      needs("read"),
      async () => {
        // Kernel level: storeKv quantizes this step's K/V into the cache; attend's output must
        // equal a float64 attention over the values the cache holds, decoded on the CPU.
        // T = 1 is decode's single-dispatch attend_one.
        const [H, D, P, pos0] = [3, 16, 64, 20];
        const C = H * D;
        const rng = new TestRng(7);
        const arena = new Arena(gpu);
        const words = cacheWords(dtype, D);
        const qkv = rng.normals(T * 3 * C, 1.5);
        const qkvT = arena.upload(qkv, [T, 3 * C], "qkv");
        const [kT, vT] = [arena.poisoned([H, P, words], "k"), arena.poisoned([H, P, words], "v")];
        const scales = dtype === "int8"
          ? { k: arena.poisoned([H, P], "k scales"), v: arena.poisoned([H, P], "v scales") }
          : undefined;
        // Earlier rows: fill the cache by storing random steps at positions 0 .. pos0-1.
        const past = arena.upload(rng.normals(pos0 * 3 * C, 1.5), [pos0, 3 * C], "past");
        const step0 = arena.step(0);
        const step = arena.step(pos0);
        const out = arena.poisoned([T, C], "out");
        const probs = arena.poisoned([H, T, P], "probs");
        gpu.run([
          storeKv(gpu, step0, past, kT, vT, scales),
          storeKv(gpu, step, qkvT, kT, vT, scales),
          ...attend(gpu, step, qkvT, kT, vT, out, probs, false, scales),
        ]);
        const [kw, vw, o, ks, vs] = await gpu.read([
          kT,
          vT,
          out,
          ...(scales ? [scales.k, scales.v] : []),
        ]);
        arena.destroy();
        const decode = (raw: Float32Array, sc: Float32Array | undefined) => {
          const bytes = raw.buffer;
          if (dtype === "f16") return Float64Array.from(new Float16Array(bytes));
          const q = new Int8Array(bytes);
          return Float64Array.from(q, (v, i) => Math.max(-1, v / 127) * sc![Math.floor(i / D)]);
        };
        const want = attentionRef(qkv, decode(kw, ks), decode(vw, vs), T, H, D, P, pos0);
        assertClose(o, want.out, 1e-5, `${dtype} attention over the stored values, T=${T}`);
      },
    );
  }

  Deno.test(
    `${dtype} cache: bytes, copies and eviction keep every stored word`,
    needs("read"),
    async () => {
      const quant = await prefilled(dtype);
      const perValue = dtype === "f16" ? 2 : 1;
      const scales = dtype === "int8" ? nHead * 4 : 0;
      assert.equal(quant.bytesUsed, 2 * nLayer * ids.length * (nEmbd * perValue + scales));
      assert.ok(quant.bytesAllocated >= 2 * nLayer * model.config.nPositions * nEmbd * perValue);
      const before = gpu.bytesAllocated;
      const copy = model.newCache({ dtype, policy: "grow", initialCapacity: 4 });
      copy.copyPrefix(quant);
      assert.deepEqual(await copy.read(), await quant.read());
      const want = await quant.read();
      quant.evict(3, 50);
      const after = await quant.read();
      const rowsOf = (a: Float32Array, n: number, h: number, from: number, to: number) =>
        a.slice((h * n + from) * headDim, (h * n + to) * headDim);
      for (let h = 0; h < nHead; h++) {
        assert.deepEqual(rowsOf(after[0].k, 53, h, 3, 53), rowsOf(want[0].k, 108, h, 58, 108));
        assert.deepEqual(rowsOf(after[1].v, 53, h, 0, 3), rowsOf(want[1].v, 108, h, 0, 3));
      }
      copy.destroy();
      assert.equal(gpu.bytesAllocated, before);
      const f32 = model.newCache();
      assert.throws(() => f32.copyPrefix(quant), /another model or dtype/);
      f32.destroy();
      quant.destroy();
    },
  );
}

Deno.test("an unknown cache dtype is refused", needs("read"), () => {
  assert.throws(() => model.newCache({ dtype: "f8" as CacheDType }), /dtype must be/);
});
