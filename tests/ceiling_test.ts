/**
 * The ceiling micro-benchmarks compute what they claim (so that their rates count real work),
 * and measureCeiling returns finite positive rates. No timing is asserted.
 */
import assert from "node:assert/strict";
import {
  CEILING_INVOCATIONS,
  FMA_CHAINS,
  fmaPeak,
  measureCeiling,
  measureF16,
  readPeak,
} from "../kernels/ceiling.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

/** The seed of chain k of invocation i, as ceiling.wgsl computes it. */
const seed = (i: number, k: number) => Math.fround(((i * 16 + k) % 1024) * Math.fround(1e-4));

Deno.test("fmaPeak: every invocation's chains run all their rounds", async () => {
  const out = gpu.tensor([CEILING_INVOCATIONS], "out");
  const [m, c, iters] = [0.75, 0.125, 37];
  for (const chains of FMA_CHAINS) {
    gpu.run([fmaPeak(gpu, chains, iters, m, c, out)]);
    const got = await gpu.read1(out);
    for (const i of [0, 1, 63, 1000, CEILING_INVOCATIONS - 1]) {
      let want = 0;
      for (let k = 0; k < chains; k++) {
        let a = seed(i, k);
        for (let r = 0; r < iters; r++) a = a * m + c;
        want += a;
      }
      assert.ok(Math.abs(got[i] - want) <= 1e-5 * chains, `${chains} chains, out[${i}]`);
    }
  }
  gpu.destroy(out);
  assert.throws(() => fmaPeak(gpu, 4, 70000, m, c, out), /loop cap/);
});

Deno.test("readPeak: sums the window's vec4s that each invocation is given", async () => {
  const window = 2 ** 16; // vec4s
  const data = Float32Array.from({ length: 4 * window }, (_, i) => (i % 97) - 48);
  const src = gpu.upload(data, [data.length], "src");
  const out = gpu.tensor([CEILING_INVOCATIONS], "out");
  const rounds = 3;
  gpu.run([readPeak(gpu, src, window, rounds, out)]);
  const got = await gpu.read1(out);
  for (const i of [0, 5, 4097, CEILING_INVOCATIONS - 1]) {
    let want = 0;
    for (let k = 0; k < 4 * rounds; k++) {
      const v = (i + k * CEILING_INVOCATIONS) & (window - 1);
      for (let j = 0; j < 4; j++) want += data[4 * v + j];
    }
    assert.equal(got[i], want, `out[${i}]`);
  }
  assert.throws(() => readPeak(gpu, src, 3000, rounds, out), /power of two/);
  gpu.destroy(src);
  gpu.destroy(out);
});

Deno.test("measureCeiling: finite positive rates", async () => {
  const c = await measureCeiling(gpu, 1);
  console.log(`  ${JSON.stringify(c)}`);
  for (const v of [c.fmaGflops, c.cachedReadGBs, c.memoryReadGBs]) {
    assert.ok(Number.isFinite(v) && v > 0, JSON.stringify(c));
  }
  assert.ok((FMA_CHAINS as readonly number[]).includes(c.fmaChains));
});

Deno.test({
  name: "fmaPeak and readPeak in f16: the same work in half precision; measureF16's ratios",
  ignore: !gpu.hasF16,
  async fn() {
    const out = gpu.tensor([CEILING_INVOCATIONS], "out");
    const [m, c, iters] = [0.75, 0.125, 37];
    gpu.run([fmaPeak(gpu, 16, iters, m, c, out, true)]);
    const got = await gpu.read1(out);
    for (const i of [0, 77, CEILING_INVOCATIONS - 1]) {
      let want = 0;
      for (let k = 0; k < 16; k++) {
        let a = seed(i, k);
        for (let r = 0; r < iters; r++) a = a * m + c;
        want += a;
      }
      // f16 keeps 11 significant bits: each chain ends within ~1e-3 of 0.5.
      assert.ok(Math.abs(got[i] - want) <= 16 * 2e-3, `f16 out[${i}] ${got[i]} vs ${want}`);
    }
    const window = 2 ** 12;
    const halves = Float16Array.from({ length: 4 * window }, (_, i) => (i % 13) - 6);
    const src = gpu.upload(new Float32Array(halves.buffer), [2 * window], "src");
    gpu.run([readPeak(gpu, src, window, 2, out, true)]);
    const sums = await gpu.read1(out);
    for (const i of [0, 4095, 4096, CEILING_INVOCATIONS - 1]) {
      let want = 0;
      for (let k = 0; k < 8; k++) {
        const v = (i + k * CEILING_INVOCATIONS) & (window - 1);
        for (let j = 0; j < 4; j++) want += halves[4 * v + j];
      }
      assert.equal(sums[i], want, `f16 read out[${i}]`);
    }
    gpu.destroy(src);
    gpu.destroy(out);
    const r = await measureF16(gpu, 1);
    for (const v of Object.values(r)) assert.ok(Number.isFinite(v) && v > 0, JSON.stringify(r));
  },
});
