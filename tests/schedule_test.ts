/** nanoGPT's learning-rate schedule: warm-up, cosine decay, floor. */
import assert from "node:assert/strict";
import { cosineLr } from "../train/schedule.ts";

Deno.test("cosineLr: linear warm-up, cosine to minLr at decayIters, then minLr", () => {
  const s = { lr: 1e-3, minLr: 1e-4, warmup: 100, decayIters: 2000 };
  assert.equal(cosineLr(s, 0), 1e-3 / 101);
  assert.equal(cosineLr(s, 99), 1e-3 * 100 / 101);
  assert.equal(cosineLr(s, 100), 1e-3);
  assert.ok(Math.abs(cosineLr(s, 1050) - 5.5e-4) < 1e-12); // half-way: the mean of lr and minLr
  assert.ok(Math.abs(cosineLr(s, 2000) - 1e-4) < 1e-15);
  assert.equal(cosineLr(s, 2500), 1e-4);
  for (let it = 101; it < 2000; it += 37) assert.ok(cosineLr(s, it) < cosineLr(s, it - 1));
});
