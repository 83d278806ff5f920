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

import { downloadCheckpoint, resolveRepo } from "../io/download.ts";
import { CHECKPOINT_ALIASES, type Env } from "../io/hf_hub.ts";
import { main, parseOptions, UsageError } from "./usage.ts";

/** The help text. */
export const USAGE = `usage: deno task download [name] [--dest DIR] [--revision REV]

Fetches config.json and model.safetensors of a GPT-2 checkpoint into DIR
(default data/<name>), or finds them in the local Hugging Face cache.

  name            ${Object.keys(CHECKPOINT_ALIASES).join(", ")} (default gpt2),
                  or a hub repo id such as openai-community/gpt2
  --dest DIR      where to put the files
  --revision REV  branch, tag or commit (default main)
  -h, --help      this text

Environment: HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_CACHE as in huggingface_hub.`;

/** Where {@linkcode download} reads its environment and writes its messages. */
export interface CliIo {
  /** Environment variables; default `Deno.env.toObject()`. */
  env?: Env;
  /** Prints a line of normal output; default `console.log`. */
  log?: (line: string) => void;
  /** Prints a progress line; default `console.error`. */
  error?: (line: string) => void;
}

/**
 * Downloads the checkpoint that `args` name. Bad arguments throw a {@linkcode UsageError};
 * a failed download throws its error.
 */
export async function download(args: string[], io: CliIo = {}): Promise<void> {
  const log = io.log ?? console.log;
  const { values, positionals } = parseOptions(USAGE, args, {
    dest: { type: "string" },
    revision: { type: "string" },
  }, true);
  if (positionals.length > 1) {
    throw new UsageError(`expected one checkpoint name, got "${positionals.join(" ")}"`);
  }
  const name = positionals[0] ?? "gpt2";
  try {
    resolveRepo(name);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  for (const flag of ["dest", "revision"] as const) {
    if (values[flag] === "") throw new UsageError(`--${flag}: must not be empty, got ""`);
  }
  const { dir, fromCache, downloaded } = await downloadCheckpoint(name, {
    dest: values.dest,
    revision: values.revision,
    env: io.env,
    progress: Deno.stderr.isTerminal() ? undefined : tenPercentSteps(io.error ?? console.error),
  });
  const repo = resolveRepo(name);
  if (fromCache) log(`Using ${repo} from the Hugging Face cache (not copied): ${dir}`);
  else if (downloaded.length === 0) log(`${repo} is already in ${dir}`);
  else log(`Downloaded ${downloaded.join(" and ")} of ${repo} into ${dir}`);
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

if (import.meta.main) main("download", () => download(Deno.args));
