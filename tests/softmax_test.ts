/** The causal softmax kernel against a float64 CPU softmax. */
import assert from "node:assert/strict";
import { Gpu } from "../kernels/gpu.ts";
import { causalSoftmax } from "../kernels/softmax.ts";
import { Arena, assertClose, Rng } from "./helpers.ts";

const gpu = await Gpu.open();

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
    const rng = new Rng(H * 1000 + T);
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
