/**
 * layerNorm and layerNormBackward against the float64 CPU reference (torch semantics: biased
 * variance, eps), and the backward against finite differences of the forward kernel.
 */
import assert from "node:assert/strict";

import { layerNorm, layerNormBackward } from "../kernels/layernorm.ts";
import { layerNormBackwardRef, layerNormRef } from "./cpu_reference.ts";
import { Arena, assertClose, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

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
  rng: TestRng,
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
  rng: TestRng,
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
  const rng = new TestRng(10);
  for (const C of [4, 48, 100, 768]) {
    for (const T of [1, 7, 129]) await check(rng, T, C, 1e-5, 1, [0.3, 3], TOL);
  }
});

Deno.test("layerNorm: ill-conditioned rows (|mean| / std up to 50)", async () => {
  const rng = new TestRng(12);
  for (const C of [48, 768]) await check(rng, 129, C, 1e-5, 5, [0.1, 0.5], TOL_ILL);
});

Deno.test("layerNorm: eps inside the square root, when it dominates the variance", async () => {
  // Row std 0.01 (variance 1e-4) against eps 1e-2: (x - mean) / sqrt(var + eps) is ~0.1, far
  // from the ~1 that ignoring eps, or adding it outside the root, would give.
  const rng = new TestRng(11);
  await check(rng, 7, 48, 1e-2, 0.05, [0.01, 0.01], TOL);
});

Deno.test("layerNorm: rejects rows that are not a multiple of 4", () => {
  const arena = new Arena(gpu);
  const x = arena.poisoned([2, 6]);
  const w = arena.poisoned([6]);
  assert.throws(() => layerNorm(gpu, x, w, w, x, 1e-5), /do not fit/);
  arena.destroy();
});

// ---- Backward ----

/** Backward against f64, diff <= TOL_BACKWARD · max(1, |ref|), rows as in TOL (seen: 7.6e-7). */
const TOL_BACKWARD = 5e-6;

for (const design of ["cpu", "gpu"] as const) {
  Deno.test(`layerNormBackward: [5, 12], [33, 100] and [5, 768], ${design} design`, async () => {
    const gpu = await openGpu({ design });
    const rng = new TestRng(13);
    const arena = new Arena(gpu);
    for (const [T, C] of [[5, 12], [33, 100], [5, 768]]) {
      const x = rows(rng, T, C, 1, [0.3, 3]);
      const weight = rng.uniforms(C, 0.5, 1.5);
      const dy = rng.uniforms(T * C, -1, 1);
      const dx0 = rng.uniforms(T * C, -1, 1); // dx accumulates onto what is there
      const dx = arena.upload(dx0, [T, C], "dx");
      const dweight = arena.poisoned([C], "dweight");
      const dbias = arena.poisoned([C], "dbias");
      const eps = 1e-5;
      const [xT, weightT] = [arena.upload(x, [T, C], "x"), arena.upload(weight, [C], "weight")];
      // The forward keeps each row's mean and rstd; the backward reads them.
      const stats = arena.poisoned([T, 2], "stats");
      const y = arena.poisoned([T, C], "y");
      gpu.run([
        layerNorm(gpu, xT, weightT, arena.upload(new Float32Array(C), [C]), y, eps, stats),
        ...layerNormBackward(
          gpu,
          xT,
          weightT,
          arena.upload(dy, [T, C], "dy"),
          dx,
          dweight,
          dbias,
          eps,
          stats,
        ),
      ]);
      const [gotDx, gotDweight, gotDbias] = await gpu.read([dx, dweight, dbias]);
      const ref = layerNormBackwardRef(x, weight, dy, T, C, eps);
      const what = `layernorm backward ${T}x${C}`;
      assertClose(gotDx, ref.dx.map((v, i) => v + dx0[i]), TOL_BACKWARD, `${what} dx += `);
      assertClose(gotDweight, ref.dweight, TOL_BACKWARD, `${what} dweight`);
      assertClose(gotDbias, ref.dbias, TOL_BACKWARD, `${what} dbias`);
    }
    arena.destroy();
  });
}

Deno.test("layerNormBackward: dx matches finite differences of the layerNorm kernel", async () => {
  // L = Σ dy·y. Moving x[t, c] by ±h changes only row t of y, so every perturbed row is a row
  // of one batch: row 2·(t·C + c) holds x[t] with x[t, c] + h, the row after it x[t, c] - h.
  const rng = new TestRng(14);
  const arena = new Arena(gpu);
  const [T, C, eps, h] = [3, 8, 1e-5, 1e-2];
  const x = rows(rng, T, C, 1, [0.5, 2]);
  const weight = rng.uniforms(C, 0.5, 1.5);
  const bias = rng.uniforms(C, -0.5, 0.5);
  const dy = rng.uniforms(T * C, -1, 1);
  const n = 2 * T * C;
  const shifted = new Float32Array(n * C);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) {
      for (const [k, sign] of [[0, 1], [1, -1]]) {
        const row = 2 * (t * C + c) + k;
        shifted.set(x.subarray(t * C, (t + 1) * C), row * C);
        shifted[row * C + c] += sign * h;
      }
    }
  }
  const y = arena.poisoned([n, C], "y");
  const weightT = arena.upload(weight, [C], "weight");
  const dx = arena.upload(new Float32Array(T * C), [T, C], "dx");
  const xT = arena.upload(x, [T, C], "x");
  const stats = arena.poisoned([T, 2], "stats");
  gpu.run([
    layerNorm(gpu, xT, weightT, arena.upload(bias, [C]), arena.poisoned([T, C]), eps, stats),
    layerNorm(
      gpu,
      arena.upload(shifted, [n, C], "x ± h"),
      weightT,
      arena.upload(bias, [C]),
      y,
      eps,
    ),
    ...layerNormBackward(
      gpu,
      xT,
      weightT,
      arena.upload(dy, [T, C], "dy"),
      dx,
      arena.poisoned([C], "dweight"),
      arena.poisoned([C], "dbias"),
      eps,
      stats,
    ),
  ]);
  const [ys, got] = await gpu.read([y, dx]);
  const numeric = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) {
      const plus = 2 * (t * C + c) * C;
      let dL = 0;
      for (let j = 0; j < C; j++) dL += dy[t * C + j] * (ys[plus + j] - ys[plus + C + j]);
      numeric[t * C + c] = dL / (2 * h);
    }
  }
  // f32 outputs over 2h = 0.02 give ~1e-5 of rounding, plus the O(h²) truncation (seen:
  // 1.3e-5 in all): a wrong term of the backward would be off by ~0.1.
  assertClose(got, numeric, 1e-4, `layernorm backward ${T}x${C} dx vs (L(x+h) - L(x-h)) / 2h`);
  arena.destroy();
});

Deno.test("layerNormBackward: refuses more rows than a column's sum may loop over", () => {
  // An invocation sums a column over all T rows: 65,535 loop iterations at most.
  const arena = new Arena(gpu);
  const c = arena.poisoned([4]);
  const backward = (T: number) => {
    const x = arena.poisoned([T, 4]);
    return layerNormBackward(
      gpu,
      x,
      c,
      x,
      arena.poisoned([T, 4]),
      c,
      arena.poisoned([4]),
      1e-5,
      arena.poisoned([T, 2]),
    );
  };
  assert.equal(backward(65534).length, 2);
  assert.throws(
    () => backward(65535),
    /layerNormBackward: x\[65535,4\]: up to 65536 loop iterations in one invocation/,
  );
  arena.destroy();
});

Deno.test("layerNormBackward: rejects tensors that do not fit", () => {
  const arena = new Arena(gpu);
  const x = arena.poisoned([2, 8]);
  const c = arena.poisoned([8]);
  assert.throws(
    () =>
      layerNormBackward(gpu, x, c, x, arena.poisoned([2, 4]), c, c, 1e-5, arena.poisoned([2, 2])),
    /do not fit/,
  );
  assert.throws(
    () => layerNormBackward(gpu, x, c, x, x, arena.poisoned([4]), c, 1e-5, arena.poisoned([2, 2])),
    /do not fit/,
  );
  arena.destroy();
});
