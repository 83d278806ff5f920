import assert from "node:assert/strict";
import { maxAbsDiff } from "../base/max_abs_diff.ts";

Deno.test("maxAbsDiff: the largest absolute difference", () => {
  assert.equal(maxAbsDiff([1, 2, 3], [1, 2.5, 1]), 2);
  assert.equal(maxAbsDiff(new Float32Array([0, -4]), new Float32Array([0, 4])), 8);
  assert.equal(maxAbsDiff([], []), 0);
});

Deno.test("maxAbsDiff: a NaN on one side or a length mismatch is an infinite difference", () => {
  assert.equal(maxAbsDiff([1, NaN, 0], [1, 2, 0]), Infinity);
  assert.equal(maxAbsDiff([1, 2, 100], [NaN, 2, 0]), Infinity, "NaN first, larger diff later");
  assert.equal(maxAbsDiff([1, 2], [1, 2, 3]), Infinity);
});
