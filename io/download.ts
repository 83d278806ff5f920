/**
 * Downloads a GPT-2 checkpoint (`config.json` and `model.safetensors`) from
 * the Hugging Face hub the way its own client does: reuse the local HF cache
 * when it has the files, else HEAD each file for its size and sha256, fetch
 * it into `<file>.incomplete` (resuming with a `Range` request), verify it,
 * and only then rename it to its final name.
 *
 * @module
 */

import type { Hash } from "node:crypto";
import { baseName, dirName, joinPath } from "../base/files.ts";
import {
  environment,
  fileChunks,
  fileSizeSync,
  makeDirs,
  openForWriting,
  removeFile,
  renameFile,
  stderrIsTerminal,
} from "../base/disk.ts";
import { clip } from "../base/describe.ts";
import { ProgressBar } from "./progress_bar.ts";
import {
  CHECKPOINT_FILES,
  type Env,
  findInHfCache,
  hfToken,
  hubEndpoint,
  isFile,
  resolveRepo,
  resolveUrl,
} from "./hf_hub.ts";

export { findInHfCache, resolveRepo };

/** Options of {@linkcode downloadCheckpoint}. */
export interface DownloadOptions {
  /** Folder for the files; default `data/<name>`. */
  dest?: string;
  /** Hub URL; default `HF_ENDPOINT`, else `https://huggingface.co`. */
  endpoint?: string;
  /** Access token; default `HF_TOKEN`, else the token file of `huggingface-cli login`. */
  token?: string;
  /** Branch, tag or commit; default `main`. */
  revision?: string;
  /**
   * Called as bytes arrive; `total` is 0 when unknown. Without it, a
   * progress bar is drawn on standard error when that is a terminal.
   */
  progress?: (file: string, done: number, total: number) => void;
  /** The `fetch` to use; default the global one. */
  fetch?: typeof fetch;
  /** Environment variables to read; default the process's (base/disk.ts). */
  env?: Env;
  /** Aborts the download; a partial file is kept for resuming. */
  signal?: AbortSignal;
}

/** What {@linkcode downloadCheckpoint} did. */
export interface DownloadResult {
  /** Folder holding `config.json` and `model.safetensors`. */
  dir: string;
  /** True when `dir` is a snapshot in the Hugging Face cache (nothing was copied). */
  fromCache: boolean;
  /** Files fetched by this call (empty when all were already there). */
  downloaded: string[];
}

/** Milliseconds to wait for the answer to a HEAD request. */
const HEAD_TIMEOUT_MS = 30_000;
/** Milliseconds without a single byte after which a transfer is given up. */
const STALL_TIMEOUT_MS = 60_000;
/** Redirects followed for one HEAD (renamed repos answer with a redirect). */
const MAX_REDIRECTS = 5;

/**
 * Fetches the checkpoint `name` (see {@linkcode resolveRepo}) and returns
 * the folder holding it. Files already in `dest` are kept as they are (only
 * verified files are ever moved there); when some are missing, a complete
 * snapshot in the local Hugging Face cache is used in place, without
 * copying. A failed or interrupted download never leaves a file under its
 * final name: its bytes stay in `<file>.incomplete`, and the next call
 * resumes from there.
 *
 * @example
 * ```ts
 * const { dir, fromCache } = await downloadCheckpoint("gpt2");
 * ```
 */
export async function downloadCheckpoint(
  name: string,
  opts: DownloadOptions = {},
): Promise<DownloadResult> {
  const repo = resolveRepo(name);
  const env = opts.env ?? environment();
  const revision = opts.revision ?? "main";
  const dest = opts.dest ?? joinPath("data", name);
  const missing = CHECKPOINT_FILES.filter((file) => !isFile(joinPath(dest, file)));
  if (missing.length === 0) return { dir: dest, fromCache: false, downloaded: [] };
  const cached = findInHfCache(repo, env, revision);
  if (cached) return { dir: cached, fromCache: true, downloaded: [] };

  const ctx: Context = {
    endpoint: (opts.endpoint ?? hubEndpoint(env)).replace(/\/+$/, ""),
    token: opts.token ?? hfToken(env),
    fetch: opts.fetch ?? fetch,
    progress: opts.progress,
    signal: opts.signal,
  };
  for (const file of missing) {
    await downloadFile(ctx, resolveUrl(ctx.endpoint, repo, revision, file), joinPath(dest, file));
  }
  return { dir: dest, fromCache: false, downloaded: missing };
}

/** What every request of one checkpoint download shares. */
interface Context {
  endpoint: string;
  token?: string;
  fetch: typeof fetch;
  progress?: (file: string, done: number, total: number) => void;
  signal?: AbortSignal;
}

/** Receives the progress of one file. */
interface Reporter {
  update(done: number, total: number): void;
  finish(): void;
}

/** A file as the hub describes it in answer to HEAD. */
interface RemoteFile {
  /** Where the bytes are (the CDN location for LFS files). */
  url: string;
  /** Size in bytes, when the hub says. */
  size?: number;
  /** Lowercase hex sha256 of the content; only LFS files have one. */
  sha256?: string;
}

/** HEADs `url`, downloads it resumably into `path.incomplete`, verifies it, renames it to `path`. */
async function downloadFile(ctx: Context, url: string, path: string): Promise<void> {
  const remote = await headFile(ctx, url);
  await makeDirs(dirName(path));
  const part = `${path}.incomplete`;
  let have = fileSize(part);
  if (remote.size !== undefined && have > remote.size) {
    await removeFile(part);
    have = 0;
  }
  const name = baseName(path);
  const got = remote.size !== undefined && have === remote.size
    ? { bytes: have, sha256: await hashFile(part) }
    : await fetchInto(ctx, remote, part, have, reporter(ctx, name));
  await verify(remote, part, name, got);
  await renameFile(part, path);
}

/** Progress to the caller's callback, else a bar when standard error is a terminal. */
function reporter(ctx: Context, file: string): Reporter {
  const { progress } = ctx;
  if (progress) return { update: (done, total) => progress(file, done, total), finish() {} };
  if (stderrIsTerminal()) return new ProgressBar(file);
  return { update() {}, finish() {} };
}

/**
 * HEAD without following redirects, as `huggingface_hub` does: an LFS file
 * answers 302 to its CDN location with `X-Linked-Etag` (its sha256) and
 * `X-Linked-Size`; a plain redirect (e.g. a renamed repo) is followed.
 * Other files answer 200 with a git `ETag`, which is not a content hash.
 */
async function headFile(ctx: Context, url: string): Promise<RemoteFile> {
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const res = await withTimer(ctx, HEAD_TIMEOUT_MS, (signal) =>
      request(ctx, url, {
        method: "HEAD",
        redirect: "manual",
        headers: { ...authHeaders(ctx, url), "accept-encoding": "identity" },
        signal,
      }));
    await res.body?.cancel();
    const linkedEtag = res.headers.get("x-linked-etag");
    const linkedSize = res.headers.get("x-linked-size");
    const location = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && location) {
      const next = new URL(location, url).href;
      if (linkedEtag || linkedSize) {
        return { url: next, size: parseSize(linkedSize), sha256: parseSha256(linkedEtag) };
      }
      url = next;
      continue;
    }
    if (!res.ok) throw hubError(res, url);
    const size = parseSize(linkedSize ?? res.headers.get("content-length"));
    return { url, size, sha256: parseSha256(linkedEtag) };
  }
  throw new Error(`too many redirects for ${url}`);
}

/**
 * GETs the file from byte `have` on (a `Range` request) and appends it to
 * `part`, hashing the bytes already there first. Starts over from byte 0
 * when the server ignores the range or refuses it.
 */
async function fetchInto(
  ctx: Context,
  remote: RemoteFile,
  part: string,
  have: number,
  report: Reporter,
): Promise<Written> {
  const hashOfPart = await sha256();
  if (have > 0) await hashInto(hashOfPart, part);
  return withTimer(ctx, STALL_TIMEOUT_MS, async (signal, touch) => {
    let res = await get(ctx, remote.url, have, signal);
    let start = await rangeStart(res, remote.url, have);
    if (start === null) {
      await removeFile(part);
      res = await get(ctx, remote.url, 0, signal);
      start = (await rangeStart(res, remote.url, 0)) ?? 0;
    }
    const hash = start > 0 ? hashOfPart : await sha256();
    const total = remote.size ?? contentLength(res, start);
    report.update(start, total);
    try {
      const bytes = await appendBody(res, part, start, (chunk, done) => {
        touch();
        hash.update(chunk);
        report.update(done, total);
      });
      return { bytes, sha256: hash.digest("hex") };
    } catch (error) {
      if (ctx.signal?.aborted) throw error;
      throw new Error(
        `download of ${remote.url} was interrupted at ${fileSize(part)} of ${total || "?"} ` +
          `bytes (${errorMessage(error)}); run again to resume from ${part}`,
        { cause: error },
      );
    } finally {
      report.finish();
    }
  });
}

/** GET `url` from byte `from` on (with a `Range` header when `from` > 0). */
function get(ctx: Context, url: string, from: number, signal: AbortSignal): Promise<Response> {
  const range = from > 0 ? { range: `bytes=${from}-` } : undefined;
  return request(ctx, url, {
    headers: { ...authHeaders(ctx, url), "accept-encoding": "identity", ...range },
    signal,
  });
}

/** Bytes now in the part file and their sha256 (lowercase hex). */
interface Written {
  bytes: number;
  sha256: string;
}

/**
 * Where the body of `res` starts in the file: `have` for a matching 206, 0
 * when the server sent the whole file (200), `null` when the part file
 * must be dropped and the request repeated without a range (416, or a 206
 * for another range). Throws for other statuses.
 */
async function rangeStart(res: Response, url: string, have: number): Promise<number | null> {
  if (res.status === 206) {
    const match = /^bytes (\d+)-/.exec(res.headers.get("content-range") ?? "");
    if (match && Number(match[1]) === have) return have;
    await res.body?.cancel();
    if (have === 0) throw new Error(`${url}: bad Content-Range for a full download`);
    return null;
  }
  if (res.ok) return 0;
  await res.body?.cancel();
  if (res.status === 416 && have > 0) return null;
  throw hubError(res, url);
}

/** Total size from a GET answer: `Content-Length` plus the skipped bytes, or 0 when unknown. */
function contentLength(res: Response, start: number): number {
  const length = parseSize(res.headers.get("content-length"));
  return length === undefined ? 0 : start + length;
}

/**
 * Streams the body of `res` into `part`: appended after `start` bytes, or
 * replacing the file when `start` is 0. Returns the file's size after.
 */
async function appendBody(
  res: Response,
  part: string,
  start: number,
  onChunk: (chunk: Uint8Array, done: number) => void,
): Promise<number> {
  if (!res.body) throw new Error(`${res.url}: the response has no body`);
  const file = await openForWriting(part, start > 0);
  let done = start;
  try {
    for await (const chunk of res.body) {
      await file.write(chunk);
      done += chunk.length;
      onChunk(chunk, done);
    }
  } catch (error) {
    await res.body.cancel().catch(() => {});
    throw error;
  } finally {
    file.close();
  }
  return done;
}

/**
 * Checks the size and, for LFS files, the sha256 of a finished part file.
 * A short file is kept for resuming; a wrong one is deleted.
 */
async function verify(remote: RemoteFile, part: string, file: string, got: Written) {
  const { size, sha256 } = remote;
  if (size !== undefined && got.bytes < size) {
    throw new Error(
      `download of ${remote.url} ended early at ${got.bytes} of ${size} bytes; ` +
        `run again to resume from ${part}`,
    );
  }
  if (size !== undefined && got.bytes > size) {
    await removeFile(part);
    throw new Error(`${file}: got ${got.bytes} bytes but the hub says ${size}; deleted ${part}`);
  }
  if (sha256 !== undefined && got.sha256 !== sha256) {
    await removeFile(part);
    throw new Error(
      `sha256 mismatch for ${file}: expected ${sha256}, got ${got.sha256}; ` +
        `deleted the corrupt download ${part}`,
    );
  }
}

/**
 * `fetch` that turns a network failure into an error naming the URL. An
 * abort by the caller's signal is passed on unchanged.
 */
async function request(ctx: Context, url: string, init: RequestInit): Promise<Response> {
  try {
    return await ctx.fetch(url, init);
  } catch (error) {
    if (ctx.signal?.aborted) throw error;
    throw new Error(`could not fetch ${url}: ${errorMessage(error)}`, { cause: error });
  }
}

/** `Authorization` for the hub itself; never sent to another origin such as a CDN. */
function authHeaders(ctx: Context, url: string): Record<string, string> {
  if (!ctx.token || new URL(url).origin !== new URL(ctx.endpoint).origin) return {};
  return { authorization: `Bearer ${ctx.token}` };
}

/** An error for a failed hub answer, with the hub's own explanation when it gives one. */
function hubError(res: Response, url: string): Error {
  const hints: Record<number, string> = {
    401: "the repo is private or gated, or the token is invalid: set HF_TOKEN",
    403: "access denied: for a gated repo, accept its terms on the hub and set HF_TOKEN",
    404: "not found: check the checkpoint name, the revision and the endpoint",
  };
  const detail = clip(res.headers.get("x-error-message") ?? hints[res.status] ?? "", 200);
  const status = `${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;
  return new Error(`${url}: HTTP ${status}${detail ? ` (${detail})` : ""}`);
}

/**
 * Runs `fn` with a signal that aborts when `ms` pass without a call to
 * `touch`, or when the caller's signal aborts.
 */
async function withTimer<T>(
  ctx: Context,
  ms: number,
  fn: (signal: AbortSignal, touch: () => void) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  let last = performance.now();
  const check = setInterval(() => {
    if (performance.now() - last >= ms) {
      controller.abort(new Error(`no data from the server for ${ms / 1000} s`));
    }
  }, Math.min(ms, 1000));
  const onAbort = () => controller.abort(ctx.signal?.reason);
  ctx.signal?.addEventListener("abort", onAbort);
  if (ctx.signal?.aborted) onAbort();
  try {
    return await fn(controller.signal, () => (last = performance.now()));
  } finally {
    clearInterval(check);
    ctx.signal?.removeEventListener("abort", onAbort);
  }
}

/** Feeds the bytes of the file at `path` to `hash`. */
async function hashInto(hash: Hash, path: string): Promise<void> {
  for await (const chunk of fileChunks(path)) hash.update(chunk);
}

/**
 * A new sha256 hash. `node:crypto` is imported here, on first use, so that a page bundle of
 * the modules above (which never downloads) imports no `node:` module.
 */
async function sha256(): Promise<Hash> {
  const { createHash } = await import("node:crypto");
  return createHash("sha256");
}

async function hashFile(path: string): Promise<string> {
  const hash = await sha256();
  await hashInto(hash, path);
  return hash.digest("hex");
}

/** The sha256 in an `X-Linked-Etag` (quoted, maybe weak), if it is one. */
function parseSha256(etag: string | null): string | undefined {
  const value = etag?.replace(/^W\//, "").replaceAll('"', "").trim().toLowerCase();
  return value && /^[0-9a-f]{64}$/.test(value) ? value : undefined;
}

function parseSize(value: string | null): number | undefined {
  return value !== null && /^\d+$/.test(value.trim()) ? Number(value) : undefined;
}

function fileSize(path: string): number {
  return fileSizeSync(path) ?? 0;
}

/** The message of `error` and of its causes, e.g. `fetch failed: ... dns error: ...`. */
function errorMessage(error: unknown): string {
  const parts: string[] = [];
  for (let e = error; e !== undefined && parts.length < 4; e = (e as Error).cause) {
    parts.push(e instanceof Error ? e.message : String(e));
    if (!(e instanceof Error)) break;
  }
  return parts.join(": ");
}
