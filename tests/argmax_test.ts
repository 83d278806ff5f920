/** greedyPick, the argmax kernel: the first largest logit becomes the next token, and the step advances. */
import assert from "node:assert/strict";
import { greedyPick } from "../kernels/argmax.ts";

import { argmax } from "../run/sampling.ts";
import { Arena, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

async function pick(logits: Float32Array, n: number, chosenBefore: number) {
  const arena = new Arena(gpu);
  const l = arena.upload(logits, [1, logits.length], "logits");
  const ids = arena.upload(new Uint32Array([999_999]), [1], "ids");
  const step = arena.upload(new Uint32Array([40, chosenBefore, 0, 0]), [4], "step");
  const tokens = arena.upload(new Uint32Array(8).fill(7), [8], "tokens");
  gpu.run([greedyPick(gpu, l, n, ids, step, tokens)]);
  const [i, s, t] = await gpu.read([ids, step, tokens]);
  arena.destroy();
  const u32 = (a: Float32Array) => [...new Uint32Array(a.buffer)];
  return { id: u32(i)[0], step: u32(s), tokens: u32(t) };
}

Deno.test("argmax over a GPT-2-sized row equals the CPU argmax", async () => {
  const rng = new TestRng(3);
  for (const n of [1, 7, 50257]) {
    const logits = rng.normals(n + 47, 2); // padding columns past n are never read
    logits.fill(1e9, n);
    const got = await pick(logits, n, 2);
    assert.equal(got.id, argmax(logits.subarray(0, n)), `n=${n}`);
    assert.equal(got.tokens[2], got.id, "written at tokens[step[1]]");
    assert.deepEqual(got.tokens.filter((_, i) => i !== 2), [7, 7, 7, 7, 7, 7, 7]);
    assert.deepEqual(got.step.slice(0, 2), [41, 3], "pos0 and the token count advance");
  }
});

Deno.test("argmax keeps the first of equal maxima, as torch.argmax does", async () => {
  const logits = new Float32Array(50257).fill(-1);
  for (const i of [40000, 301, 17, 50000]) logits[i] = 5;
  assert.equal((await pick(logits, 50257, 0)).id, 17);
});
