/** The sliding window's sizes and what a slide does to a sequence and its cache. */
import assert from "node:assert/strict";
import type { KVCache } from "../model/kv_cache.ts";
import { checkWindow, defaultWindow, slideWindow } from "../run/sliding_window.ts";

/** A cache that only counts its rows and records what it was asked to do. */
function countingCache(length: number) {
  const calls: string[] = [];
  const cache = {
    length,
    evict(sinks: number, recent: number) {
      calls.push(`evict ${sinks},${recent}`);
      const dropped = this.length - sinks - recent;
      this.length = sinks + recent;
      return dropped;
    },
    reset() {
      calls.push("reset");
      this.length = 0;
    },
  };
  return { cache: cache as unknown as KVCache, calls };
}

Deno.test("defaultWindow keeps the sinks and recent tokens up to ¾ of the context", () => {
  assert.deepEqual(defaultWindow(64, 0), { sinks: 0, recent: 48 });
  assert.deepEqual(defaultWindow(1024, 4), { sinks: 4, recent: 764 });
  assert.equal(defaultWindow(64, 48), null, "no recent token left");
  assert.equal(defaultWindow(4, 2), null, "no room for the fed token");
});

Deno.test("checkWindow refuses a window that leaves no room in the context", () => {
  checkWindow({ sinks: 4, recent: 58 }, 64);
  assert.throws(() => checkWindow({ sinks: 4, recent: 59 }, 64), /must leave room/);
});

Deno.test("slideWindow: nothing while the sequence fits, then keeps sinks and recent", () => {
  const seq = Array.from({ length: 64 }, (_, i) => i);
  const fits = countingCache(62);
  assert.equal(
    slideWindow(seq.slice(0, 63), fits.cache, { sinks: 2, recent: 40 }, 64, "sinks"),
    null,
  );
  assert.deepEqual(fits.calls, []);

  // 63 cached and one unfed: the first 2 and the last 40 cached stay, then the unfed one.
  const kept = [0, 1, ...seq.slice(23)];
  const sinks = countingCache(63);
  const s = slideWindow(seq, sinks.cache, { sinks: 2, recent: 40 }, 64, "sinks");
  assert.deepEqual(s, { history: kept, dropped: 21 });
  assert.deepEqual(sinks.calls, ["evict 2,40"]);
  assert.equal(sinks.cache.length, 42);

  const recompute = countingCache(63);
  const r = slideWindow(seq, recompute.cache, { sinks: 2, recent: 40 }, 64, "recompute");
  assert.deepEqual(r, { history: kept, dropped: 21 });
  assert.deepEqual(recompute.calls, ["reset"], "nothing moved: it is prefilled again");
});

Deno.test("slideWindow keeps fewer recent tokens when the unfed tail needs the room", () => {
  const seq = Array.from({ length: 70 }, (_, i) => i);
  const { cache } = countingCache(50); // 20 unfed
  const s = slideWindow(seq, cache, { sinks: 4, recent: 50 }, 64, "recompute")!;
  // 63 positions: 4 sinks, 20 unfed, so 39 recent cached tokens.
  assert.deepEqual(s.history, [0, 1, 2, 3, ...seq.slice(11)]);
  assert.equal(s.dropped, 7);
  assert.equal(s.history.length, 63);
});
