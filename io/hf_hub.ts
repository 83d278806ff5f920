/**
 * Conventions of the Hugging Face hub shared with its own clients: short
 * checkpoint names, the endpoint, the access token and the local cache
 * (`models--{owner}--{repo}/snapshots/<commit>/`), all read from the same
 * environment variables as `huggingface_hub`.
 *
 * @module
 */

import { joinPath } from "../base/files.ts";
import { environment, fileSizeSync, readTextSync } from "../base/disk.ts";
import { describe } from "../base/describe.ts";

/** Environment variables, e.g. base/disk.ts's `environment()`. */
export type Env = Readonly<Record<string, string | undefined>>;

/** The files that make up a checkpoint: its config and its weights. */
export const CHECKPOINT_FILES: readonly string[] = ["config.json", "model.safetensors"];

/** Short names of the GPT-2 checkpoints and the hub repos they live in. */
export const CHECKPOINT_ALIASES: Readonly<Record<string, string>> = {
  "gpt2": "openai-community/gpt2",
  "gpt2-medium": "openai-community/gpt2-medium",
  "gpt2-large": "openai-community/gpt2-large",
  "gpt2-xl": "openai-community/gpt2-xl",
  "distilgpt2": "distilbert/distilgpt2",
};

/** The public hub, used unless `HF_ENDPOINT` says otherwise. */
export const DEFAULT_ENDPOINT = "https://huggingface.co";

const REPO_ID = /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/;

/**
 * The hub repo of a checkpoint: a short name from
 * {@linkcode CHECKPOINT_ALIASES}, or a full `owner/repo` id returned as is.
 * Throws an error naming `name` otherwise.
 *
 * @example
 * ```ts
 * resolveRepo("gpt2"); // "openai-community/gpt2"
 * resolveRepo("sshleifer/tiny-gpt2"); // "sshleifer/tiny-gpt2"
 * ```
 */
export function resolveRepo(name: string): string {
  const alias = Object.hasOwn(CHECKPOINT_ALIASES, name) ? CHECKPOINT_ALIASES[name] : undefined;
  if (alias) return alias;
  if (typeof name === "string" && REPO_ID.test(name) && !name.includes("..")) return name;
  const known = Object.keys(CHECKPOINT_ALIASES).join(", ");
  throw new Error(
    `unknown checkpoint name ${describe(name)}: use one of ${known}, or a hub repo id "owner/repo"`,
  );
}

/** The hub to talk to: `HF_ENDPOINT`, else {@linkcode DEFAULT_ENDPOINT}, without a trailing slash. */
export function hubEndpoint(env: Env): string {
  return (env.HF_ENDPOINT || DEFAULT_ENDPOINT).replace(/\/+$/, "");
}

/**
 * URL of `file` in `repo` at `revision`:
 * `{endpoint}/{repo}/resolve/{revision}/{file}`.
 */
export function resolveUrl(endpoint: string, repo: string, revision: string, file: string): string {
  return `${endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${file}`;
}

/** `huggingface_hub`'s home: `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`. */
export function hfHome(env: Env): string | null {
  if (env.HF_HOME) return env.HF_HOME;
  if (env.XDG_CACHE_HOME) return joinPath(env.XDG_CACHE_HOME, "huggingface");
  const home = env.HOME || env.USERPROFILE;
  return home ? joinPath(home, ".cache", "huggingface") : null;
}

/** The hub cache: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `{hfHome}/hub`. */
export function hfHubCache(env: Env): string | null {
  const explicit = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  if (explicit) return explicit;
  const home = hfHome(env);
  return home ? joinPath(home, "hub") : null;
}

/**
 * The access token: `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else
 * the file `HF_TOKEN_PATH`, else `{hfHome}/token`, as written by
 * `huggingface-cli login`. `undefined` when there is none.
 */
export function hfToken(env: Env): string | undefined {
  const fromEnv = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (fromEnv) return fromEnv.trim() || undefined;
  const home = hfHome(env);
  const path = env.HF_TOKEN_PATH || (home ? joinPath(home, "token") : null);
  if (!path) return undefined;
  try {
    return readTextSync(path)?.trim() || undefined;
  } catch (error) {
    throw new Error(`could not read the Hugging Face token file ${path}: ${error}`, {
      cause: error,
    });
  }
}

/**
 * Looks for a checkpoint of `repo` in the local Hugging Face cache: the
 * folder `models--{owner}--{repo}/snapshots/<commit>/` of the hub cache
 * ({@linkcode hfHubCache}), where `<commit>` is read from `refs/{revision}`
 * (or is `revision` itself when that is a commit hash). Returns the folder
 * when it holds every file of {@linkcode CHECKPOINT_FILES} (symlinks into
 * `blobs/` are followed), else `null`.
 */
export function findInHfCache(
  repo: string,
  env: Env = environment(),
  revision = "main",
): string | null {
  const cache = hfHubCache(env);
  if (!cache) return null;
  const repoDir = joinPath(cache, `models--${repo.replaceAll("/", "--")}`);
  const commit = /^[0-9a-f]{40}$/.test(revision)
    ? revision
    : readOptional(joinPath(repoDir, "refs", revision))?.trim();
  if (!commit || commit.includes("/") || commit.includes("..")) return null;
  const snapshot = joinPath(repoDir, "snapshots", commit);
  return CHECKPOINT_FILES.every((file) => isFile(joinPath(snapshot, file))) ? snapshot : null;
}

function readOptional(path: string): string | undefined {
  try {
    return readTextSync(path);
  } catch {
    return undefined;
  }
}

/** True when `path` is a regular file, or a symlink to one (links are followed). */
export function isFile(path: string): boolean {
  return fileSizeSync(path) !== null;
}
