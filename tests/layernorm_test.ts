/** layerNorm against the float64 CPU reference (torch semantics: biased variance, eps). */
import assert from "node:assert/strict";
import { Gpu } from "../kernels/gpu.ts";
import { layerNorm } from "../kernels/layernorm.ts";
import { layerNormRef } from "./cpu_reference.ts";
import { Arena, assertClose, Rng } from "./helpers.ts";

const gpu = await Gpu.open();

/** diff <= TOL · max(1, |ref|) for rows whose |mean| / std is at most ~3. */
const TOL = 2e-6; // seen: 7e-7
/**
 * The same for rows with |mean| up to 5 and std down to 0.1 (|mean| / std up to 50): the
 * rounding of the f32 running sum puts an error of order ulp(|mean|)·√C into the mean, and
 * dividing by the std amplifies it; a one-pass f32 mean cannot do better (seen: 1.5e-5).
 */
const TOL_ILL = 3e-5;

/** [T, C] rows with a per-row offset and spread, so mean and variance both matter. */
function rows(
  rng: Rng,
  T: number,
  C: number,
  offset: number,
  spread: readonly [number, number],
): Float32Array {
  const x = new Float32Array(T * C);
  for (let t = 0; t < T; t++) {
    const mean = rng.uniform(-offset, offset);
    const std = rng.uniform(...spread);
    for (let c = 0; c < C; c++) x[t * C + c] = mean + std * rng.normal();
  }
  return x;
}

/** One layerNorm of random [T, C] rows with means in ±offset and stds in spread. */
async function check(
  rng: Rng,
  T: number,
  C: number,
  eps: number,
  offset: number,
  spread: readonly [number, number],
  tol: number,
) {
  const arena = new Arena(gpu);
  const x = rows(rng, T, C, offset, spread);
  const weight = rng.uniforms(C, 0.5, 1.5);
  const bias = rng.uniforms(C, -0.5, 0.5);
  const y = arena.poisoned([T, C], "y");
  gpu.run([
    layerNorm(
      gpu,
      arena.upload(x, [T, C], "x"),
      arena.upload(weight, [C], "weight"),
      arena.upload(bias, [C], "bias"),
      y,
      eps,
    ),
  ]);
  const got = await gpu.read1(y);
  arena.destroy();
  return assertClose(
    got,
    layerNormRef(x, weight, bias, T, C, eps),
    tol,
    `layernorm ${T}x${C} eps ${eps} |mean| <= ${offset}`,
  );
}

Deno.test("layerNorm: T = 1, 7, 129 rows of C = 4, 48, 100, 768", async () => {
  const rng = new Rng(10);
  for (const C of [4, 48, 100, 768]) {
    for (const T of [1, 7, 129]) await check(rng, T, C, 1e-5, 1, [0.3, 3], TOL);
  }
});

Deno.test("layerNorm: ill-conditioned rows (|mean| / std up to 50)", async () => {
  const rng = new Rng(12);
  for (const C of [48, 768]) await check(rng, 129, C, 1e-5, 5, [0.1, 0.5], TOL_ILL);
});

Deno.test("layerNorm: eps inside the square root, when it dominates the variance", async () => {
  // Row std 0.01 (variance 1e-4) against eps 1e-2: (x - mean) / sqrt(var + eps) is ~0.1, far
  // from the ~1 that ignoring eps, or adding it outside the root, would give.
  const rng = new Rng(11);
  await check(rng, 7, 48, 1e-2, 0.05, [0.01, 0.01], TOL);
});

Deno.test("layerNorm: rejects rows that are not a multiple of 4", () => {
  const arena = new Arena(gpu);
  const x = arena.poisoned([2, 6]);
  const w = arena.poisoned([6]);
  assert.throws(() => layerNorm(gpu, x, w, w, x, 1e-5), /do not fit/);
  arena.destroy();
});
