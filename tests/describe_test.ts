import assert from "node:assert/strict";
import { clip, describe, ECHO_LIMIT } from "../base/describe.ts";

Deno.test("clip: short text unchanged, long text cut to the limit with an ellipsis", () => {
  assert.equal(clip("abc"), "abc");
  const long = clip("x".repeat(500));
  assert.equal(long.length, ECHO_LIMIT);
  assert.ok(long.endsWith("…"));
  // A surrogate pair is never split before the ellipsis.
  const emoji = clip("a" + "😀".repeat(10), 4);
  assert.ok(!/[\ud800-\udbff]…$/.test(emoji), JSON.stringify(emoji));
});

Deno.test("describe: JSON-like text of any value, bounded and never throwing", () => {
  assert.equal(describe("n_embd"), '"n_embd"');
  assert.equal(describe(12n), "12n");
  assert.equal(describe(NaN), "NaN");
  assert.equal(describe([1, { a: null }]), '[1,{"a":null}]');
  assert.equal(describe(() => 1), "[function]");
  assert.equal(describe(new Float32Array(3)), "[Float32Array]");
  const loop: Record<string, unknown> = {};
  loop.self = loop;
  assert.equal(describe(loop), '{"self":[circular]}');
  let deep: unknown = 1;
  for (let i = 0; i < 1e6; i++) deep = [deep];
  assert.ok(describe(deep).length <= ECHO_LIMIT);
  const hostile = new Proxy({}, {
    ownKeys() {
      throw new Error("no");
    },
  });
  assert.match(describe(hostile), /unprintable/);
});
