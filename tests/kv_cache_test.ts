/** KVCache: sizes in bytes, reset, and read() trimming each head to the cached length. */
import assert from "node:assert/strict";
import { Gpu } from "../kernels/gpu.ts";
import { parseConfig } from "../model/config.ts";
import { KVCache } from "../model/kv_cache.ts";

const gpu = await Gpu.open();

const config = parseConfig(
  { n_layer: 2, n_head: 3, n_embd: 48, n_positions: 64, vocab_size: 500 },
  "kv cache test config",
);
const { nLayer: L, nHead: H, nPositions: P, headDim: D, nEmbd: C } = config;

/** A value that names its place: layer, K or V, head, position, dim. */
function mark(l: number, kv: number, h: number, s: number, d: number): number {
  return (kv ? -1 : 1) * (l * 1e6 + h * 1e4 + s * 100 + d + 1);
}

/** Fills every layer's K and V with {@link mark} values. */
function fill(cache: KVCache) {
  cache.layers.forEach((layer, l) => {
    [layer.k, layer.v].forEach((t, kv) => {
      const a = new Float32Array(H * P * D);
      for (let h = 0; h < H; h++) {
        for (let s = 0; s < P; s++) {
          for (let d = 0; d < D; d++) a[(h * P + s) * D + d] = mark(l, kv, h, s, d);
        }
      }
      gpu.write(t, a);
    });
  });
}

/** Asserts read() returns [H, length, D] per layer with the marked values. */
async function assertRead(cache: KVCache) {
  const n = cache.length;
  const kv = await cache.read();
  assert.equal(kv.length, L);
  kv.forEach(({ k, v }, l) => {
    [k, v].forEach((a, which) => {
      assert.equal(a.length, H * n * D, `layer ${l} length ${n}`);
      for (let h = 0; h < H; h++) {
        for (let s = 0; s < n; s++) {
          for (let d = 0; d < D; d++) {
            assert.equal(
              a[(h * n + s) * D + d],
              mark(l, which, h, s, d),
              `[${l},${which},${h},${s},${d}]`,
            );
          }
        }
      }
    });
  });
}

Deno.test("KVCache: preallocated for n_positions, bytes used follow the length", () => {
  const before = gpu.bytesAllocated;
  const cache = new KVCache(gpu, config);
  assert.equal(cache.length, 0);
  assert.equal(cache.capacity, P);
  assert.equal(cache.layers.length, L);
  for (const { k, v } of cache.layers) {
    assert.deepEqual(k.shape, [H, P, D]);
    assert.deepEqual(v.shape, [H, P, D]);
  }
  assert.equal(cache.bytesAllocated, 2 * L * P * C * 4);
  assert.equal(gpu.bytesAllocated - before, 2 * L * P * C * 4);
  assert.equal(cache.bytesUsed, 0);
  cache.length = 5;
  assert.equal(cache.bytesUsed, 2 * L * 5 * C * 4);
  cache.length = P;
  assert.equal(cache.bytesUsed, cache.bytesAllocated);
  cache.reset();
  assert.equal(cache.length, 0);
  assert.equal(cache.bytesUsed, 0);
  assert.equal(cache.bytesAllocated, 2 * L * P * C * 4, "reset keeps the buffers");
  cache.destroy();
  assert.equal(gpu.bytesAllocated, before);
});

Deno.test("KVCache: read() trims every head to the cached length", async () => {
  const cache = new KVCache(gpu, config);
  fill(cache);
  for (const n of [0, 1, 5, P - 1, P]) {
    cache.length = n;
    await assertRead(cache);
  }
  cache.reset();
  const empty = await cache.read();
  assert.ok(empty.every(({ k, v }) => k.length === 0 && v.length === 0));
  cache.destroy();
});
