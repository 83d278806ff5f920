/** TensorArena: views of one buffer, aligned, matrices first, data in place; and a model's. */
import assert from "node:assert/strict";
import { TensorArena } from "../kernels/arena.ts";
import { numel } from "../kernels/gpu.ts";
import { GPT2 } from "../model/gpt2.ts";
import { parseConfig } from "../model/config.ts";
import { randomWeights } from "../model/weights.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

Deno.test("TensorArena: aligned views of one buffer, matrices first, each holding its data", async () => {
  const arena = new TensorArena(gpu, "test arena");
  const shapes = [[3], [2, 5], [7], [4, 4]];
  const data = shapes.map((s, i) =>
    Float32Array.from({ length: numel({ shape: s }) }, (_, j) => i * 100 + j)
  );
  const views = data.map((d, i) => arena.upload(d, shapes[i], `t${i}`));
  assert.throws(() => arena.whole, /not allocated yet/);
  assert.throws(() => arena.upload(new Float32Array(2), [3], "bad"), /bad: 2 values/);
  arena.allocate();
  const align = gpu.bindingAlignment;
  assert.ok(views.every((v) => v.buffer === arena.whole.buffer && v.offset % align === 0));
  // The matrices [2,5] and [4,4] come first, then the vectors.
  const order = [...views].sort((a, b) => a.offset - b.offset).map((v) => views.indexOf(v));
  assert.deepEqual(order, [1, 3, 0, 2]);
  assert.equal(arena.matrixWords, views[0].offset / 4);
  assert.ok(views[3].offset / 4 + 16 <= arena.matrixWords);
  const got = await gpu.read(views);
  got.forEach((g, i) => assert.deepEqual(g, data[i], `t${i}`));
  // A mirror: same offsets in another buffer.
  const mirror = gpu.tensor(arena.whole.shape, "mirror");
  const m = TensorArena.at(mirror, views[2]);
  assert.equal(m.buffer, mirror.buffer);
  assert.equal(m.offset, views[2].offset);
  assert.throws(() => arena.upload(new Float32Array(1), [1], "late"), /late comes after/);
  gpu.destroy(mirror);
  gpu.destroy(arena.whole);
});

Deno.test("GPT2: every parameter is a view of the model's arena", () => {
  const config = parseConfig({
    vocab_size: 50,
    n_positions: 16,
    n_embd: 32,
    n_layer: 2,
    n_head: 4,
    bos_token_id: 0,
    eos_token_id: 0,
  }, "tiny");
  const model = new GPT2(gpu, config, randomWeights(config, 1));
  const parts = model.parameters().flatMap((p) => p.parts);
  assert.equal(parts.length, 2 + 2 * 12 + 2);
  assert.ok(parts.every((t) => t.buffer === model.arena.whole.buffer));
  const ends = parts.map((t) => [t.offset, t.offset + numel(t) * 4]).sort((a, b) => a[0] - b[0]);
  ends.slice(1).forEach(([start], i) => assert.ok(start >= ends[i][1], "no overlap"));
  model.destroy();
});
