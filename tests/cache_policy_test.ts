import assert from "node:assert/strict";
import { parseCachePolicy } from "../run/cache_policy.ts";

Deno.test("every cache policy parses to cache options (and a window)", () => {
  assert.deepEqual(parseCachePolicy("preallocated").cache, { policy: "preallocate" });
  assert.deepEqual(parseCachePolicy("grow").cache, { policy: "grow", growthFactor: 2 });
  assert.deepEqual(parseCachePolicy("f16").cache, { dtype: "f16" });
  assert.deepEqual(parseCachePolicy(" int8 ").cache, { dtype: "int8" });
  const w = parseCachePolicy("window:4,60");
  assert.deepEqual(w.window, { sinks: 4, recent: 60 });
  assert.equal(w.name, "window:4,60");
  assert.equal(parseCachePolicy("f16").window, undefined);
});

Deno.test("an unknown cache policy is an error naming the choices", () => {
  for (const bad of ["", "paged", "window:4", "window:4,0", "window:-1,5", "F16"]) {
    assert.throws(() => parseCachePolicy(bad), /expected one of preallocated, grow, f16, int8/);
  }
});
