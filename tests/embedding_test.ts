/**
 * embedding (wte[ids] + wpe[pos0 + t]) over a chunked wte and its backward (the scatter into
 * dwte, the sums into dwpe), against the CPU reference.
 */
import assert from "node:assert/strict";
import { embedding, embeddingBackward } from "../kernels/embedding.ts";

import { type RowChunks, uploadRowChunks } from "../kernels/matmul.ts";
import { embeddingBackwardRef, embeddingRef } from "./cpu_reference.ts";
import { Arena, assertClose, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

/** One f32 rounding of an exact sum: diff <= 2^-24 · max(1, |ref|). */
const TOL = 2 ** -24;
const V = 50257;
const C = 64;
const P = 256;

/** Token ids at or next to every chunk boundary used below, and the two ends. */
const EDGES = [0, 1, 2047, 2048, 2049, 4092, 4093, 4094, 4095, 21110, 21111, 49151, 49152, V - 1];

function ids(rng: TestRng, T: number): Uint32Array {
  const out = new Uint32Array(T);
  for (let t = 0; t < T; t++) {
    out[t] = t < EDGES.length ? EDGES[(t * 5) % EDGES.length] : rng.int(V);
  }
  if (T === 1) out[0] = V - 1;
  return out;
}

/** Hand-made chunks starting at rows 0, 4093, 4094 and 21111 (not multiples of 4). */
function oddChunks(arena: Arena, wte: Float32Array): RowChunks {
  const bounds = [0, 4093, 4094, 21111, V];
  const parts = bounds.slice(0, -1).map((r0, i) => ({
    row0: r0,
    tensor: arena.upload(wte.slice(r0 * C, bounds[i + 1] * C), [bounds[i + 1] - r0, C], "wte"),
  }));
  return { rows: V, cols: C, format: "f32", parts };
}

Deno.test("embedding: V = 50257 in one chunk and in many, T = 1, 7, 129, pos0 >= 0", async () => {
  const rng = new TestRng(40);
  const arena = new Arena(gpu);
  const wte = rng.normals(V * C, 0.125);
  const wpe = rng.normals(P * C, 0.2);
  const wpeT = arena.upload(wpe, [P, C], "wpe");
  const chunkings: [string, RowChunks][] = [
    ["one chunk", arena.addChunks(uploadRowChunks(gpu, wte, V, C, "wte"))],
    ["512 KiB chunks", arena.addChunks(uploadRowChunks(gpu, wte, V, C, "wte", 2 ** 19))],
    ["odd chunks", oddChunks(arena, wte)],
    [
      "f16, 256 KiB chunks",
      arena.addChunks(uploadRowChunks(gpu, wte, V, C, "wte", 2 ** 18, "f16")),
    ],
  ];
  const wte16 = new Float32Array(new Float16Array(wte)); // the values f16 storage holds
  assert.equal(chunkings[0][1].parts.length, 1);
  assert.equal(chunkings[1][1].parts.length, 25);
  for (const [name, wteT] of chunkings) {
    for (const [T, pos0] of [[1, 0], [7, 0], [129, 0], [1, 255], [7, 100], [129, 127]]) {
      const tokens = ids(rng, T);
      const x = arena.poisoned([T, C], "x");
      gpu.run(embedding(gpu, arena.upload(tokens, [T], "ids"), arena.step(pos0), wteT, wpeT, x));
      const got = await gpu.read1(x);
      const ref = embeddingRef(tokens, wteT.format === "f16" ? wte16 : wte, wpe, C, pos0);
      assertClose(got, ref, TOL, `embedding ${name} T=${T} pos0=${pos0}`);
    }
  }
  arena.destroy();
});

Deno.test("embedding: reads only the first T ids of a longer ids buffer", async () => {
  // The model keeps one [n_positions] ids buffer and embeds its first T entries.
  const rng = new TestRng(41);
  const arena = new Arena(gpu);
  const wte = rng.normals(V * C, 0.125);
  const wpe = rng.normals(P * C, 0.2);
  const tokens = ids(rng, 7);
  const all = new Uint32Array(P).fill(V - 1); // stale ids past T must not be embedded
  all.set(tokens);
  const x = arena.poisoned([7, C], "x");
  const w = arena.addChunks(uploadRowChunks(gpu, wte, V, C, "wte", 2 ** 19));
  gpu.run(
    embedding(gpu, arena.upload(all, [P], "ids"), arena.step(3), w, arena.upload(wpe, [P, C]), x),
  );
  assertClose(await gpu.read1(x), embeddingRef(tokens, wte, wpe, C, 3), TOL, "embedding ids[:7]");
  arena.destroy();
});

Deno.test("embedding: rejects shapes that do not fit", () => {
  const arena = new Arena(gpu);
  const w: RowChunks = {
    rows: 10,
    cols: 8,
    format: "f32",
    parts: [{ row0: 0, tensor: arena.poisoned([10, 8]) }],
  };
  const ids = arena.upload(new Uint32Array(2), [2]);
  const step = arena.step(0);
  assert.throws(
    () => embedding(gpu, ids, step, w, arena.poisoned([4, 8]), arena.poisoned([3, 8])),
    /do not fit/,
  );
  assert.throws(
    () => embedding(gpu, ids, step, w, arena.poisoned([4, 12]), arena.poisoned([2, 8])),
    /do not fit/,
  );
  arena.destroy();
});

// ---- Backward ----

/** Sums of a few f32 values of size ~1 against f64 (seen: 1.2e-7). */
const TOL_BACKWARD = 1e-6;

for (const design of ["cpu", "gpu"] as const) {
  Deno.test(`embeddingBackward: B = 3 sequences of T = 5, a vocabulary of 37 in chunks, ${design} design`, async () => {
    const gpu = await openGpu({ design });
    const rng = new TestRng(42);
    const arena = new Arena(gpu);
    const [B, T, v, c, p] = [3, 5, 37, 12, 8];
    const N = B * T;
    // Repeated tokens (7 three times, 36 twice in one sequence) so the scatter must add up
    // rows, ids at every chunk edge (0, 7, 8, 15, 16, 31, 32, 36), the rest random.
    const tokens = Uint32Array.from([
      7,
      0,
      7,
      8,
      36,
      15,
      16,
      36,
      31,
      32,
      7,
      rng.int(v),
      rng.int(v),
      3,
      3,
    ]);
    const dx = rng.uniforms(N * c, -1, 1);
    // dwte holds the lm_head's gradient already: the scatter adds onto it.
    const dwte0 = rng.uniforms(v * c, -1, 1);
    const chunkings: [string, RowChunks][] = [
      ["one chunk", arena.addChunks(uploadRowChunks(gpu, dwte0, v, c, "dwte"))],
      // 384-byte chunks: 8 rows of 12 floats each, the last one 5 rows.
      ["5 chunks", arena.addChunks(uploadRowChunks(gpu, dwte0, v, c, "dwte", 384))],
    ];
    assert.equal(chunkings[1][1].parts.length, 5);
    const ref = embeddingBackwardRef(tokens, dx, T, dwte0, p, c);
    const idsT = arena.upload(tokens, [N], "ids");
    const dxT = arena.upload(dx, [N, c], "dx");
    for (const [name, dwte] of chunkings) {
      const dwpe = arena.poisoned([p, c], "dwpe"); // rows T .. P must be written too, with 0
      gpu.run(embeddingBackward(gpu, idsT, dxT, T, dwte, dwpe, arena.poisoned([N], "links")));
      const parts = await gpu.read(dwte.parts.map((part) => part.tensor));
      const got = new Float32Array(v * c);
      dwte.parts.forEach((part, i) => got.set(parts[i], part.row0 * c));
      assertClose(got, ref.dwte, TOL_BACKWARD, `embedding backward dwte += , ${name}`);
      assertClose(
        await gpu.read1(dwpe),
        ref.dwpe,
        TOL_BACKWARD,
        `embedding backward dwpe, ${name}`,
      );
    }
    arena.destroy();
  });
}

/** n multiples of 1/8 in [-1, 1]: their f32 sums below 2^21 are exact, so they match f64. */
function eighths(rng: TestRng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.int(17) - 8) / 8);
}

for (const design of ["cpu", "gpu"] as const) {
  Deno.test(`embeddingBackward: one token in 2000 of 2400 rows, C = 256, ${design} design`, async () => {
    // 2000 rows x 64 vec4s of one token is 128,000 loop iterations if one invocation sums
    // them all: past the 65,535 at which llvmpipe and lavapipe end every loop silently.
    const gpu = await openGpu({ design });
    const rng = new TestRng(43);
    const arena = new Arena(gpu);
    const [B, T, v, c] = [8, 300, 37, 256];
    const N = B * T;
    // Token 5 in every row but each sixth (the last row too), other tokens between.
    const tokens = Uint32Array.from({ length: N }, (_, n) => n % 6 ? 5 : 6 + rng.int(v - 6));
    const repeats = tokens.filter((t) => t === 5).length;
    assert.equal(repeats, 2000);
    const dx = eighths(rng, N * c);
    const dwte0 = eighths(rng, v * c);
    const ref = embeddingBackwardRef(tokens, dx, T, dwte0, T, c);
    const dwte = arena.addChunks(uploadRowChunks(gpu, dwte0, v, c, "dwte"));
    const dwpe = arena.poisoned([T, c], "dwpe");
    const idsT = arena.upload(tokens, [N], "ids");
    const links = arena.poisoned([N], "links");
    gpu.run(embeddingBackward(gpu, idsT, arena.upload(dx, [N, c], "dx"), T, dwte, dwpe, links));
    const [gotWte, gotWpe] = await gpu.read([dwte.parts[0].tensor, dwpe]);
    assertClose(gotWte, ref.dwte, 0, `dwte, token 5 in ${repeats} rows`);
    assertClose(gotWpe, ref.dwpe, 0, "dwpe");
    arena.destroy();
  });
}

Deno.test("embeddingBackward: refuses f16, shapes that do not fit, and too many rows", () => {
  const arena = new Arena(gpu);
  const ids = arena.upload(new Uint32Array(6), [6]);
  const dx = arena.poisoned([6, 8]);
  const part = { row0: 0, tensor: arena.poisoned([10, 8]) };
  const dwte: RowChunks = { rows: 10, cols: 8, format: "f32", parts: [part] };
  const dwpe = arena.poisoned([4, 8]);
  const links = arena.poisoned([6]);
  assert.throws(
    () => embeddingBackward(gpu, ids, dx, 3, { ...dwte, format: "f16" }, dwpe, links),
    /dwte is stored f16/,
  );
  assert.throws(() => embeddingBackward(gpu, ids, dx, 4, dwte, dwpe, links), /do not fit/); // 6 % 4
  assert.throws(() => embeddingBackward(gpu, ids, dx, 6, dwte, dwpe, links), /do not fit/); // T > P
  assert.throws(
    () => embeddingBackward(gpu, ids, dx, 3, dwte, arena.poisoned([4, 4]), links),
    /do not fit/,
  );
  assert.throws(
    () => embeddingBackward(gpu, ids, dx, 3, dwte, dwpe, arena.poisoned([5])),
    /do not fit/,
  );
  // 65,536 rows: an invocation would loop past the 65,535 iterations llvmpipe runs.
  const N = 65536;
  const many = [arena.poisoned([N]), arena.poisoned([N, 4]), arena.poisoned([N])];
  const w4: RowChunks = { ...dwte, cols: 4, parts: [{ row0: 0, tensor: arena.poisoned([10, 4]) }] };
  assert.throws(
    () => embeddingBackward(gpu, many[0], many[1], 256, w4, arena.poisoned([256, 4]), many[2]),
    /embeddingBackward: dx\[65536,4\]: up to 65544 loop iterations in one invocation/,
  );
  arena.destroy();
});
