/**
 * The short soak: scripts/soak.ts in a child process (with --expose-gc, as `deno task soak`
 * runs it), 30 generations of the tiny fixture in one process, 16 model open/destroy
 * cycles and 12 training cycles (a small model and its trainer made, stepped, destroyed). RSS after warm-up must stay within RSS_MARGIN_MIB (40 MiB) in each phase, and
 * `Gpu.bytesAllocated` and the live KV-cache bytes must come back to their start. A run that
 * forgets its caches must be caught. `deno task soak` is the long run (1,000 generations).
 */
import assert from "node:assert/strict";
import { RSS_MARGIN_MIB, soakProblems, type SoakReport } from "../scripts/soak.ts";
import { slow } from "./helpers.ts";

/** Runs the soak script with `args` and returns its exit code and JSON report. */
async function runSoak(...args: string[]): Promise<{ code: number; report: SoakReport }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", "scripts/soak.ts", "--json", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(stdout).trim();
  assert.ok(out.startsWith("{"), `no report: ${new TextDecoder().decode(stderr).slice(-2000)}`);
  return { code, report: JSON.parse(out) };
}

Deno.test(
  "soak: RSS flat after warm-up, every GPU byte returned",
  slow("run", "read", "write"),
  async () => {
    const { code, report } = await runSoak(
      "--generations=30",
      "--model-cycles=16",
      "--training-cycles=12",
    );
    for (
      const [name, p] of [
        ["generations", report.generations],
        ["model cycles", report.modelCycles],
        ["training cycles", report.training],
      ] as const
    ) {
      console.log(
        `  ${name}: ${p.operations} after warm-up, RSS ${p.startMiB.toFixed(1)} -> ` +
          `${p.endMiB.toFixed(1)} MiB (${p.growthMiB.toFixed(1)} MiB, margin ${RSS_MARGIN_MIB})`,
      );
    }
    console.log(
      `  ${report.tokens} tokens, ${report.snapshots} snapshots in ${report.seconds.toFixed(1)} s`,
    );
    assert.deepEqual(soakProblems(report), []);
    assert.equal(code, 0);
    assert.ok(report.generations.growthMiB <= RSS_MARGIN_MIB);
    assert.ok(report.modelCycles.growthMiB <= RSS_MARGIN_MIB);
    assert.equal(report.bytesAllocated.end, report.bytesAllocated.start);
    assert.equal(report.liveCacheBytes.end, report.liveCacheBytes.start);
    assert.ok(report.tokens > 100 && report.snapshots >= 4, "the mix ran");
  },
);

Deno.test(
  "soak: caches that are never destroyed are caught",
  slow("run", "read", "write"),
  async () => {
    const { code, report } = await runSoak("--generations=10", "--model-cycles=9", "--leak");
    assert.equal(code, 1);
    const problems = soakProblems(report);
    assert.ok(problems.some((p) => p.startsWith("bytesAllocated")), problems.join("\n"));
    assert.ok(problems.some((p) => p.startsWith("live cache bytes")), problems.join("\n"));
  },
);
