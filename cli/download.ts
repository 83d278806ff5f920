/**
 * Downloads a GPT-2 checkpoint from the Hugging Face hub.
 *
 * ```sh
 * deno task download [name] [--dest DIR] [--revision REV]
 * ```
 *
 * Exit codes: 0 done, 1 download failed, 2 bad usage.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { downloadCheckpoint, resolveRepo } from "../io/download.ts";
import { CHECKPOINT_ALIASES, type Env } from "../io/hf_hub.ts";

/** The help text. */
export const USAGE = `Usage: deno task download [name] [--dest DIR] [--revision REV]

Fetches config.json and model.safetensors of a GPT-2 checkpoint into DIR
(default data/<name>), or finds them in the local Hugging Face cache.

  name            ${Object.keys(CHECKPOINT_ALIASES).join(", ")} (default gpt2),
                  or a hub repo id such as openai-community/gpt2
  --dest DIR      where to put the files
  --revision REV  branch, tag or commit (default main)
  -h, --help      show this help

Environment: HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_CACHE as in huggingface_hub.`;

/** Where {@linkcode main} reads its environment and writes its messages. */
export interface CliIo {
  /** Environment variables; default `Deno.env.toObject()`. */
  env?: Env;
  /** Prints a line of normal output; default `console.log`. */
  log?: (line: string) => void;
  /** Prints a line of error output; default `console.error`. */
  error?: (line: string) => void;
}

/** Runs the command with `args`; returns the exit code. */
export async function main(args: string[], io: CliIo = {}): Promise<number> {
  const log = io.log ?? console.log;
  const error = io.error ?? console.error;
  const parsed = parse(args);
  if (typeof parsed === "string") {
    error(`error: ${parsed}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.help) {
    log(USAGE);
    return 0;
  }
  const { name, dest, revision } = parsed;
  try {
    const { dir, fromCache, downloaded } = await downloadCheckpoint(name, {
      dest,
      revision,
      env: io.env,
      progress: Deno.stderr.isTerminal() ? undefined : tenPercentSteps(error),
    });
    const repo = resolveRepo(name);
    if (fromCache) log(`Using ${repo} from the Hugging Face cache (not copied): ${dir}`);
    else if (downloaded.length === 0) log(`${repo} is already in ${dir}`);
    else log(`Downloaded ${downloaded.join(" and ")} of ${repo} into ${dir}`);
    return 0;
  } catch (e) {
    error(`error: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
}

/** Parsed arguments, or the usage error as a string. */
function parse(
  args: string[],
): { name: string; dest?: string; revision?: string; help: boolean } | string {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args,
      options: {
        dest: { type: "string" },
        revision: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  if (positionals.length > 1) return `expected one checkpoint name, got ${positionals.join(" ")}`;
  const name = positionals[0] ?? "gpt2";
  try {
    resolveRepo(name);
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  if (values.dest === "") return "--dest must not be empty";
  if (values.revision === "") return "--revision must not be empty";
  return { name, dest: values.dest, revision: values.revision, help: values.help ?? false };
}

/**
 * A progress callback for logs (standard error is not a terminal): one line
 * per file at every further 10%, so CI output stays short.
 */
function tenPercentSteps(print: (line: string) => void) {
  const reported = new Map<string, number>();
  return (file: string, done: number, total: number) => {
    if (!(total > 0)) return;
    const step = Math.floor((done / total) * 10);
    if (step <= (reported.get(file) ?? -1)) return;
    reported.set(file, step);
    print(`${file}: ${step * 10}% of ${(total / 1e6).toFixed(1)} MB`);
  };
}

if (import.meta.main) Deno.exit(await main(Deno.args));
