/**
 * The causal softmax kernel against a float64 CPU softmax, and the fused softmax +
 * cross-entropy (loss and gradient) against a float64 reference.
 */
import assert from "node:assert/strict";

import { causalSoftmax, crossEntropyGradInPlace } from "../kernels/softmax.ts";
import { crossEntropyRef } from "./cpu_reference.ts";
import { Arena, assertClose, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

/** Row (h, t) of x [H, T, ld] softmaxed over its first pos0 + t + 1 entries, in float64. */
function softmaxRef(x: Float32Array, H: number, T: number, ld: number, pos0: number) {
  const out = Float32Array.from(x);
  for (let r = 0; r < H * T; r++) {
    const n = pos0 + (r % T) + 1;
    const row = x.subarray(r * ld, r * ld + n);
    const m = Math.max(...row);
    const e = Array.from(row, (v) => Math.exp(v - m));
    const sum = e.reduce((a, b) => a + b, 0);
    e.forEach((v, j) => (out[r * ld + j] = v / sum));
    out.fill(0, r * ld + n, (r + 1) * ld);
  }
  return out;
}

for (
  const [H, T, ld, pos0] of [[3, 1, 37, 0], [2, 7, 37, 30], [4, 129, 131, 2], [1, 1, 1024, 1023]]
) {
  Deno.test(`softmax: H=${H} T=${T} row stride ${ld} pos0=${pos0}`, async () => {
    const rng = new TestRng(H * 1000 + T);
    const x = rng.normals(H * T * ld, 3);
    const arena = new Arena(gpu);
    const withZeros = arena.upload(x, [H, T, ld], "x");
    const withTail = arena.upload(x, [H, T, ld], "x2");
    const step = arena.step(pos0);
    gpu.run([causalSoftmax(gpu, step, withZeros, true), causalSoftmax(gpu, step, withTail, false)]);
    const [got, kept] = await gpu.read([withZeros, withTail]);
    arena.destroy();
    const want = softmaxRef(x, H, T, ld, pos0);
    assertClose(got, want, 1e-6, `softmax H=${H} T=${T}`);
    for (let r = 0; r < H * T; r++) {
      const n = pos0 + (r % T) + 1;
      const row = got.subarray(r * ld, r * ld + n);
      assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-6, `row ${r} sums to 1`);
      // Without zeroTail the masked entries keep their input values.
      assert.deepEqual(
        kept.subarray(r * ld + n, (r + 1) * ld),
        x.subarray(r * ld + n, (r + 1) * ld),
      );
    }
  });
}

/** Losses: diff <= TOL_LOSS · max(1, |ref|) (seen: 2.2e-7). */
const TOL_LOSS = 2e-6;
/** Gradients (softmax - onehot) · scale, all below scale: diff <= TOL_GRAD · scale (seen: 1.6e-7). */
const TOL_GRAD = 1e-6;

/**
 * Runs crossEntropyGradInPlace over N rows of random logits [N, ld] (columns >= V poisoned with NaN,
 * which must stay) and checks losses and gradients against the float64 reference.
 */
async function checkCrossEntropy(rng: TestRng, N: number, V: number, ld: number, std: number) {
  const label = `N=${N} V=${V} ld=${ld}`;
  const logits = new Float32Array(N * ld).fill(NaN);
  for (let n = 0; n < N; n++) logits.set(rng.normals(V, std), n * ld);
  const targets = Uint32Array.from({ length: N }, () => rng.int(V));
  const scale = 1 / N;
  const arena = new Arena(gpu);
  const logitsT = arena.upload(logits, [N, ld], "logits");
  const losses = arena.poisoned([N], "losses");
  const plan = crossEntropyGradInPlace(
    gpu,
    logitsT,
    V,
    arena.upload(targets, [N], "targets"),
    losses,
    scale,
  );
  assert.equal(plan.length, Math.ceil(N / 65535), `${label}: a dispatch per 65535 rows`);
  gpu.run(plan);
  const [grad, loss] = await gpu.read([logitsT, losses]);
  arena.destroy();
  const want = crossEntropyRef(logits, ld, V, targets, scale);
  assertClose(loss, want.losses, TOL_LOSS, `losses ${label}`);
  const got = new Float32Array(N * V);
  for (let n = 0; n < N; n++) {
    got.set(grad.subarray(n * ld, n * ld + V), n * V);
    assert.ok(
      grad.subarray(n * ld + V, (n + 1) * ld).every(Number.isNaN),
      `${label}: padding written`,
    );
  }
  assertClose(got, want.dlogits, TOL_GRAD * scale, `dlogits ${label}`);
}

Deno.test("softmax: refuses rows longer than an invocation may loop over", () => {
  // Each row loops about 3·ld times: 65,535 loop iterations at most.
  const arena = new Arena(gpu);
  const start = arena.step(0);
  const fits = Math.floor((65535 - 11) / 3); // 21,841
  assert.ok(causalSoftmax(gpu, start, arena.poisoned([1, 1, fits]), true));
  assert.throws(
    () => causalSoftmax(gpu, start, arena.poisoned([1, 1, fits + 1]), true),
    /causalSoftmax: x\[1,1,21842\]: up to 65537 loop iterations in one invocation/,
  );
  arena.destroy();
});

Deno.test("crossEntropyGradInPlace: V = 37 in rows padded to 40, and unpadded", async () => {
  const rng = new TestRng(37);
  await checkCrossEntropy(rng, 5, 37, 40, 3);
  await checkCrossEntropy(rng, 3, 37, 37, 1);
  await checkCrossEntropy(rng, 2, 1, 4, 1); // one class: loss 0, gradient 0
});

Deno.test("crossEntropyGradInPlace: GPT-2's vocabulary (V = 50257) in rows of 50260", async () => {
  await checkCrossEntropy(new TestRng(50257), 3, 50257, 50260, 2);
});

Deno.test("crossEntropyGradInPlace: more rows than one dispatch's grid (65537)", async () => {
  await checkCrossEntropy(new TestRng(65537), 65537, 3, 3, 2);
});

Deno.test("crossEntropyGradInPlace: a target outside the vocabulary gives a NaN loss", async () => {
  const arena = new Arena(gpu);
  const logits = arena.upload(new TestRng(1).normals(2 * 5), [2, 5], "logits");
  const losses = arena.poisoned([2], "losses");
  const targets = arena.upload(new Uint32Array([4, 5]), [2], "targets");
  gpu.run(crossEntropyGradInPlace(gpu, logits, 5, targets, losses, 1));
  const loss = await gpu.read1(losses);
  arena.destroy();
  assert.ok(loss[0] > 0, `valid target: loss ${loss[0]}`);
  assert.ok(Number.isNaN(loss[1]), `target 5 of V = 5: loss ${loss[1]}`);
});

Deno.test("crossEntropyGradInPlace: rejects shapes that do not fit", () => {
  const arena = new Arena(gpu);
  const logits = arena.poisoned([4, 10]);
  const four = arena.poisoned([4]);
  assert.throws(() => crossEntropyGradInPlace(gpu, logits, 11, four, four, 1), /V 11 does not fit/);
  assert.throws(
    () => crossEntropyGradInPlace(gpu, logits, 10, arena.poisoned([3]), four, 1),
    /targets\[3\]/,
  );
  assert.throws(
    () => crossEntropyGradInPlace(gpu, logits, 10, four, arena.poisoned([5]), 1),
    /losses\[5\]/,
  );
  arena.destroy();
});
