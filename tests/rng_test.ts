import assert from "node:assert/strict";
import { Rng } from "../base/rng.ts";

Deno.test("Rng: xoshiro128** reference outputs for state [1, 2, 3, 4]", () => {
  const rng = Rng.fromState([1, 2, 3, 4]);
  const got = Array.from({ length: 8 }, () => rng.nextUint32());
  assert.deepEqual(
    got,
    [11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849],
  );
  assert.throws(() => Rng.fromState([0, 0, 0, 0]), /state/);
});

Deno.test("Rng: same seed gives the same sequence, other seeds differ", () => {
  const take = (seed: number) => {
    const rng = new Rng(seed);
    return Array.from({ length: 16 }, () => rng.next());
  };
  assert.deepEqual(take(42), take(42));
  assert.notDeepEqual(take(42), take(43));
  assert.notDeepEqual(take(0), take(1));
  assert.notDeepEqual(take(1), take(2 ** 32 + 1), "high bits of the seed count");
  assert.notDeepEqual(take(-1), take(1));
});

Deno.test("Rng: rejects a seed that is not a safe integer", () => {
  for (const seed of [1.5, NaN, Infinity, 2 ** 60]) {
    assert.throws(() => new Rng(seed), /seed/);
  }
});
