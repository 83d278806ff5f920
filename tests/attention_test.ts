/**
 * storeKv (this step's K/V into the [nHead, P, headDim] cache) and attend (causal softmax
 * attention over the cache) against the float64 CPU reference.
 */
import assert from "node:assert/strict";
import { attend, storeKv } from "../kernels/attention.ts";
import { Gpu } from "../kernels/gpu.ts";
import { attentionRef, storeKvRef } from "./cpu_reference.ts";
import { Arena, assertClose, Rng, slow } from "./helpers.ts";

const gpu = await Gpu.open();

/**
 * Attention output: diff <= TOL · max(1, |ref|). q, k, v ~ N(0, 1.5²) make f32 scores carry
 * ~2e-6 of rounding, which exp turns into relative errors of the weights (seen: 3.3e-6).
 */
const TOL = 1e-5;
/** Softmax probabilities: diff <= TOL_PROBS · max(1, |ref|) (seen: 6.3e-7). */
const TOL_PROBS = 2e-6;
/** |Σ probs - 1| of one softmax row (seen: 1.6e-7). */
const SUM_TOL = 1e-6;
const P = 256;
const H = 3;

interface Case {
  D: number; // head_dim
  pos0: number; // tokens already cached
  T: number; // tokens of this step
  P?: number; // cache rows per head (default 256)
}

/** Caches [H, P, D] with random rows before pos0 (earlier steps) and NaN from pos0 on. */
function pastCache(rng: Rng, D: number, pos0: number, P: number): Float32Array {
  const a = new Float32Array(H * P * D).fill(NaN);
  for (let h = 0; h < H; h++) a.set(rng.normals(pos0 * D), h * P * D);
  return a;
}

/** Every element equal, NaN matching NaN (bit-exact copies). */
function assertSame(got: Float32Array, want: Float32Array, label: string) {
  assert.equal(got.length, want.length);
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i])) {
      assert.fail(`${label}: element ${i} is ${got[i]}, expected ${want[i]}`);
    }
  }
}

/**
 * Runs storeKv + attend for one step and checks the cache, the output and the probabilities.
 * Cache rows past pos0+T stay NaN, so attending to a key beyond the causal limit shows as NaN.
 */
async function check(rng: Rng, { D, pos0, T, P = 256 }: Case, zeroTail = true) {
  const C = H * D;
  const label = `D=${D} pos0=${pos0} T=${T} P=${P}`;
  const arena = new Arena(gpu);
  const qkv = rng.normals(T * 3 * C, 1.5);
  const k0 = pastCache(rng, D, pos0, P);
  const v0 = pastCache(rng, D, pos0, P);
  const qkvT = arena.upload(qkv, [T, 3 * C], "qkv");
  const kT = arena.upload(k0, [H, P, D], "k");
  const vT = arena.upload(v0, [H, P, D], "v");
  const out = arena.poisoned([T, C], "out");
  const probs = arena.poisoned([H, T, P], "probs");
  const step = arena.step(pos0);
  gpu.run([
    storeKv(gpu, step, qkvT, kT, vT),
    ...attend(gpu, step, qkvT, kT, vT, out, probs, zeroTail),
  ]);
  const [k, v, o, p] = await gpu.read([kT, vT, out, probs]);
  arena.destroy();

  const kWant = k0.slice();
  const vWant = v0.slice();
  storeKvRef(qkv, kWant, vWant, T, H, D, P, pos0);
  assertSame(k, kWant, `storeKv K ${label}`);
  assertSame(v, vWant, `storeKv V ${label}`);

  const ref = attentionRef(qkv, kWant, vWant, T, H, D, P, pos0);
  assertClose(o, ref.out, TOL, `attend out ${label}`);
  if (!zeroTail) {
    // Each row holds its probabilities up to the causal limit; the rest is not touched.
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const at = (h * T + t) * P;
        const keys = pos0 + t + 1;
        assertClose(p.subarray(at, at + keys), ref.probs.subarray(at, at + keys), TOL_PROBS, label);
        assert.ok(p.subarray(at + keys, at + P).every(Number.isNaN), "tail written");
      }
    }
    return;
  }
  assertClose(p, ref.probs, TOL_PROBS, `attend probs ${label}`);
  let worstSum = 0;
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < T; t++) {
      const row = p.subarray((h * T + t) * P, (h * T + t + 1) * P);
      const keys = pos0 + t + 1;
      const sum = row.subarray(0, keys).reduce((a, b) => a + b, 0);
      worstSum = Math.max(worstSum, Math.abs(sum - 1));
      assert.ok(row.subarray(0, keys).every((x) => x > 0), `${label}: a zero prob at h${h} t${t}`);
      assert.ok(
        row.subarray(keys).every((x) => x === 0),
        `${label}: probs past key ${keys - 1} of h${h} t${t} are not 0: ${
          row.subarray(keys, keys + 4)
        }`,
      );
    }
  }
  console.log(`  probs ${label}: max |row sum - 1| ${worstSum.toExponential(2)}`);
  assert.ok(worstSum <= SUM_TOL, `${label}: a softmax row sums to 1 ± ${worstSum}`);
}

for (const D of [16, 48, 64]) {
  Deno.test(
    `attention: head_dim ${D}, prefill T = 1, 7, 129 and decode at pos0 > 0`,
    D === 16 ? {} : slow(),
    async () => {
      const rng = new Rng(50 + D);
      for (const [pos0, T] of [[0, 1], [0, 7], [0, 129], [129, 1], [200, 7], [255, 1]]) {
        await check(rng, { D, pos0, T });
      }
    },
  );
}

Deno.test("attention: a decode over more rows than attend_one keeps (2048) uses 3 kernels", async () => {
  const arena = new Arena(gpu);
  const [k, v] = [arena.poisoned([H, 2052, 16]), arena.poisoned([H, 2052, 16])];
  const qkv = arena.poisoned([1, 3 * H * 16]);
  const out = arena.poisoned([1, H * 16]);
  const plan = attend(gpu, arena.step(0), qkv, k, v, out, arena.poisoned([H, 1, 2052]), true);
  assert.deepEqual(plan.map((d) => d.label.split(" ")[0]), [
    "attend.scores",
    "softmax",
    "attend.values",
  ]);
  arena.destroy();
  await check(new Rng(62), { D: 16, pos0: 2040, T: 1, P: 2052 });
});

Deno.test("attention: without zeroTail only the causal part of each row is written", async () => {
  await check(new Rng(60), { D: 16, pos0: 5, T: 7 }, false);
  await check(new Rng(60), { D: 16, pos0: 5, T: 1 }, false); // decode: attend_one
});

Deno.test("attention: prefill 7 then decode 1 equals one step of 8 (to rounding)", async () => {
  const rng = new Rng(61);
  const D = 48;
  const C = H * D;
  const arena = new Arena(gpu);
  const qkv = rng.normals(8 * 3 * C, 1.5);
  const caches = () => [arena.poisoned([H, P, D], "k"), arena.poisoned([H, P, D], "v")];
  const [k1, v1] = caches();
  const [k2, v2] = caches();
  const whole = arena.upload(qkv, [8, 3 * C], "qkv[0:8]");
  const first = arena.upload(qkv.subarray(0, 7 * 3 * C), [7, 3 * C], "qkv[0:7]");
  const last = arena.upload(qkv.subarray(7 * 3 * C), [1, 3 * C], "qkv[7]");
  const outAll = arena.poisoned([8, C], "out");
  const out7 = arena.poisoned([7, C], "out7");
  const outLast = arena.poisoned([1, C], "outLast");
  const [p8, p7, p1] = [
    arena.poisoned([H, 8, P]),
    arena.poisoned([H, 7, P]),
    arena.poisoned([H, 1, P]),
  ];
  const [s0, s7] = [arena.step(0), arena.step(7)];
  gpu.run([
    storeKv(gpu, s0, whole, k1, v1),
    ...attend(gpu, s0, whole, k1, v1, outAll, p8, false),
    storeKv(gpu, s0, first, k2, v2),
    ...attend(gpu, s0, first, k2, v2, out7, p7, false),
    storeKv(gpu, s7, last, k2, v2),
    ...attend(gpu, s7, last, k2, v2, outLast, p1, false),
  ]);
  const [all, o7, oLast] = await gpu.read([outAll, out7, outLast]);
  arena.destroy();
  // Same operations in the same order: identical bits. Decode runs attend_one, the same
  // arithmetic summed in another order: equal to rounding.
  assertSame(o7, all.subarray(0, 7 * C), "prefill rows");
  assertClose(oLast, all.subarray(7 * C), 1e-6, "decode row");
});

Deno.test("attention: rejects shapes that do not fit", () => {
  const arena = new Arena(gpu);
  const qkv = arena.poisoned([2, 3 * 48]);
  const k = arena.poisoned([3, P, 16]);
  const step = arena.step(0);
  const bad = arena.poisoned([3, P, 12]);
  assert.throws(() => storeKv(gpu, step, qkv, bad, bad), /do not fit/);
  const odd = arena.poisoned([2, 3 * 15]);
  const oddCache = arena.poisoned([3, P, 5]);
  assert.throws(
    () => storeKv(gpu, step, odd, oddCache, oddCache),
    /head_dim 5 is not a multiple of 4/,
  );
  assert.throws(
    () => attend(gpu, step, qkv, k, k, arena.poisoned([3, 48]), k, false),
    /out\[3,48\]/,
  );
  assert.throws(() => attend(gpu, step, qkv, k, k, arena.poisoned([2, 48]), k, true), /probs/);
  arena.destroy();
});
