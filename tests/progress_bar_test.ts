import assert from "node:assert/strict";
import { formatProgress, ProgressBar } from "../io/progress_bar.ts";

Deno.test("formatProgress: bar, percentage, sizes and speed", () => {
  assert.equal(
    formatProgress("model.safetensors", 210_300_000, 523_700_000, 31_400_000),
    "model.safetensors [########------------]  40.2%  210.3/523.7 MB  31.4 MB/s",
  );
  assert.equal(formatProgress("f", 0, 828, 0, 4), "f [----]   0.0%  0.0/0.8 kB  0.0 MB/s");
  assert.equal(formatProgress("f", 828, 828, 0, 4), "f [####] 100.0%  0.8/0.8 kB  0.0 MB/s");
  assert.equal(
    formatProgress("f", 3_100_000_000, 6_431_000_000, 5e7, 4),
    "f [##--]  48.2%  3.1/6.4 GB  50.0 MB/s",
  );
  assert.equal(formatProgress("f", 5_000_000, 0, 1e6), "f  5.0 MB  1.0 MB/s", "unknown total");
});

Deno.test("ProgressBar: redraws in place, throttled, and ends the line", () => {
  const written: string[] = [];
  const out = {
    writeSync(p: Uint8Array) {
      written.push(new TextDecoder().decode(p));
      return p.length;
    },
  };
  const bar = new ProgressBar("config.json", out, 60_000);
  bar.update(0, 1000);
  bar.update(500, 1000); // within the interval: not drawn
  bar.finish();
  assert.equal(written.length, 3);
  assert.ok(written[0].startsWith("\rconfig.json ["));
  assert.match(written[1], /50\.0%/, "finish draws the last state");
  assert.equal(written[2], "\n");
  new ProgressBar("unused", out).finish();
  assert.equal(written.length, 3, "a bar that never started prints nothing");
});
