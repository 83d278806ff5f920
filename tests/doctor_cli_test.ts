/** `deno task doctor`: its report, the JSON last line, its exit status, and bad settings. */
import assert from "node:assert/strict";
import { assertFailure, assertUsageError, runDeno, runScript, slow } from "./helpers.ts";

Deno.test(
  "doctor --json: every check, and one object holding them as the last line",
  slow("read", "run", "env"),
  async () => {
    const r = await runScript("cli/doctor.ts", "--json");
    const lines = r.stdout.trimEnd().split("\n");
    const report = JSON.parse(lines.at(-1)!);
    assert.equal(r.code, report.ok ? 0 : 1, r.stderr);
    assert.ok(report.ok, lines.slice(0, -1).join("\n"));
    assert.equal(report.webgpu, "deno");
    assert.equal(typeof report.adapter.description, "string");
    assert.ok(Array.isArray(report.features));
    assert.ok(report.limits.maxStorageBufferBindingSize > 0);
    assert.ok(["cpu", "gpu"].includes(report.design.picked) && report.design.reason);
    assert.ok(["general", "fused"].includes(report.decode.picked) && report.decode.reason);
    assert.deepEqual(report.parity.map((p: { design: string }) => p.design).sort(), ["cpu", "gpu"]);
    for (const p of report.parity) assert.ok(p.pass && p.maxAbsDiff <= 1e-5, JSON.stringify(p));
    assert.equal(report.parity[0].model, "data/tiny-gpt2");
    assert.equal(report.greedy.tokens, 32);
    assert.ok(report.greedy.tokensPerSecond > 0);
    // The same facts in the text above it.
    assert.match(r.stdout, /^kernels: +(cpu|gpu) design \(/m);
    assert.match(r.stdout, /^decode: +(general|fused) path \(/m);
    assert.match(r.stdout, /^doctor: +OK in /m);
  },
);

Deno.test(
  "doctor: an unknown KVGPT_WEBGPU is one line naming the choices",
  slow("read", "run", "env"),
  async () => {
    const r = await runDeno({ flags: ["-A"], env: { KVGPT_WEBGPU: "metal" } }, "cli/doctor.ts");
    assertFailure(r, "doctor", /KVGPT_WEBGPU: expected deno or dawn, got "metal"/);
  },
);

Deno.test("doctor: a stray argument is a usage error", slow("read", "run", "env"), async () => {
  assertUsageError(await runScript("cli/doctor.ts", "--jsn"), "doctor", /--jsn/);
});
