/**
 * storeKv (this step's K/V into the [nHead, P, headDim] cache), attend (causal softmax
 * attention over the cache), both also over several sequences with a cache slab each, and
 * attendBackward, against the float64 CPU reference (and finite differences).
 */
import assert from "node:assert/strict";
import {
  attend,
  attendBackward,
  type CacheDType,
  type CacheScales,
  cacheWords,
  storeKv,
} from "../kernels/attention.ts";
import type { Tensor } from "../kernels/gpu.ts";
import { attentionBackwardRef, attentionRef, storeKvRef } from "./cpu_reference.ts";
import { Arena, assertClose, slow, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

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
function pastCache(rng: TestRng, D: number, pos0: number, P: number): Float32Array {
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
async function check(rng: TestRng, { D, pos0, T, P = 256 }: Case, zeroTail = true) {
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
      const rng = new TestRng(50 + D);
      for (const [pos0, T] of [[0, 1], [0, 7], [0, 129], [129, 1], [200, 7], [255, 1]]) {
        await check(rng, { D, pos0, T });
      }
    },
  );
}

Deno.test("attention: a decode over any number of cache rows is one attend_one", async () => {
  // attend_one keeps its row of scores in probs, not in workgroup memory: no row limit.
  const arena = new Arena(gpu);
  const [k, v] = [arena.poisoned([H, 2052, 16]), arena.poisoned([H, 2052, 16])];
  const qkv = arena.poisoned([1, 3 * H * 16]);
  const out = arena.poisoned([1, H * 16]);
  const plan = attend(gpu, arena.step(0), qkv, k, v, out, arena.poisoned([H, 1, 2052]), true);
  assert.deepEqual(plan.map((d) => d.label.split(" ")[0]), ["attend.one"]);
  arena.destroy();
  await check(new TestRng(62), { D: 16, pos0: 2040, T: 1, P: 2052 });
});

Deno.test("attention: without zeroTail only the causal part of each row is written", async () => {
  await check(new TestRng(60), { D: 16, pos0: 5, T: 7 }, false);
  await check(new TestRng(60), { D: 16, pos0: 5, T: 1 }, false); // decode: attend_one
});

Deno.test("attention: prefill 7 then decode 1 equals one step of 8 (to rounding)", async () => {
  const rng = new TestRng(61);
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

/** Rows [from, to) of a [rows, width] array. */
function rowsOf<A extends Float32Array | Float64Array>(
  a: A,
  width: number,
  from: number,
  to: number,
): A {
  return a.subarray(from * width, to * width) as A;
}

/** Every value of rows [from, to) of a [rows, width] array is NaN (never written). */
function assertUnwritten(a: Float32Array, width: number, from: number, to: number, label: string) {
  assert.ok(
    rowsOf(a, width, from, to).every(Number.isNaN),
    `${label}: rows ${from}..${to - 1} written`,
  );
}

Deno.test("attention: 3 sequences in one dispatch, each over its own cache slabs", async () => {
  const rng = new TestRng(70);
  const [S, D, row0, extra] = [3, 16, 2, 1]; // qkv rows: row0 unused, 3 sequences, extra unused
  const C = H * D;
  const P = 24;
  for (const [pos0, T] of [[0, 5], [4, 5], [0, 1], [6, 1], [0, 9]]) {
    const label = `seqs=${S} pos0=${pos0} T=${T}`;
    const N = row0 + S * T + extra;
    const arena = new Arena(gpu);
    const qkv = rng.normals(N * 3 * C, 1.5);
    const past = () => {
      const a = new Float32Array(S * H * P * D).fill(NaN);
      for (let z = 0; z < S * H; z++) a.set(rng.normals(pos0 * D), z * P * D);
      return a;
    };
    const [k0, v0] = [past(), past()];
    const qkvT = arena.upload(qkv, [N, 3 * C], "qkv");
    const kT = arena.upload(k0, [S * H, P, D], "k");
    const vT = arena.upload(v0, [S * H, P, D], "v");
    const out = arena.poisoned([N, C], "out");
    const probs = arena.poisoned([S * H, T, P], "probs");
    const step = arena.step(pos0);
    const rows = { row0, T, seqs: S };
    const plan = [
      storeKv(gpu, step, qkvT, kT, vT, undefined, rows),
      ...attend(gpu, step, qkvT, kT, vT, out, probs, true, undefined, rows),
    ];
    assert.equal(plan.length, T === 1 ? 2 : 4, `${label}: dispatches for any number of sequences`);
    gpu.run(plan);
    const [k, v, o, p] = await gpu.read([kT, vT, out, probs]);
    arena.destroy();
    assertUnwritten(o, C, 0, row0, label);
    assertUnwritten(o, C, row0 + S * T, N, label);
    for (let b = 0; b < S; b++) {
      const slab = H * P * D; // one sequence's cache: [H, P, D]
      const seqQkv = rowsOf(qkv, 3 * C, row0 + b * T, row0 + (b + 1) * T);
      const kWant = k0.slice(b * slab, (b + 1) * slab);
      const vWant = v0.slice(b * slab, (b + 1) * slab);
      storeKvRef(seqQkv, kWant, vWant, T, H, D, P, pos0);
      assertSame(k.subarray(b * slab, (b + 1) * slab), kWant, `K ${label} b=${b}`);
      assertSame(v.subarray(b * slab, (b + 1) * slab), vWant, `V ${label} b=${b}`);
      const ref = attentionRef(seqQkv, kWant, vWant, T, H, D, P, pos0);
      const got = rowsOf(o, C, row0 + b * T, row0 + (b + 1) * T);
      assertClose(got, ref.out, TOL, `out ${label} b=${b}`);
      const pb = p.subarray(b * H * T * P, (b + 1) * H * T * P);
      assertClose(pb, ref.probs, TOL_PROBS, `probs ${label} b=${b}`);
    }
  }
});

/** A cache of `dtype` for `slabs` heads: K, V [slabs, P, words] and int8 scales. */
function cacheOf(arena: Arena, dtype: CacheDType, slabs: number, P: number, D: number) {
  const words = cacheWords(dtype, D);
  const k = arena.poisoned([slabs, P, words], "k");
  const v = arena.poisoned([slabs, P, words], "v");
  const scales: CacheScales | undefined = dtype === "int8"
    ? { k: arena.poisoned([slabs, P], "k scales"), v: arena.poisoned([slabs, P], "v scales") }
    : undefined;
  const tensors: Tensor[] = scales ? [k, v, scales.k, scales.v] : [k, v];
  return { k, v, scales, tensors };
}

Deno.test("attention: seqs = 3 equals 3 dispatches of one sequence, bit for bit, f32/f16/int8", async () => {
  const rng = new TestRng(71);
  const [S, D, P] = [3, 16, 20];
  const C = H * D;
  for (const dtype of ["f32", "f16", "int8"] as const) {
    for (const [pos0, T] of [[0, 6], [3, 1]]) {
      const label = `${dtype} pos0=${pos0} T=${T}`;
      const arena = new Arena(gpu);
      const N = S * (pos0 + T); // rows: S prefills of pos0, then S steps of T
      const qkvT = arena.upload(rng.normals(N * 3 * C, 1.5), [N, 3 * C], "qkv");
      const step0 = arena.step(0);
      const step = arena.step(pos0);
      const rows = { row0: S * pos0, T, seqs: S };
      // Fill positions 0..pos0-1 first (as earlier steps), then this step's T.
      const prefill = { row0: 0, T: pos0, seqs: S };
      const all = cacheOf(arena, dtype, S * H, P, D);
      const outAll = arena.poisoned([N, C], "out");
      const probsAll = arena.poisoned([S * H, T, P], "probs");
      const plan = pos0 > 0 ? [storeKv(gpu, step0, qkvT, all.k, all.v, all.scales, prefill)] : [];
      plan.push(
        storeKv(gpu, step, qkvT, all.k, all.v, all.scales, rows),
        ...attend(gpu, step, qkvT, all.k, all.v, outAll, probsAll, true, all.scales, rows),
      );
      const outOne = arena.poisoned([N, C], "out one");
      const singles = [];
      for (let b = 0; b < S; b++) {
        const c = cacheOf(arena, dtype, H, P, D);
        const probs = arena.poisoned([H, T, P], "probs one");
        if (pos0 > 0) {
          plan.push(storeKv(gpu, step0, qkvT, c.k, c.v, c.scales, { row0: b * pos0, T: pos0 }));
        }
        const one = { row0: S * pos0 + b * T, T };
        plan.push(
          storeKv(gpu, step, qkvT, c.k, c.v, c.scales, one),
          ...attend(gpu, step, qkvT, c.k, c.v, outOne, probs, true, c.scales, one),
        );
        singles.push([...c.tensors, probs]);
      }
      gpu.run(plan);
      const [got, ...gotSlabs] = await gpu.read([outAll, ...all.tensors, probsAll]);
      const [want] = await gpu.read([outOne]);
      assert.ok(!rowsOf(got, C, S * pos0, N).some(Number.isNaN), `${label}: out not written`);
      assertSame(got, want, `out ${label}`);
      for (let b = 0; b < S; b++) {
        const wantSlabs = await gpu.read(singles[b]);
        wantSlabs.forEach((w, i) => {
          assertSame(
            gotSlabs[i].subarray(b * w.length, (b + 1) * w.length),
            w,
            `${label} b=${b} #${i}`,
          );
        });
      }
      arena.destroy();
    }
  }
});

Deno.test("attention: rejects a sequence batch that does not fit", () => {
  const arena = new Arena(gpu);
  const qkv = arena.poisoned([10, 3 * 48]);
  const k = arena.poisoned([6, P, 16]);
  const step = arena.step(0);
  assert.throws(
    () => storeKv(gpu, step, qkv, k, k, undefined, { row0: 0, T: 4, seqs: 3 }),
    /rows 0..11/,
  );
  assert.throws(
    () => storeKv(gpu, step, qkv, k, k, undefined, { row0: 0, T: 2, seqs: 4 }),
    /do not fit/,
  );
  assert.throws(
    () => storeKv(gpu, step, qkv, k, k, undefined, { row0: 0, T: 2, seqs: 0 }),
    /seqs 0/,
  );
  const rows = { row0: 0, T: 5, seqs: 2 };
  const out = arena.poisoned([10, 48]);
  assert.throws(
    () => attend(gpu, step, qkv, k, k, out, arena.poisoned([3, 5, P]), true, undefined, rows),
    /probs\[3,5,256\] is not \[6, 5, 256\]/,
  );
  arena.destroy();
});

/** Attention backward tolerance: diff <= TOL_BACK · max(1, |ref|) (seen: 1.1e-6). */
const TOL_BACK = 1e-5;

interface BackwardCase {
  T: number;
  nHead: number;
  D: number;
  seqs: number;
  P: number;
  zeroTail: boolean;
}

/**
 * Forward (storeKv + attend) then attendBackward on the GPU for `seqs` sequences from row 1
 * of qkv (row 0 and the last row belong to none); returns what the test compares.
 */
async function runBackward(rng: TestRng, c: BackwardCase) {
  const C = c.nHead * c.D;
  const N = c.seqs * c.T + 2;
  const qkv = rng.normals(N * 3 * C, 1.5);
  const dout = rng.normals(N * C);
  const arena = new Arena(gpu);
  const qkvT = arena.upload(qkv, [N, 3 * C], "qkv");
  const doutT = arena.upload(dout, [N, C], "dout");
  const slabs = c.seqs * c.nHead;
  const k = arena.poisoned([slabs, c.P, c.D], "k");
  const v = arena.poisoned([slabs, c.P, c.D], "v");
  const probs = arena.poisoned([slabs, c.T, c.P], "probs");
  const dprobs = arena.poisoned([slabs, c.T, c.P], "dprobs");
  const out = arena.poisoned([N, C], "out");
  const dqkv = arena.poisoned([N, 3 * C], "dqkv");
  const step = arena.step(0);
  const rows = { row0: 1, T: c.T, seqs: c.seqs };
  const backward = attendBackward(gpu, qkvT, k, v, probs, doutT, dqkv, dprobs, rows);
  assert.equal(backward.length, 3);
  gpu.run([
    storeKv(gpu, step, qkvT, k, v, undefined, rows),
    ...attend(gpu, step, qkvT, k, v, out, probs, c.zeroTail, undefined, rows),
    ...backward,
  ]);
  const [got] = await gpu.read([dqkv]);
  arena.destroy();
  return { qkv, dout, got, N, C };
}

for (
  const c of [
    { T: 7, nHead: 2, D: 8, seqs: 2, P: 7, zeroTail: true },
    { T: 7, nHead: 2, D: 8, seqs: 2, P: 9, zeroTail: false },
    { T: 20, nHead: 2, D: 16, seqs: 3, P: 20, zeroTail: false },
    { T: 1, nHead: 3, D: 8, seqs: 2, P: 4, zeroTail: true },
  ]
) {
  const label = `T=${c.T} nHead=${c.nHead} D=${c.D} seqs=${c.seqs} P=${c.P}`;
  Deno.test(`attention backward: ${label} vs float64`, async () => {
    const { qkv, dout, got, N, C } = await runBackward(new TestRng(80 + c.T + c.P), c);
    assertUnwritten(got, 3 * C, 0, 1, label);
    assertUnwritten(got, 3 * C, N - 1, N, label);
    for (let b = 0; b < c.seqs; b++) {
      const [from, to] = [1 + b * c.T, 1 + (b + 1) * c.T];
      const want = attentionBackwardRef(
        rowsOf(qkv, 3 * C, from, to),
        rowsOf(dout, C, from, to),
        c.T,
        c.nHead,
        c.D,
      );
      assertClose(rowsOf(got, 3 * C, from, to), want, TOL_BACK, `dqkv ${label} b=${b}`);
    }
  });
}

Deno.test("attention backward: dqkv matches finite differences of the float64 forward", async () => {
  const c = { T: 7, nHead: 2, D: 8, seqs: 2, P: 7, zeroTail: true };
  const rng = new TestRng(90);
  const { qkv, dout, got, C } = await runBackward(rng, c);
  // loss(qkv) = Σ out · dout over sequence b = 1 (rows 8..14), forward in float64.
  const [from, to] = [1 + c.T, 1 + 2 * c.T];
  const seqDout = rowsOf(dout, C, from, to);
  const loss = (x: Float64Array) => {
    const k = new Float64Array(c.nHead * c.P * c.D);
    const v = new Float64Array(c.nHead * c.P * c.D);
    storeKvRef(x, k, v, c.T, c.nHead, c.D, c.P, 0);
    const { out } = attentionRef(x, k, v, c.T, c.nHead, c.D, c.P, 0);
    return out.reduce((s, o, i) => s + o * seqDout[i], 0);
  };
  const x = Float64Array.from(rowsOf(qkv, 3 * C, from, to));
  const h = 1e-4;
  let worst = 0;
  for (let i = 0; i < 24; i++) {
    const at = rng.int(x.length); // any of q, k, v of any row and head
    const saved = x[at];
    x[at] = saved + h;
    const up = loss(x);
    x[at] = saved - h;
    const down = loss(x);
    x[at] = saved;
    const fd = (up - down) / (2 * h);
    const diff = Math.abs(got[from * 3 * C + at] - fd) / Math.max(1, Math.abs(fd));
    worst = Math.max(worst, diff);
    assert.ok(
      diff < 1e-4,
      `element ${at}: dqkv ${got[from * 3 * C + at]}, finite difference ${fd}`,
    );
  }
  console.log(
    `  finite differences: max diff/max(1,|fd|) ${worst.toExponential(2)} over 24 elements`,
  );
});

Deno.test("attention backward: refuses other caches and shapes", () => {
  const arena = new Arena(gpu);
  const qkv = arena.poisoned([14, 3 * 16]);
  const dout = arena.poisoned([14, 16]);
  const rows = { row0: 0, T: 7, seqs: 2 };
  const k = arena.poisoned([4, 7, 8]);
  const probs = arena.poisoned([4, 7, 7]);
  assert.throws(
    () =>
      attendBackward(
        gpu,
        qkv,
        arena.poisoned([4, 7, 4]),
        arena.poisoned([4, 7, 4]),
        probs,
        dout,
        qkv,
        probs,
        rows,
      ),
    /is not f32/,
  );
  const short = arena.poisoned([4, 6, 8]);
  assert.throws(
    () => attendBackward(gpu, qkv, short, short, probs, dout, qkv, probs, rows),
    /cache rows 6 < T 7/,
  );
  assert.throws(
    () => attendBackward(gpu, qkv, k, k, probs, qkv, qkv, probs, rows),
    /dout\[14,48\]/,
  );
  assert.throws(
    () => attendBackward(gpu, qkv, k, k, probs, dout, dout, probs, rows),
    /dqkv\[14,16\]/,
  );
  assert.throws(
    () => attendBackward(gpu, qkv, k, k, probs, dout, qkv, short, rows),
    /dprobs\[4,6,8\]/,
  );
  arena.destroy();
});
