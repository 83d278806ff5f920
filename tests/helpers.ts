/**
 * Code shared by the tests: a seeded PRNG of test inputs, NaN-poisoned output tensors, an
 * arena that frees what a test allocated, an element-wise closeness check that reports the
 * largest difference it saw, running a script, finding HF's Python, and `needs(…)`, which
 * ignores a test without the permissions it needs.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Gpu, Plan, RunOptions, Tensor } from "../kernels/gpu.ts";
import type { RowChunks } from "../kernels/matmul.ts";

/**
 * mulberry32: a small seeded PRNG of test inputs (uniforms, normals, integers). Not the
 * library's `Rng` (base/rng.ts, xoshiro128**), whose sequence the samplers must reproduce.
 */
export class TestRng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    let z = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 2 ** 32;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** A standard normal draw (Box-Muller). */
  normal(): number {
    const u = 1 - this.next(); // (0, 1]
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** n token ids, each uniform in [0, vocab). */
  ids(n: number, vocab: number): number[] {
    return Array.from({ length: n }, () => this.int(vocab));
  }

  /** n f32 values U(lo, hi). */
  uniforms(n: number, lo = -1, hi = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniform(lo, hi);
    return out;
  }

  /** n f32 values N(0, std²). */
  normals(n: number, std = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = std * this.normal();
    return out;
  }
}

/** Allocates a tensor of `shape` filled with NaN, so that an unwritten element shows. */
export function poisoned(gpu: Gpu, shape: readonly number[], label = "poisoned"): Tensor {
  const t = gpu.tensor(shape, label);
  gpu.write(t, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(NaN));
  return t;
}

/** Runs `f` and returns the plans it submitted through `gpu.run`, in order. */
export async function capturePlans(gpu: Gpu, f: () => Promise<unknown>): Promise<Plan[]> {
  const plans: Plan[] = [];
  const run = gpu.run;
  gpu.run = (plan: Plan, options?: RunOptions) => {
    plans.push(plan);
    run.call(gpu, plan, options);
  };
  try {
    await f();
  } finally {
    gpu.run = run;
  }
  return plans;
}
/** Tensors allocated by one test, freed together at its end. */
export class Arena {
  readonly tensors: Tensor[] = [];
  constructor(readonly gpu: Gpu) {}

  /** Keeps `t` to free later. */
  add<T extends Tensor>(t: T): T {
    this.tensors.push(t);
    return t;
  }

  /** Keeps every part of a chunked matrix. */
  addChunks(c: RowChunks): RowChunks {
    for (const p of c.parts) this.add(p.tensor);
    return c;
  }

  upload(data: Float32Array | Uint32Array, shape: readonly number[], label = "input"): Tensor {
    return this.add(this.gpu.upload(data, shape, label));
  }

  poisoned(shape: readonly number[], label = "output"): Tensor {
    return this.add(poisoned(this.gpu, shape, label));
  }

  /** A [4] u32 tensor holding pos0, as the kernels' `step` binding expects. */
  step(pos0: number): Tensor {
    return this.upload(new Uint32Array([pos0, 0, 0, 0]), [4], "step");
  }

  destroy(): void {
    for (const t of this.tensors.splice(0)) this.gpu.destroy(t);
  }
}

/** What {@link assertClose} measured. */
export interface CloseReport {
  /** Largest |got - want|. */
  maxAbs: number;
  /** Largest |got - want| / max(1, |want|). */
  maxScaled: number;
}

/**
 * Asserts |got[i] - want[i]| <= tol · max(1, |want[i]|) for every i (NaN always fails) and
 * logs the largest absolute and scaled differences under `label`.
 */
export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
  label: string,
): CloseReport {
  assert.equal(got.length, want.length, `${label}: ${got.length} values, expected ${want.length}`);
  let maxAbs = 0;
  let maxScaled = 0;
  let worst = -1;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    const scaled = d / Math.max(1, Math.abs(want[i]));
    if (Number.isNaN(d)) {
      assert.fail(`${label}: element ${i} is ${got[i]}, expected ${want[i]} (unwritten?)`);
    }
    if (d > maxAbs) maxAbs = d;
    if (scaled > maxScaled) {
      maxScaled = scaled;
      worst = i;
    }
  }
  console.log(
    `  ${label}: max abs diff ${maxAbs.toExponential(2)}, ` +
      `max diff/max(1,|ref|) ${maxScaled.toExponential(2)} (tol ${tol.toExponential(0)})`,
  );
  assert.ok(
    maxScaled <= tol,
    `${label}: element ${worst} is ${got[worst]}, expected ${want[worst]} ` +
      `(scaled diff ${maxScaled.toExponential(2)} > ${tol})`,
  );
  return { maxAbs, maxScaled };
}

/**
 * `fn` over `items`, at most `limit` at a time, results in the items' order: for tests that
 * spawn many short commands, whose start-up (mostly waiting on one core) then overlaps.
 */
export async function mapConcurrent<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** What a script run by {@link runScript} did: its exit code and its output. */
export interface ScriptRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno run -A <script> <args>` (a path from the repository root), as a task would. */
export function runScript(script: string, ...args: string[]): Promise<ScriptRun> {
  return runDeno({ flags: ["-A"] }, script, ...args);
}

/** How {@link runDeno} runs a script. */
export interface DenoRun {
  /** Flags before the script, such as `-A` or `--allow-read`; none: no permissions. */
  flags?: string[];
  /** Environment variables added to this process's. */
  env?: Record<string, string>;
}

/** Runs `deno run <flags> <script> <args>` with standard input closed. */
export function runDeno(run: DenoRun, script: string, ...args: string[]): Promise<ScriptRun> {
  return deno(["run", ...(run.flags ?? []), script, ...args], run.env);
}

/**
 * Runs `deno <args>` (any subcommand: `test`, `eval`, …) with standard input closed and `env`
 * added to this process's environment.
 */
export async function deno(args: string[], env?: Record<string, string>): Promise<ScriptRun> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code, stdout: dec.decode(stdout), stderr: dec.decode(stderr) };
}

/**
 * Asserts that a command rejected its arguments as cli/usage.ts makes it: exit code 2 and one
 * line `<name>: <message matching pattern> (see --help)`, no usage text, no stack trace.
 */
export function assertUsageError(r: ScriptRun, name: string, pattern: RegExp): void {
  const line = ourLine(r, name, 2);
  assert.ok(line.endsWith(" (see --help)"), line);
  assert.match(line, pattern);
}

/** Asserts that a command failed as cli/usage.ts makes it: exit code 1, its one line. */
export function assertFailure(r: ScriptRun, name: string, pattern: RegExp): void {
  assert.match(ourLine(r, name, 1), pattern);
}

/**
 * The one line a command printed on standard error after exiting with `code`: every line
 * that is not the GPU driver's (Mesa may warn about XDG_RUNTIME_DIR when the GPU opens).
 */
function ourLine(r: ScriptRun, name: string, code: number): string {
  const context = `stdout: ${r.stdout}\nstderr: ${r.stderr}`;
  assert.equal(r.code, code, context);
  const lines = r.stderr.trimEnd().split("\n").filter((l) => !/^error: XDG_RUNTIME_DIR/.test(l));
  assert.equal(lines.length, 1, `one line on standard error: ${context}`);
  assert.ok(lines[0].startsWith(`${name}: `), context);
  return lines[0];
}

/** A permission some tests need beyond the GPU (which needs none). */
export type Need = "read" | "write" | "run" | "net" | "env";

/** Whether every permission named is granted already (asks nothing). */
export function granted(...names: Need[]): boolean {
  return names.every((name) => Deno.permissions.querySync({ name }).state === "granted");
}

/**
 * `Deno.test` options that ignore a test unless every permission it needs is granted:
 * `Deno.test("…", needs("read", "run"), async () => {…})`. Plain `deno test` grants none, so
 * it runs only the tests on in-memory data; `deno task test` (`deno test -A`) runs them all.
 * The first ignored test of a run prints one line saying so.
 */
export function needs(...names: Need[]): { ignore: boolean } {
  const ignore = !granted(...names);
  if (ignore) {
    announce(
      "permissions",
      "ignored: tests that need file, subprocess, network or environment access, which this " +
        'run does not grant (counted as "ignored" on the last line); `deno task test` ' +
        "(or `deno test -A`) runs them all",
    );
  }
  return { ignore };
}

/** Whether `KVGPT_SLOW_TESTS=1` asks for the slow tests (see {@link slow}); `.ci/run` sets it. */
export const SLOW_TESTS = granted("env") && Deno.env.get("KVGPT_SLOW_TESTS") === "1";

/**
 * `Deno.test` options for a test that is slow on a CPU-only machine, ignored unless
 * `KVGPT_SLOW_TESTS=1` (and the permissions it `needs`): GPT-2-small-sized shapes, the kernel
 * design for real GPUs run on a software adapter, head sizes the fixtures do not use (on
 * llvmpipe's OpenGL backend each head size compiles attention kernels for tens of seconds),
 * and the end-to-end runs of a command or experiment past the first few of each (every such run
 * is a new process that opens the GPU and compiles its kernels again). `deno task test` keeps
 * every kernel test, parity and gradcheck on every fixture, and a run of the main commands.
 */
export function slow(...names: Need[]): { ignore: boolean } {
  if (needs(...names).ignore) return { ignore: true };
  if (!SLOW_TESTS) {
    announce(
      "slow",
      "ignored: tests that are slow on a CPU-only machine (GPT-2-small-sized shapes, the " +
        "kernels for real GPUs, more head sizes, more end-to-end runs of each command); " +
        "`KVGPT_SLOW_TESTS=1 deno task test` runs them, as `.ci/run` does",
    );
  }
  return { ignore: !SLOW_TESTS };
}

/**
 * `Deno.test` options for a test that runs kvgpt on Dawn (npm webgpu): a slow test (see
 * {@link slow}), ignored too where Dawn finds no adapter, `unavailable` saying why
 * ({@link dawnUnavailable}); the first such test of a run prints one line naming what to install.
 */
export function onDawn(unavailable: string | null, ...names: Need[]): { ignore: boolean } {
  if (slow(...names).ignore) return { ignore: true };
  if (unavailable) announce("dawn", `ignored: the tests on Dawn: ${unavailable}`);
  return { ignore: unavailable !== null };
}

/**
 * Why kvgpt cannot run on Dawn here (its one-line error: the package or the driver to
 * install), or null when it can: opens and closes a Dawn device through `open`.
 */
export async function dawnUnavailable(open: () => Promise<Gpu>): Promise<string | null> {
  try {
    (await open()).close();
    return null;
  } catch (e) {
    return (e as Error).message.split("\n")[0];
  }
}

/**
 * Prints `line` once per `deno test` run for each `kind`. Each test file runs in an isolate
 * of its own; they share `localStorage`, which remembers the process that printed it.
 */
function announce(kind: string, line: string) {
  const key = `kvgpt-tests-announced-${kind}`;
  try {
    if (localStorage.getItem(key) === String(Deno.pid)) return;
    localStorage.setItem(key, String(Deno.pid));
  } catch {
    // No localStorage: print it once per file instead.
    if (announcedHere.has(kind)) return;
  }
  announcedHere.add(kind);
  console.log(line);
}
const announcedHere = new Set<string>();

/**
 * HF transformers' Python for the tests that run it: $HF_VENV/bin/python (default
 * ~/.cache/hf-venv, as /work/shared/tools/setup_hf_env.sh builds it), and why it cannot run
 * (no env/read/write/run access, no such Python, or no torch/transformers/safetensors), or
 * null when it can.
 */
export async function hfPython(): Promise<{ python: string; unavailable: string | null }> {
  if (!granted("env", "read", "write", "run")) {
    return { python: "", unavailable: "needs env, read, write and run access" };
  }
  const home = Deno.env.get("HOME") ?? "";
  const python = `${Deno.env.get("HF_VENV") ?? `${home}/.cache/hf-venv`}/bin/python`;
  try {
    const check = await new Deno.Command(python, {
      args: ["-c", "import torch, transformers, safetensors"],
      stdout: "null",
      stderr: "null",
    }).output();
    const unavailable = check.success
      ? null
      : `${python} cannot import torch/transformers/safetensors`;
    return { python, unavailable };
  } catch {
    return { python, unavailable: `no ${python} (build it with setup_hf_env.sh)` };
  }
}
