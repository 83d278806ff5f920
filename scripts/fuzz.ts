/**
 * The fuzz campaign: `deno task fuzz [--cases N] [--seed S] [--batch B] [--timeout SECONDS]
 * [--tally]`
 * runs N seeded cases of scripts/fuzz/ (default 10,000) in child processes of B cases
 * each (default 500), so a crash or a hang ends only its own case: a case that kills its
 * process is a `crash`, one that runs past the timeout (default 20 s) is a `hang`, and the
 * next process goes on after it. Prints the count of each outcome per kind of input, lists
 * every unclean case with the command that replays it (`--case I`), and exits 1 if there is
 * any. `--tally` adds how many cases ended in each distinct message ({@link tally}).
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  type CaseKind,
  type CaseResult,
  caseRng,
  CLEAN_OUTCOMES,
  closeContext,
  Draw,
  type FuzzContext,
  makeContext,
  type Outcome,
} from "./fuzz/case.ts";
import { checkpointCase } from "./fuzz/checkpoint.ts";
import { configCase } from "./fuzz/config.ts";
import { snapshotCase } from "./fuzz/snapshot.ts";
import { tokenizerCase } from "./fuzz/tokenizer.ts";

/** Runs case `index` of `seed` and judges it. */
export async function runCase(ctx: FuzzContext, seed: number, index: number): Promise<CaseResult> {
  const d = new Draw(caseRng(seed, index));
  const kind = kindOf(index);
  const run = {
    checkpoint: checkpointCase,
    config: configCase,
    snapshot: snapshotCase,
    tokenizer: tokenizerCase,
  }[kind];
  const mutations: string[] = [];
  const judged = await run(ctx, d, index, mutations);
  let { outcome, detail } = judged;
  try {
    await ctx.gpu.sync();
  } catch (err) {
    outcome = "raw-error";
    detail = `a WebGPU error after the case: ${(err as Error).message.slice(0, 200)}; ${detail}`;
  }
  if (ctx.gpu.bytesAllocated !== ctx.bytesAtRest && CLEAN_OUTCOMES.includes(outcome)) {
    outcome = "leak";
    detail = `${ctx.gpu.bytesAllocated - ctx.bytesAtRest} GPU bytes not freed; ${detail}`;
    ctx.bytesAtRest = ctx.gpu.bytesAllocated; // report a leak once
  }
  return { index, kind, mutation: mutations.join("; "), outcome, detail, ms: judged.ms };
}

/** Marks the worker's protocol lines on its standard output. */
const START = "@@start ";
const RESULT = "@@result ";

/** Options of a campaign. */
export interface CampaignOptions {
  cases: number;
  seed: number;
  batch: number;
  timeoutMs: number;
  /**
   * For testing the driver: `crash:I` makes the worker die at case I, `hang:I` makes it loop
   * forever there (comma-separated).
   */
  inject?: string;
  /** Called with each result as it comes (the CLI prints progress). */
  onResult?: (result: CaseResult) => void;
}

/** Runs cases `from` .. `to` - 1 of `seed` in this process, printing the protocol lines. */
async function worker(seed: number, from: number, to: number, inject = ""): Promise<void> {
  const ctx = await makeContext();
  const write = (line: string) => Deno.stdout.writeSync(new TextEncoder().encode(`${line}\n`));
  const injected = new Map(
    inject.split(",").filter(Boolean).map((s) => {
      const [what, at] = s.split(":");
      return [Number(at), what];
    }),
  );
  for (let i = from; i < to; i++) {
    write(`${START}${i}`);
    if (injected.get(i) === "crash") throw new Error(`injected crash at case ${i}`);
    if (injected.get(i) === "hang") { while (true) performance.now(); }
    write(`${RESULT}${JSON.stringify(await runCase(ctx, seed, i))}`);
  }
  await closeContext(ctx);
}

/** Reads lines from a byte stream, each read limited in time. */
class LineReader {
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next line; null at the end of the stream; "timeout" after `ms` without one. */
  async next(ms: number): Promise<string | null | "timeout"> {
    const deadline = performance.now() + ms;
    while (!this.#buffer.includes("\n")) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - performance.now()));
      });
      const chunk = await Promise.race([this.#reader.read(), timeout]);
      clearTimeout(timer);
      if (chunk === "timeout") return "timeout";
      if (chunk.done) {
        const rest = this.#buffer;
        this.#buffer = "";
        return rest.length ? rest : null;
      }
      this.#buffer += chunk.value;
    }
    const at = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, at);
    this.#buffer = this.#buffer.slice(at + 1);
    return line;
  }
}

/** The kind of case `index`: two checkpoints, then a config, a snapshot, a tokenizer input. */
function kindOf(index: number): CaseKind {
  const kinds: CaseKind[] = ["checkpoint", "checkpoint", "config", "snapshot", "tokenizer"];
  return kinds[index % kinds.length];
}

/** Runs one child process over cases from `from` until it ends; returns where to go on. */
async function runBatch(
  options: CampaignOptions,
  from: number,
  to: number,
  results: CaseResult[],
): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--worker",
      `--seed=${options.seed}`,
      `--from=${from}`,
      `--to=${to}`,
      ...(options.inject ? [`--inject=${options.inject}`] : []),
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  // Keep the end of standard error, for a crash's message.
  let stderr = "";
  const drained = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      stderr = (stderr + chunk).slice(-4000);
    }
  })();
  const lines = new LineReader(child.stdout);
  let current = -1; // the case started and not finished
  let t0 = performance.now();
  const record = (result: CaseResult) => {
    results.push(result);
    options.onResult?.(result);
  };
  const unfinished = (outcome: Outcome, detail: string): CaseResult => ({
    index: current,
    kind: kindOf(current),
    mutation: "",
    outcome,
    detail,
    ms: performance.now() - t0,
  });
  while (true) {
    // Starting the device and the base inputs takes a while; a case gets timeoutMs.
    const line = await lines.next(current < 0 ? 120_000 + options.timeoutMs : options.timeoutMs);
    if (line === "timeout") {
      child.kill("SIGKILL");
      await child.status;
      await drained.catch(() => {});
      if (current < 0) throw new Error(`fuzz worker did not start: ${stderr.slice(-500)}`);
      record(unfinished("hang", `no result after ${options.timeoutMs} ms`));
      return current + 1;
    }
    if (line === null) break;
    if (line.startsWith(START)) {
      current = Number(line.slice(START.length));
      t0 = performance.now();
    } else if (line.startsWith(RESULT)) {
      record(JSON.parse(line.slice(RESULT.length)));
      current = -2; // between cases
    }
  }
  const status = await child.status;
  await drained.catch(() => {});
  if (current >= 0) {
    // Deno prints an uncaught error as "error: Uncaught …" before its stack.
    const message = stderr.split("\n").findLast((l) => l.startsWith("error:")) ?? stderr.trim();
    record(unfinished("crash", `exit ${status.code}: ${message.slice(0, 300)}`));
    return current + 1;
  }
  if (!status.success && results.length === 0) {
    throw new Error(`fuzz worker failed (exit ${status.code}): ${stderr.slice(-500)}`);
  }
  return to;
}

/** Runs the whole campaign in batches of child processes; returns every case's result. */
export async function runCampaign(options: CampaignOptions): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  for (let next = 0; next < options.cases;) {
    next = await runBatch(options, next, Math.min(options.cases, next + options.batch), results);
  }
  return results.sort((a, b) => a.index - b.index);
}

/** A table of outcome counts per kind, and the unclean cases, as text. */
export function summarize(results: readonly CaseResult[], seed: number): string {
  const outcomes = [...new Set(results.map((r) => r.outcome))].sort((a, b) =>
    Number(CLEAN_OUTCOMES.includes(b)) - Number(CLEAN_OUTCOMES.includes(a)) || a.localeCompare(b)
  );
  const kinds = [...new Set(results.map((r) => r.kind))].sort();
  const count = (kind: string | null, outcome: string) =>
    results.filter((r) => (kind === null || r.kind === kind) && r.outcome === outcome).length;
  const width = 14;
  const row = (cells: (string | number)[]) => cells.map((c) => String(c).padStart(width)).join("");
  const lines = [
    row(["", ...outcomes, "total"]),
    ...kinds.map((k) =>
      row([k, ...outcomes.map((o) => count(k, o)), results.filter((r) => r.kind === k).length])
    ),
    row(["all", ...outcomes.map((o) => count(null, o)), results.length]),
  ];
  const unclean = results.filter((r) => !CLEAN_OUTCOMES.includes(r.outcome));
  lines.push("", `unclean outcomes: ${unclean.length}`);
  for (const r of unclean.slice(0, 40)) {
    lines.push(
      `  case ${r.index} (${r.kind}, ${r.outcome}): ${r.mutation}: ${r.detail.slice(0, 160)}`,
      `    replay: deno task fuzz --seed ${seed} --case ${r.index}`,
    );
  }
  return lines.join("\n");
}

/**
 * How many cases ended in each distinct way: one line per kind, outcome and detail, with
 * temporary paths written as P and numbers as N so that cases differing only in them count
 * together (`--tally`: to see which refusal messages the campaign reached).
 */
export function tally(results: readonly CaseResult[]): string {
  const groups = new Map<string, number>();
  for (const r of results) {
    const detail = r.detail.replace(/\/tmp\/\S+/g, "P").replace(/\d+/g, "N").slice(0, 90);
    const key = `${r.kind} ${r.outcome}: ${detail}`;
    groups.set(key, (groups.get(key) ?? 0) + 1);
  }
  return [...groups].sort(([a], [b]) => a.localeCompare(b))
    .map(([key, n]) => `${String(n).padStart(5)} ${key}`).join("\n");
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      cases: { type: "string", default: "10000" },
      seed: { type: "string", default: "1" },
      batch: { type: "string", default: "500" },
      timeout: { type: "string", default: "20" },
      case: { type: "string" },
      worker: { type: "boolean", default: false },
      from: { type: "string" },
      to: { type: "string" },
      inject: { type: "string" },
      tally: { type: "boolean", default: false },
    },
  });
  const int = (name: string, text: string | undefined, min: number): number => {
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n < min) {
      throw new Error(`fuzz: --${name} must be an integer >= ${min}, got ${text}`);
    }
    return n;
  };
  const seed = int("seed", values.seed, 0);
  if (values.worker) {
    await worker(seed, int("from", values.from, 0), int("to", values.to, 0), values.inject);
    return 0;
  }
  if (values.case !== undefined) {
    const ctx = await makeContext();
    const result = await runCase(ctx, seed, int("case", values.case, 0));
    await closeContext(ctx);
    console.log(JSON.stringify(result, null, 2));
    return CLEAN_OUTCOMES.includes(result.outcome) ? 0 : 1;
  }
  const options: CampaignOptions = {
    cases: int("cases", values.cases, 1),
    seed,
    batch: int("batch", values.batch, 1),
    timeoutMs: 1000 * int("timeout", values.timeout, 1),
    inject: values.inject,
  };
  const t0 = performance.now();
  let done = 0;
  options.onResult = () => {
    if (++done % 500 === 0) {
      console.error(
        `  ${done} / ${options.cases} cases, ${((performance.now() - t0) / 1000).toFixed(0)} s`,
      );
    }
  };
  console.log(`fuzz: ${options.cases} cases, seed ${seed}, ${options.batch} per process`);
  const results = await runCampaign(options);
  console.log(summarize(results, seed));
  if (values.tally) console.log(`\n${tally(results)}`);
  console.log(`took ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  return results.every((r) => CLEAN_OUTCOMES.includes(r.outcome)) ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
