/**
 * The one command-line path every CLI and experiment shares:
 *
 * - `--help` (or `-h`) prints the usage and exits 0;
 * - a bad flag is a {@linkcode UsageError}: one line naming the flag and its value, then
 *   `see --help`, exit 2;
 * - any other failure prints one line (no stack trace) and exits 1.
 *
 * A CLI reads as:
 *
 * ```ts
 * const USAGE = "usage: deno task thing [--count N]";
 * main("thing", async () => {
 *   const { values } = parseOptions(USAGE, Deno.args, { count: { type: "string", default: "1" } });
 *   const count = integer("--count", values.count, 1, 100);
 *   // … the work; the returned number is the exit code (default 0)
 * });
 * ```
 *
 * @module
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import type { WeightFormat } from "../kernels/matmul.ts";

/** A command-line mistake: printed as one line, then `see --help`, exit code 2. */
export class UsageError extends Error {}

/**
 * Parses `args` strictly with node:util's `parseArgs`. `--help` or `-h` anywhere prints
 * `usage` and exits 0. A negative number after a flag that takes a value (`--temperature -1`)
 * is that flag's value, so that the command's own range check answers. Unknown flags, missing
 * values and stray arguments are {@linkcode UsageError}s naming the flag.
 */
export function parseOptions<O extends ParseArgsOptionsConfig>(
  usage: string,
  args: readonly string[],
  options: O,
  allowPositionals = false,
) {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(usage);
    Deno.exit(0);
  }
  try {
    return parseArgs({
      args: joinNegativeValues(args, options),
      options,
      strict: true,
      allowPositionals,
    });
  } catch (e) {
    throw new UsageError(parserMessage(e as Error & { code?: string }));
  }
}

/** `--flag -1` → `--flag=-1` for flags that take a value: parseArgs calls `-1` ambiguous. */
function joinNegativeValues(args: readonly string[], options: ParseArgsOptionsConfig): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i].startsWith("--") ? args[i].slice(2) : "";
    const next = args[i + 1];
    if (options[name]?.type === "string" && next !== undefined && /^-[\d.]/.test(next)) {
      out.push(`${args[i]}=${next}`);
      i++;
    } else {
      out.push(args[i]);
    }
  }
  return out;
}

/** One line for a parseArgs error, naming the flag (its messages run to three sentences). */
function parserMessage(e: Error & { code?: string }): string {
  const flag = e.message.match(/'(-[^' ]+)/)?.[1] ?? "";
  switch (e.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `${flag}: unknown option`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return /does not take/.test(e.message) ? `${flag}: takes no value` : `${flag}: needs a value`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument "${e.message.match(/'([^']*)'/)?.[1] ?? ""}"`;
    default:
      return e.message.split("\n")[0];
  }
}

/** Parses `flag`'s `value` as a number that passes `check`; `want` says what it must be. */
export function number(
  flag: string,
  value: string,
  want: string,
  check: (n: number) => boolean = () => true,
): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || !check(n)) {
    throw new UsageError(`${flag}: expected ${want}, got "${value}"`);
  }
  return n;
}

/** Parses `flag`'s `value` as an integer in [min, max]. */
export function integer(flag: string, value: string, min: number, max: number): number {
  const want = max === Infinity ? `an integer >= ${min}` : `an integer in ${min}..${max}`;
  return number(flag, value, want, (n) => Number.isInteger(n) && n >= min && n <= max);
}

/** Parses `flag`'s `value` `a,b,c` as increasing integers in [min, max]. */
export function integerList(flag: string, value: string, min: number, max: number): number[] {
  const list = value.split(",").map((v) => integer(flag, v, min, max));
  if (list.some((n, i) => i > 0 && n <= list[i - 1])) {
    throw new UsageError(`${flag}: expected increasing integers, got "${value}"`);
  }
  return list;
}

/** Parses a weight format, `f32` or `f16` (see {@linkcode WeightFormat}). */
export function weightFormat(value: string, flag = "--weights"): WeightFormat {
  if (value === "f32" || value === "f16") return value;
  throw new UsageError(`${flag}: expected f32 or f16, got "${value}"`);
}

/**
 * Prints `error` as one line prefixed by the command's `name` and exits: 2 with
 * `see --help` for a {@linkcode UsageError}, 1 for anything else.
 */
export function fail(name: string, error: unknown): never {
  const message = error instanceof Error ? error.message : String(error);
  const line = message.trim().replace(/\s*\n\s*/g, " ");
  if (error instanceof UsageError) {
    console.error(`${name}: ${line} (see --help)`);
    Deno.exit(2);
  }
  console.error(`${name}: ${line}`);
  Deno.exit(1);
}

/**
 * Runs a command's `body` and exits with the number it returns (default 0); an error goes
 * through {@linkcode fail}.
 */
export async function main(
  name: string,
  body: () => Promise<number | void>,
): Promise<never> {
  let code: number | void;
  try {
    code = await body();
  } catch (e) {
    fail(name, e);
  }
  Deno.exit(code ?? 0);
}
