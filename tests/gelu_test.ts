/** gelu (HF gelu_new, in place) against the float64 CPU reference. */
import assert from "node:assert/strict";
import { Gpu } from "../kernels/gpu.ts";
import { gelu } from "../kernels/gelu.ts";
import { geluNewRef } from "./cpu_reference.ts";
import { Arena, assertClose, Rng } from "./helpers.ts";

const gpu = await Gpu.open();

/** diff <= TOL · max(1, |ref|). */
const TOL = 1e-6;

/**
 * n values over [-12, 12] (both tails of tanh and the clamp at |u| = 10) plus exact points.
 * gelu is in place, so its input cannot be poisoned: an element the kernel skipped keeps x,
 * which differs from gelu(x) except where gelu(x) = x in f32 (0 and x above ~5.3).
 */
function inputs(rng: Rng, n: number): Float32Array {
  const x = rng.uniforms(n, -12, 12);
  const special = [0, -0, 1, -1, 0.5, -0.5, 3, -3, 10, -10, 12, -12, 1e-3, -1e-3, 40, -40];
  x.set(special.slice(0, n));
  return x;
}

async function check(x: Float32Array, shape: number[], label: string) {
  const arena = new Arena(gpu);
  const t = arena.upload(x, shape, "x");
  gpu.run([gelu(gpu, t)]);
  const got = await gpu.read1(t);
  arena.destroy();
  assertClose(got, geluNewRef(x), TOL, label);
}

Deno.test("gelu: [T, n_inner] for T = 1, 7, 129 and widths not a multiple of 8", async () => {
  const rng = new Rng(20);
  for (const N of [12, 100, 3072]) {
    for (const T of [1, 7, 129]) await check(inputs(rng, T * N), [T, N], `gelu ${T}x${N}`);
  }
});

Deno.test("gelu: more than 65535 workgroups (the 2-D grid)", async () => {
  // 65535 workgroups of 64 vec4s cover 16,776,960 values; one more row of the grid needed.
  const n = 65535 * 64 * 4 + 4 * 100;
  const rng = new Rng(21);
  await check(inputs(rng, n), [n], `gelu ${n}`);
});

Deno.test("gelu: rejects a size that is not a multiple of 4", () => {
  const arena = new Arena(gpu);
  assert.throws(() => gelu(gpu, arena.poisoned([3, 5])), /not a multiple of 4/);
  arena.destroy();
});
