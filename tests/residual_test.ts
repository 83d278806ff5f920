/** residual (x += y in place) against the float64 CPU reference. */
import assert from "node:assert/strict";
import { Gpu } from "../kernels/gpu.ts";
import { residual } from "../kernels/residual.ts";
import { residualRef } from "./cpu_reference.ts";
import { Arena, assertClose, Rng } from "./helpers.ts";

const gpu = await Gpu.open();

/** One f32 rounding of an exact f64 sum: diff <= 2^-24 · |ref|. */
const TOL = 2 ** -24;

/**
 * x is in place, so it cannot be poisoned; instead every y is at least 0.5 in magnitude, so
 * an element the kernel skipped (still x) is off by at least 0.5.
 */
async function check(rng: Rng, shape: number[]) {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = rng.uniforms(n, -4, 4);
  const y = rng.uniforms(n, 0.5, 2).map((v, i) => (i % 3 ? v : -v));
  const arena = new Arena(gpu);
  const xT = arena.upload(x, shape, "x");
  gpu.run([residual(gpu, xT, arena.upload(y, shape, "y"))]);
  const got = await gpu.read1(xT);
  arena.destroy();
  assertClose(got, residualRef(x, y), TOL, `residual [${shape}]`);
}

Deno.test("residual: [T, C] for T = 1, 7, 129 and C = 12, 100, 768", async () => {
  const rng = new Rng(30);
  for (const C of [12, 100, 768]) {
    for (const T of [1, 7, 129]) await check(rng, [T, C]);
  }
});

Deno.test("residual: more than 65535 workgroups (the 2-D grid)", async () => {
  await check(new Rng(31), [65535 * 64 * 4 + 4 * 100]);
});

Deno.test("residual: rejects tensors of different sizes", () => {
  const arena = new Arena(gpu);
  assert.throws(
    () => residual(gpu, arena.poisoned([2, 8]), arena.poisoned([2, 4])),
    /do not fit/,
  );
  arena.destroy();
});
