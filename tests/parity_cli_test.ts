/** `deno task parity`: bad arguments and a missing model, as typed (its PASS run is parity_test). */
import assert from "node:assert/strict";
import { assertFailure, assertUsageError, needs, runScript } from "./helpers.ts";

function parity(...args: string[]) {
  return runScript("cli/parity.ts", ...args);
}

Deno.test("parity --help prints the usage", needs("run", "read"), async () => {
  const r = await parity("--help");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^usage: deno task parity/);
});

Deno.test(
  "parity: bad options exit 2 with one line naming the option",
  needs("run", "read"),
  async () => {
    const cases: [string[], RegExp][] = [
      [["--weights", "f8"], /--weights: expected f32 or f16, got "f8"/],
      [["--bogus", "1"], /--bogus: unknown option/],
      [["--model"], /--model: needs a value/],
      [["extra"], /unexpected argument "extra"/],
    ];
    for (const [args, pattern] of cases) assertUsageError(await parity(...args), "parity", pattern);
  },
);

Deno.test(
  "parity: a missing model is one line, exit 1, and a FAIL last line",
  needs("run", "read"),
  async () => {
    const r = await parity("--model", "data/no-such-model");
    assertFailure(r, "parity", /data\/no-such-model/);
    assert.doesNotMatch(r.stdout, /adapter:/, "the error comes before any adapter line");
    assert.equal(r.stdout.trim().split("\n").at(-1), "parity: FAIL max_abs_diff=NaN tensors=0");
  },
);
