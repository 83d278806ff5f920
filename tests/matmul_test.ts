/**
 * matmul (Conv1D, x @ w + b, with the GELU and residual-add epilogues) and lmHead
 * (lm_head, x @ w^T over row chunks) against the float64 CPU reference, on shapes that are
 * not multiples of any tile, in both kernel designs and both weight formats; then their
 * backward passes (matmulBackwardInput, matmulBackwardWeight, lmHeadBackward) the same way.
 */
import assert from "node:assert/strict";
import type { Gpu } from "../kernels/gpu.ts";
import {
  lmHead,
  lmHeadBackward,
  matmul,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulTiled,
  packHalves,
  type RowChunks,
  transpose,
  uploadRowChunks,
  uploadWeight,
  type Weight,
  type WeightFormat,
} from "../kernels/matmul.ts";
import {
  biasBackwardRef,
  geluNewBackwardRef,
  geluNewRef,
  lmHeadRef,
  matmulBackwardInputRef,
  matmulBackwardWeightRef,
  matmulRef,
  residualRef,
} from "./cpu_reference.ts";
import { Arena, assertClose, slow, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const cpuDesign = await openGpu({ design: "cpu" });
/** The same kernels in the design for real GPUs (workgroup-memory tiles), on this adapter. */
const gpuDesign = await openGpu({ design: "gpu" });
const gpu = cpuDesign;

/** f32 matmul with K <= 1024 against f64: diff <= TOL · max(1, |ref|) (seen: 2.9e-6). */
const TOL = 5e-6;
/** The same for the lm_head with K <= 64 (seen: 6e-7). */
const TOL_LM_HEAD = 2e-6;
/** GPT-2's vocabulary, with a small C to keep the CPU reference fast. */
const V = 50257;
const C = 64;

/** Logits row stride the model uses: V padded to the binding alignment. */
function stride(v: number): number {
  const align = gpu.bindingAlignment / 4;
  return Math.ceil(v / align) * align;
}

/** The values an f16 weight holds: each rounded to the nearest f16. */
function halves(a: Float32Array): Float32Array {
  return new Float32Array(new Float16Array(a));
}

/** [M, ld] -> [M, n] */
function columns(a: Float32Array, M: number, ld: number, n: number): Float32Array {
  const out = new Float32Array(M * n);
  for (let r = 0; r < M; r++) out.set(a.subarray(r * ld, r * ld + n), r * n);
  return out;
}

/** Asserts that the padding columns n .. ld of every row were left alone (still NaN). */
function assertPaddingUntouched(a: Float32Array, M: number, ld: number, n: number, label: string) {
  for (let r = 0; r < M; r++) {
    for (let c = n; c < ld; c++) {
      assert.ok(Number.isNaN(a[r * ld + c]), `${label}: padding [${r}, ${c}] was written`);
    }
  }
}

/** A [rows, cols] matrix split by hand at `bounds` (row0s need not be multiples of 4). */
function chunksAt(
  arena: Arena,
  data: Float32Array,
  cols: number,
  bounds: readonly number[],
): RowChunks {
  const parts = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const [r0, r1] = [bounds[i], bounds[i + 1]];
    const t = arena.upload(data.slice(r0 * cols, r1 * cols), [r1 - r0, cols], `w[${r0}:${r1}]`);
    parts.push({ row0: r0, tensor: t });
  }
  return { rows: bounds[bounds.length - 1], cols, format: "f32", parts };
}

for (
  const [format, gpu] of [["f32", cpuDesign], ["f16", cpuDesign], ["f32", gpuDesign], [
    "f16",
    gpuDesign,
  ]] as const
) {
  const what = `${format} weights, ${gpu.design} design`;
  Deno.test(
    `matmul: x @ w + b, ${what}, M = 1 .. 129, N not a multiple of 4`,
    gpu.design === "gpu" ? slow() : {},
    async () => {
      // With f16 weights the reference multiplies the same f16-rounded weights in f64, so the
      // bound is as tight as for f32: only the products' f32 arithmetic differs.
      const rng = new TestRng(1);
      const arena = new Arena(gpu);
      for (const [K, N] of [[48, 12], [64, 100], [100, 37], [1024, 36], [768, 2308]]) {
        const w = rng.normals(K * N, 1 / Math.sqrt(K));
        const b = rng.uniforms(N, -0.1, 0.1);
        const wT = uploadWeight(gpu, transpose(w, K, N), N, K, "w", format); // stored [out, in]
        arena.add(wT.tensor);
        const stored = format === "f16" ? halves(w) : w;
        const bT = arena.upload(b, [N], "b");
        for (const M of [1, 2, 3, 4, 7, 16, 17, 129]) {
          if (K * N > 100_000 && M !== 7) continue; // the GPT-2-sized shape once is enough
          const x = rng.uniforms(M * K, -2, 2);
          const xT = arena.upload(x, [M, K], "x");
          const yT = arena.poisoned([M, N], "y");
          gpu.run([matmul(gpu, xT, wT, bT, yT)]);
          const got = await gpu.read1(yT);
          const label = `matmul ${format} ${M}x${K}x${N}`;
          assertClose(got, matmulRef(x, stored, b, M, K, N), TOL, label);
        }
      }
      arena.destroy();
    },
  );
}

Deno.test("packHalves: two f16 per word, element 2i in the low half; odd counts refused", () => {
  const words = packHalves(new Float32Array([1, -2, 0.5, 65504]));
  assert.deepEqual([...words], [0xc000_3c00, 0x7bff_3800]);
  assert.throws(() => packHalves(new Float32Array(3)), /even/);
  assert.throws(
    () => uploadWeight(gpu, new Float32Array(12), 2, 6, "h.0.mlp.c_fc.weight", "f16"),
    /h\.0\.mlp\.c_fc\.weight: f16 weights need rows of a multiple of 4 values, not 6/,
  );
});

Deno.test("matmulTiled: every tiling scripts/matmul_ab.ts compares, on odd shapes, both formats", async () => {
  const rng = new TestRng(42);
  const arena = new Arena(gpu);
  const tilings = [
    { entry: "matmul_rows16", wg: 8 },
    { entry: "matmul_rows16", wg: 16 },
    { entry: "matmul_rows16_by_rows", wg: 8 },
  ] as const;
  for (const [M, K, N] of [[4, 12, 5], [17, 100, 37], [40, 64, 70]]) {
    const w = rng.normals(K * N, 1 / Math.sqrt(K));
    const b = rng.uniforms(N, -0.1, 0.1);
    const x = rng.uniforms(M * K, -2, 2);
    const [xT, bT] = [arena.upload(x, [M, K], "x"), arena.upload(b, [N], "b")];
    for (const format of ["f32", "f16"] as const) {
      const wT = uploadWeight(gpu, transpose(w, K, N), N, K, "w", format);
      arena.add(wT.tensor);
      const ref = matmulRef(x, format === "f16" ? halves(w) : w, b, M, K, N);
      for (const t of tilings) {
        const y = arena.poisoned([M, N], "y");
        gpu.run([matmulTiled(gpu, xT, wT, bT, y, t)]);
        assertClose(await gpu.read1(y), ref, TOL, `${t.entry} wg ${t.wg} ${format} ${M}x${K}x${N}`);
      }
    }
  }
  arena.destroy();
});

Deno.test("matmul: rejects shapes that do not fit", () => {
  const arena = new Arena(gpu);
  const x = arena.poisoned([3, 6]);
  const w: Weight = { tensor: arena.poisoned([8, 6]), rows: 8, cols: 6, format: "f32" };
  const b = arena.poisoned([8]);
  const y = arena.poisoned([3, 8]);
  assert.throws(() => matmul(gpu, x, w, b, y), /K=6 must be a multiple of 4/);
  assert.throws(() => matmul(gpu, y, w, b, y), /do not fit/);
  arena.destroy();
});

for (const gpu of [cpuDesign, gpuDesign]) {
  Deno.test(
    `lmHead: lm_head over V = 50257 in one chunk and in many, ${gpu.design} design`,
    gpu.design === "gpu" ? slow() : {},
    async () => {
      const rng = new TestRng(2);
      const arena = new Arena(gpu);
      const wte = rng.normals(V * C, 1 / Math.sqrt(C));
      const ld = stride(V);
      const chunkings: [string, RowChunks][] = [
        ["one chunk", arena.addChunks(uploadRowChunks(gpu, wte, V, C, "wte"))],
        // 512 KiB chunks: 2048 rows each, 25 chunks, the last one 1105 rows.
        ["512 KiB chunks", arena.addChunks(uploadRowChunks(gpu, wte, V, C, "wte", 2 ** 19))],
        // Chunks starting at rows that are not multiples of 4, and a one-row chunk.
        ["odd chunks", chunksAt(arena, wte, C, [0, 4093, 4094, 21111, V])],
        [
          "f16, 256 KiB chunks",
          arena.addChunks(uploadRowChunks(gpu, wte, V, C, "wte", 2 ** 18, "f16")),
        ],
      ];
      assert.equal(chunkings[1][1].parts.length, 25);
      assert.equal(chunkings[3][1].parts.length, 25); // f16 rows take half the bytes
      const wte16 = halves(wte);
      const xs = new Map<number, { x: Float32Array; ref: Record<WeightFormat, Float64Array> }>();
      for (const M of [1, 7, 129]) {
        const x = rng.normals(M * C);
        const f32 = lmHeadRef(x, wte, M, C, V);
        xs.set(M, { x, ref: { f32, f16: M > 7 ? f32 : lmHeadRef(x, wte16, M, C, V) } });
      }
      for (const [name, w] of chunkings) {
        for (const [M, { x, ref: refs }] of xs) {
          if (M > 7 && name !== "odd chunks") continue; // the big M once: the GPU is a CPU here
          const ref = refs[w.format];
          const xT = arena.upload(x, [M, C], "x");
          const logits = arena.poisoned([M, ld], "logits");
          gpu.run(lmHead(gpu, xT, 0, w, logits));
          const got = await gpu.read1(logits);
          assertPaddingUntouched(got, M, ld, V, `lm_head ${name} M=${M}`);
          assertClose(columns(got, M, ld, V), ref, TOL_LM_HEAD, `lm_head ${name} ${M}x${C}x${V}`);
        }
      }
      arena.destroy();
    },
  );
}

Deno.test("lmHead: one row of x (xRow0 > 0), the 'last' logits", async () => {
  const rng = new TestRng(3);
  const arena = new Arena(gpu);
  const wte = rng.normals(V * C, 1 / Math.sqrt(C));
  const w = chunksAt(arena, wte, C, [0, 9, 30001, V]);
  const T = 7;
  const x = rng.normals(T * C);
  const xT = arena.upload(x, [T, C], "x");
  const ld = stride(V);
  const logits = arena.poisoned([1, ld], "logits");
  gpu.run(lmHead(gpu, xT, T - 1, w, logits));
  const got = (await gpu.read1(logits)).subarray(0, V);
  const ref = lmHeadRef(x.subarray((T - 1) * C), wte, 1, C, V);
  assertClose(got, ref, TOL_LM_HEAD, `lm_head row ${T - 1} of ${T}`);
  assert.throws(() => lmHead(gpu, xT, T, w, logits), /do not fit/);
  arena.destroy();
});

for (const gpu of [cpuDesign, gpuDesign]) {
  Deno.test(
    `lmHead: logits larger than one binding go in row blocks, ${gpu.design} design`,
    slow(),
    async () => {
      // 129 rows x 270016 floats = 139 MB of logits: more than a 128 MiB binding on llvmpipe,
      // so the rows are split into blocks (each a dispatch per weight chunk).
      const v = 270_001;
      const k = 4;
      const M = 129;
      const ld = stride(v);
      if (M * ld * 4 <= gpu.maxBinding) {
        console.log(`  skipped: max binding ${gpu.maxBinding} holds all logits in one block`);
        return;
      }
      const rng = new TestRng(4);
      const arena = new Arena(gpu);
      const wte = rng.normals(v * k, 0.5);
      const w = arena.addChunks(uploadRowChunks(gpu, wte, v, k, "wte"));
      const x = rng.normals(M * k);
      const xT = arena.upload(x, [M, k], "x");
      const logits = arena.poisoned([M, ld], "logits");
      const plan = lmHead(gpu, xT, 0, w, logits);
      assert.ok(plan.length >= 2, `${plan.length} dispatches`);
      gpu.run(plan);
      const got = await gpu.read1(logits);
      assertClose(
        columns(got, M, ld, v),
        lmHeadRef(x, wte, M, k, v),
        TOL_LM_HEAD,
        "lm_head blocks",
      );
      arena.destroy();
    },
  );
}

Deno.test(
  "lmHead: gpu design, one row over more than 65535 outputs",
  slow(),
  async () => {
    // matmul_gemv runs a workgroup per output: past 65535 they go on the grid's z axis.
    const gpu = gpuDesign;
    const v = 70_001;
    const k = 8;
    const rng = new TestRng(5);
    const arena = new Arena(gpu);
    const wte = rng.normals(v * k, 0.5);
    const w = arena.addChunks(uploadRowChunks(gpu, wte, v, k, "wte"));
    assert.equal(w.parts.length, 1);
    const x = rng.normals(k);
    const ld = Math.ceil(v / 64) * 64;
    const logits = arena.poisoned([1, ld], "logits");
    gpu.run(lmHead(gpu, arena.upload(x, [1, k], "x"), 0, w, logits));
    const got = (await gpu.read1(logits)).subarray(0, v);
    assertClose(got, lmHeadRef(x, wte, 1, k, v), TOL_LM_HEAD, "gemv 1x8x70001");
    arena.destroy();
  },
);

for (const gpu of [cpuDesign, gpuDesign]) {
  Deno.test(
    `matmul epilogues, ${gpu.design} design: gelu (c_fc) and add (the residual)`,
    gpu.design === "gpu" ? slow() : {},
    async () => {
      const rng = new TestRng(6);
      const arena = new Arena(gpu);
      const [K, N] = [64, 100];
      const w = rng.normals(K * N, 0.5 / Math.sqrt(K));
      // Biases over [-12, 12] put x @ w + b across both tails of tanh and its clamp at 10.
      const b = rng.uniforms(N, -12, 12);
      const wT = uploadWeight(gpu, transpose(w, K, N), N, K, "w");
      arena.add(wT.tensor);
      const bT = arena.upload(b, [N], "b");
      for (const M of [1, 7, 17]) {
        const x = rng.uniforms(M * K, -2, 2);
        const xT = arena.upload(x, [M, K], "x");
        const v = matmulRef(x, w, b, M, K, N);
        const fc = arena.poisoned([M, N], "fc");
        gpu.run([matmul(gpu, xT, wT, bT, fc, "gelu")]);
        assertClose(await gpu.read1(fc), geluNewRef(v), TOL, `gelu(x @ w + b) M=${M}`);
        const residual = rng.uniforms(M * N, -3, 3);
        const y = arena.upload(residual, [M, N], "y");
        gpu.run([matmul(gpu, xT, wT, bT, y, "add")]);
        assertClose(await gpu.read1(y), residualRef(residual, v), TOL, `y + x @ w + b M=${M}`);
      }
      arena.destroy();
    },
  );
}

// ---- Backward ----

/** Backward products with sums of up to ~100 terms of size ~1 against f64 (seen: 2.2e-6). */
const TOL_BACKWARD = 5e-6;

/**
 * A random dy of [M, N] (dense, for the reference) inside rows of `ld` floats from column
 * `col0` (for the kernel), every other column NaN: a kernel that reads them shows it.
 */
function gradientRows(rng: TestRng, M: number, N: number, ld: number, col0 = 0) {
  const dense = rng.uniforms(M * N, -1, 1);
  const strided = new Float32Array(M * ld).fill(NaN);
  for (let m = 0; m < M; m++) strided.set(dense.subarray(m * N, (m + 1) * N), m * ld + col0);
  return { dense, strided };
}

/** The rows of a chunked matrix, read back and put together. */
async function readChunks(gpu: Gpu, c: RowChunks): Promise<Float32Array> {
  const parts = await gpu.read(c.parts.map((p) => p.tensor));
  const out = new Float32Array(c.rows * c.cols);
  c.parts.forEach((p, i) => out.set(parts[i], p.row0 * c.cols));
  return out;
}

/** A [rows, cols] matrix of NaN chunked as `like`. */
function poisonedChunks(arena: Arena, like: RowChunks): RowChunks {
  const parts = like.parts.map((p) => ({ row0: p.row0, tensor: arena.poisoned(p.tensor.shape) }));
  return { ...like, parts };
}

/** `gpu` with a smaller largest binding, to reach the paths for data that does not fit one. */
function withMaxBinding(gpu: Gpu, maxBinding: number): Gpu {
  return new Proxy(gpu, {
    get(target, key) {
      if (key === "maxBinding") return maxBinding;
      const value = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** Fused GELU epilogues against f64: a few f32 roundings and llvmpipe's tanh (seen: 2e-6). */
const TOL_GELU = 5e-6;

/** Values over [-12, 12] (both tails and tanh's clamp at ±10) with a few exact ones. */
function geluInputs(rng: TestRng, n: number): Float32Array {
  const a = rng.uniforms(n, -12, 12);
  a.set([0, 1e-3, -1e-3, 5.6, -5.6, 1, -1].slice(0, n));
  return a;
}

for (const gpu of [cpuDesign, gpuDesign]) {
  Deno.test(`matmul gelu keeping pre: y = gelu(v), pre = v in one pass, ${gpu.design} design`, async () => {
    const rng = new TestRng(40);
    const arena = new Arena(gpu);
    for (const [M, K, N] of [[1, 12, 5], [7, 48, 37], [17, 100, 70]]) {
      // Weights of scale 4 / K: v spreads over about ±12 (both tails of the GELU).
      const w = rng.normals(K * N, 4 / Math.sqrt(K));
      const b = rng.uniforms(N, -0.1, 0.1);
      const wT = uploadWeight(gpu, transpose(w, K, N), N, K, "w");
      arena.add(wT.tensor);
      const x = rng.uniforms(M * K, -2, 2);
      const y = arena.poisoned([M, N], "y");
      const pre = arena.poisoned([M, N], "pre");
      const xT = arena.upload(x, [M, K], "x");
      gpu.run([matmul(gpu, xT, wT, arena.upload(b, [N], "b"), y, "gelu", pre)]);
      const [gotY, gotPre] = await gpu.read([y, pre]);
      const v = matmulRef(x, w, b, M, K, N);
      assertClose(gotPre, v, TOL, `pre ${M}x${K}x${N}`);
      assertClose(gotY, geluNewRef(v), TOL_GELU, `gelu ${M}x${K}x${N}`);
    }
    const x = arena.poisoned([2, 4]);
    const w: Weight = { tensor: arena.poisoned([3, 4]), rows: 3, cols: 4, format: "f32" };
    const y = arena.poisoned([2, 3]);
    assert.throws(() => matmul(gpu, x, w, arena.poisoned([3]), y, "add", y), /gelu epilogue/);
    arena.destroy();
  });

  Deno.test(`matmulBackwardInput gelu: dx = (dy @ w) · gelu'(a) in one pass, ${gpu.design} design`, async () => {
    const rng = new TestRng(41);
    const arena = new Arena(gpu);
    for (
      const [M, K, N, ld] of [[1, 4, 3, 4], [7, 12, 37, 40], [17, 40, 37, 37], [70, 68, 75, 76]]
    ) {
      const w = rng.normals(N * K, 1 / Math.sqrt(N));
      const wT = uploadWeight(gpu, w, N, K, "w");
      arena.add(wT.tensor);
      const dy = gradientRows(rng, M, N, ld);
      const a = geluInputs(rng, M * K);
      const dx = arena.poisoned([M, K], "dx");
      const aT = arena.upload(a, [M, K], "a");
      gpu.run([
        matmulBackwardInput(gpu, arena.upload(dy.strided, [M, ld], "dy"), wT, dx, false, aT),
      ]);
      const ref = geluNewBackwardRef(a, matmulBackwardInputRef(dy.dense, w, M, N, K));
      assertClose(await gpu.read1(dx), ref, TOL_BACKWARD, `gelu dx ${M}x${N}(${ld})x${K}`);
      assert.throws(
        () => matmulBackwardInput(gpu, arena.poisoned([M, ld]), wT, dx, true, aT),
        /no \+=/,
      );
    }
    arena.destroy();
  });
}

for (const gpu of [cpuDesign, gpuDesign]) {
  Deno.test(`matmulBackwardInput: dx = dy @ w and dx += dy @ w, ${gpu.design} design`, async () => {
    const rng = new TestRng(20);
    const arena = new Arena(gpu);
    // [M, K, N, row stride of dy]: one row of one output, padded rows (N = 37 in 40), unaligned
    // ones (37 in 37, read as scalars), and one past the gpu design's 64 x 64 tiles.
    for (
      const [M, K, N, ld] of [[1, 4, 1, 4], [7, 12, 20, 20], [7, 12, 37, 40], [17, 40, 37, 37], [
        70,
        68,
        75,
        76,
      ]]
    ) {
      const w = rng.normals(N * K, 1 / Math.sqrt(N)); // [N, K], stored [out, in]
      const wT = uploadWeight(gpu, w, N, K, "w");
      arena.add(wT.tensor);
      const dy = gradientRows(rng, M, N, ld);
      const dyT = arena.upload(dy.strided, [M, ld], "dy");
      const ref = matmulBackwardInputRef(dy.dense, w, M, N, K);
      const dx = arena.poisoned([M, K], "dx");
      gpu.run([matmulBackwardInput(gpu, dyT, wT, dx)]);
      assertClose(await gpu.read1(dx), ref, TOL_BACKWARD, `dx = dy @ w ${M}x${N}(${ld})x${K}`);
      const dx0 = rng.uniforms(M * K, -3, 3);
      const dxAcc = arena.upload(dx0, [M, K], "dx");
      gpu.run([matmulBackwardInput(gpu, dyT, wT, dxAcc, true)]);
      const refAcc = ref.map((v, i) => v + dx0[i]);
      assertClose(await gpu.read1(dxAcc), refAcc, TOL_BACKWARD, `dx += dy @ w ${M}x${N}x${K}`);
    }
    arena.destroy();
  });

  Deno.test(`matmulBackwardWeight: dw = dy^T @ x, db = Σ dy, from column col0, ${gpu.design} design`, async () => {
    const rng = new TestRng(21);
    const arena = new Arena(gpu);
    // [M, K, N, row stride of dy, col0, with db]: dw's columns of dy at an offset, aligned or
    // not (then read as scalars), and one past the gpu design's tiles.
    const shapes = [
      [7, 12, 20, 20, 0, true],
      [7, 12, 20, 27, 3, true],
      [7, 12, 20, 32, 8, false],
      [70, 68, 75, 80, 4, true],
    ] as const;
    for (const [M, K, N, ld, col0, bias] of shapes) {
      const x = rng.uniforms(M * K, -2, 2);
      const dy = gradientRows(rng, M, N, ld, col0);
      const dw = arena.poisoned([N, K], "dw");
      const db = bias ? arena.poisoned([N], "db") : null;
      const dyT = arena.upload(dy.strided, [M, ld], "dy");
      gpu.run(matmulBackwardWeight(gpu, dyT, arena.upload(x, [M, K], "x"), dw, db, col0));
      const what = `${M}x${N}x${K}, dy[${M}, ${ld}] from column ${col0}`;
      const ref = matmulBackwardWeightRef(dy.dense, x, M, N, K);
      assertClose(await gpu.read1(dw), ref, TOL_BACKWARD, `dw = dy^T @ x ${what}`);
      if (db) {
        assertClose(
          await gpu.read1(db),
          biasBackwardRef(dy.dense, M, N),
          TOL_BACKWARD,
          `db ${what}`,
        );
      }
    }
    arena.destroy();
  });

  Deno.test(`lmHeadBackward: a vocabulary of 37 in one chunk and in several, ${gpu.design} design`, async () => {
    const rng = new TestRng(22);
    const arena = new Arena(gpu);
    const [M, K, v, ld] = [7, 12, 37, 40];
    const wte = rng.normals(v * K, 0.5);
    const chunkings: [string, RowChunks][] = [
      ["one chunk", arena.addChunks(uploadRowChunks(gpu, wte, v, K, "wte"))],
      // 384-byte chunks: 8 rows of 12 floats each, the last one 5 rows.
      ["5 chunks", arena.addChunks(uploadRowChunks(gpu, wte, v, K, "wte", 384))],
      // Chunks starting at rows 9 and 30: their columns of dlogits are read as scalars.
      ["odd chunks", chunksAt(arena, wte, K, [0, 9, 30, v])],
    ];
    assert.equal(chunkings[1][1].parts.length, 5);
    const x = rng.uniforms(M * K, -2, 2);
    const xT = arena.upload(x, [M, K], "x");
    const dlogits = gradientRows(rng, M, v, ld); // padding columns 37 .. 39 NaN
    const dlogitsT = arena.upload(dlogits.strided, [M, ld], "dlogits");
    const dxRef = matmulBackwardInputRef(dlogits.dense, wte, M, v, K);
    const dwRef = matmulBackwardWeightRef(dlogits.dense, x, M, v, K);
    for (const [name, w] of chunkings) {
      const dx = arena.poisoned([M, K], "dx");
      const dw = poisonedChunks(arena, w);
      gpu.run(lmHeadBackward(gpu, dlogitsT, xT, w, dx, dw));
      assertClose(await gpu.read1(dx), dxRef, TOL_BACKWARD, `lm_head dx, ${name}`);
      assertClose(await readChunks(gpu, dw), dwRef, TOL_BACKWARD, `lm_head dw, ${name}`);
    }
    arena.destroy();
  });

  Deno.test(`lmHeadBackward: dlogits larger than one binding go in row blocks, ${gpu.design} design`, async () => {
    // A largest binding of 512 bytes holds 2 rows of 64 logits: 4 blocks of 7 rows, each
    // adding its rows' share of dw to the blocks before.
    const rng = new TestRng(23);
    const arena = new Arena(gpu);
    const [M, K, v, ld] = [7, 64, 37, 64];
    const small = withMaxBinding(gpu, 512);
    const wte = rng.normals(v * K, 0.5);
    const w = arena.addChunks(uploadRowChunks(gpu, wte, v, K, "wte", 16 * K * 4));
    const x = rng.uniforms(M * K, -2, 2);
    const dlogits = gradientRows(rng, M, v, ld);
    const dx = arena.poisoned([M, K], "dx");
    const dw = poisonedChunks(arena, w);
    const dlogitsT = arena.upload(dlogits.strided, [M, ld], "dlogits");
    const plan = lmHeadBackward(small, dlogitsT, arena.upload(x, [M, K], "x"), w, dx, dw);
    assert.equal(plan.length, 4 * 3 * 2); // blocks x chunks x (dx, dw)
    gpu.run(plan);
    const dxRef = matmulBackwardInputRef(dlogits.dense, wte, M, v, K);
    const dwRef = matmulBackwardWeightRef(dlogits.dense, x, M, v, K);
    assertClose(await gpu.read1(dx), dxRef, TOL_BACKWARD, "lm_head dx, row blocks");
    assertClose(await readChunks(gpu, dw), dwRef, TOL_BACKWARD, "lm_head dw, row blocks");
    arena.destroy();
  });
}

Deno.test("lmHeadBackward: GPT-2's vocabulary of 50257 in 512 KiB chunks, cpu design", async () => {
  // dx sums 50257 products per element, in f32: its error is the one to watch.
  const gpu = cpuDesign;
  const rng = new TestRng(24);
  const arena = new Arena(gpu);
  const M = 4;
  const ld = stride(V);
  const wte = rng.normals(V * C, 1 / Math.sqrt(C));
  const w = arena.addChunks(uploadRowChunks(gpu, wte, V, C, "wte", 2 ** 19));
  const x = rng.normals(M * C);
  // Softmax minus one-hot, over M rows: the size of a real lm_head gradient.
  const dlogits = gradientRows(rng, M, V, ld);
  dlogits.dense.forEach((_, i) => (dlogits.dense[i] = rng.next() / V));
  for (let m = 0; m < M; m++) {
    dlogits.dense[m * V + rng.int(V)] -= 1;
    dlogits.strided.set(dlogits.dense.subarray(m * V, (m + 1) * V), m * ld);
  }
  const dx = arena.poisoned([M, C], "dx");
  const dw = poisonedChunks(arena, w);
  const dlogitsT = arena.upload(dlogits.strided, [M, ld], "dlogits");
  gpu.run(lmHeadBackward(gpu, dlogitsT, arena.upload(x, [M, C], "x"), w, dx, dw));
  const dxRef = matmulBackwardInputRef(dlogits.dense, wte, M, V, C);
  const dwRef = matmulBackwardWeightRef(dlogits.dense, x, M, V, C);
  assertClose(await gpu.read1(dx), dxRef, TOL_BACKWARD, `lm_head dx ${M}x${V}x${C}`);
  assertClose(await readChunks(gpu, dw), dwRef, TOL_BACKWARD, `lm_head dw ${M}x${V}x${C}`);
  arena.destroy();
});

for (const gpu of [cpuDesign, gpuDesign]) {
  Deno.test(`matmul backward: refuses sums that would loop past llvmpipe's bound, ${gpu.design} design`, () => {
    // An invocation loops over the rows of dy (weight gradient) or the weight rows (input
    // gradient), 1 (cpu) or 16 (gpu) at a time for dw, 4 or 16 for dx: 65,535 loops at most.
    const arena = new Arena(gpu);
    const [dwStep, dxStep] = gpu.design === "cpu" ? [1, 4] : [16, 16];
    const fits = 65534 * dwStep;
    const dw = arena.poisoned([4, 4]);
    const rows = (M: number) => [arena.poisoned([M, 4]), arena.poisoned([M, 4])];
    const [dy, x] = rows(fits);
    assert.equal(matmulBackwardWeight(gpu, dy, x, dw, null).length, 1);
    const [dyOver, xOver] = rows(fits + 1);
    assert.throws(
      () => matmulBackwardWeight(gpu, dyOver, xOver, dw, arena.poisoned([4])),
      new RegExp(`dy\\[${fits + 1},4\\]: up to 65536 loop iterations in one invocation`),
    );
    const N = 65535 * dxStep;
    const w: Weight = { tensor: arena.poisoned([N, 4]), rows: N, cols: 4, format: "f32" };
    assert.throws(
      () => matmulBackwardInput(gpu, arena.poisoned([1, N]), w, arena.poisoned([1, 4])),
      new RegExp(`w\\[${N},4\\]: up to 65536 loop iterations`),
    );
    arena.destroy();
  });
}

Deno.test("matmul backward: refuses f16 weights and shapes that do not fit", () => {
  const arena = new Arena(gpu);
  const w16 = uploadWeight(gpu, new Float32Array(8 * 4), 8, 4, "h.0.attn.c_attn.weight", "f16");
  arena.add(w16.tensor);
  const dy = arena.poisoned([3, 8]);
  const dx = arena.poisoned([3, 4]);
  assert.throws(
    () => matmulBackwardInput(gpu, dy, w16, dx),
    /w is stored f16; the backward pass needs f32/,
  );
  const w: Weight = { ...w16, tensor: arena.poisoned([8, 4]), format: "f32" };
  assert.throws(() => matmulBackwardInput(gpu, arena.poisoned([3, 7]), w, dx), /do not fit/);
  assert.throws(() => matmulBackwardInput(gpu, dy, w, arena.poisoned([2, 4])), /do not fit/);
  const dw = arena.poisoned([8, 4]);
  assert.throws(() => matmulBackwardWeight(gpu, dy, dx, dw, null, 1), /col0 1 .* do not fit/);
  assert.throws(() => matmulBackwardWeight(gpu, dy, dx, dw, arena.poisoned([7])), /do not fit/);
  const chunks: RowChunks = { rows: 8, cols: 4, format: "f32", parts: [{ row0: 0, tensor: dw }] };
  const halves: RowChunks = { ...chunks, format: "f16" };
  assert.throws(() => lmHeadBackward(gpu, dy, dx, halves, dx, chunks), /w is stored f16/);
  const split = { ...chunks, parts: [{ row0: 0, tensor: dw }, { row0: 4, tensor: dw }] };
  assert.throws(() => lmHeadBackward(gpu, dy, dx, chunks, dx, split), /chunked as w is/);
  arena.destroy();
});
