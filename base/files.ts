/**
 * The one source of bytes below cli/: every file the model, tokenizers, parity and training
 * read comes through here. In Deno it reads the disk (`Deno.readFile` and friends); in a page
 * it fetches the same relative paths from a base URL (the lab server, cli/lab.ts, serves the
 * checkpoint folders under their own names). Writing stays Deno-only: {@link writeFileAtomic}
 * and the few others at the end of this file.
 *
 * Paths are plain strings joined with "/" ({@link joinPath}), so the page needs no `node:path`.
 *
 * @module
 */

/** What {@link stat} says about a path (symbolic links followed). */
export interface FileInfo {
  isFile: boolean;
  isDirectory: boolean;
  /** Bytes, for a file. */
  size: number;
}

/** Options of {@link readBytes}. */
export interface ReadOptions {
  /** First byte to read; default 0. */
  offset?: number;
  /** Bytes to read from `offset`; default to the end of the file. */
  length?: number;
  /** Refuse a file (or range) longer than this, before reading it. */
  maxBytes?: number;
  /** Called as bytes arrive, with the bytes read so far and the total expected. */
  onProgress?: (loaded: number, total: number) => void;
}

/** Where bytes come from: the disk in Deno, an HTTP server in a page. */
export interface FileSource {
  /** A short name for messages: "disk" or the base URL. */
  readonly name: string;
  /** Facts about `path`; throws {@link FileNotFound} when it is absent. */
  stat(path: string): Promise<FileInfo>;
  /** The bytes of a regular file (a range of it with `offset`/`length`). */
  readBytes(path: string, options?: ReadOptions): Promise<Uint8Array>;
  /** Names of the regular files in a folder (links to files count), sorted. */
  readDir(path: string): Promise<string[]>;
}

/** Thrown when a path does not exist (on disk, or a 404 from the server). */
export class FileNotFound extends Error {
  override name = "FileNotFound";
}

/** True when `error` says that a file does not exist. */
export function isNotFound(error: unknown): boolean {
  return error instanceof FileNotFound;
}

/** Joins path parts with "/", dropping empty parts and doubled slashes (no `..` handling). */
export function joinPath(...parts: string[]): string {
  const joined = parts.filter((p) => p !== "").join("/");
  return joined.replace(/\/{2,}/g, "/");
}

/** The last part of a "/"-separated path. */
export function baseName(path: string): string {
  const parts = path.split("/").filter((p) => p !== "");
  return parts.length ? parts[parts.length - 1] : path;
}

/** The folder part of a "/"-separated path ("." when it has none). */
export function dirName(path: string): string {
  const at = path.replace(/\/+$/, "").lastIndexOf("/");
  if (at < 0) return ".";
  return at === 0 ? "/" : path.slice(0, at);
}

type DenoLike = typeof Deno;

/** Deno's namespace when this runs in Deno with its file API, else undefined. */
function denoApi(): DenoLike | undefined {
  const deno = (globalThis as { Deno?: DenoLike }).Deno;
  return typeof deno?.readFile === "function" ? deno : undefined;
}

/** Reads the disk through Deno. */
function diskSource(deno: DenoLike): FileSource {
  const wrap = (error: unknown): Error =>
    error instanceof deno.errors.NotFound
      ? new FileNotFound("not found", { cause: error })
      : error as Error;
  return {
    name: "disk",
    async stat(path) {
      try {
        const info = await deno.stat(path); // follows symlinks, as the hub cache needs
        return { isFile: info.isFile, isDirectory: info.isDirectory, size: info.size };
      } catch (error) {
        throw wrap(error);
      }
    },
    async readBytes(path, options = {}) {
      let file: Deno.FsFile | undefined;
      try {
        const info = await deno.stat(path);
        if (!info.isFile) throw new Error("not a regular file");
        const offset = options.offset ?? 0;
        const length = options.length ?? Math.max(0, info.size - offset);
        checkSize(length, options.maxBytes);
        file = await deno.open(path, { read: true });
        if (offset > 0) await file.seek(offset, deno.SeekMode.Start);
        const out = new Uint8Array(length);
        for (let at = 0; at < length;) {
          const n = await file.read(out.subarray(at));
          if (n === null) {
            throw new Error(
              `file ended after ${at} of ${length} bytes (its size was ${info.size})`,
            );
          }
          at += n;
          options.onProgress?.(at, length);
        }
        return out;
      } catch (error) {
        throw wrap(error);
      } finally {
        file?.close();
      }
    },
    async readDir(path) {
      const names: string[] = [];
      try {
        for await (const entry of deno.readDir(path)) {
          if (entry.isFile) names.push(entry.name);
          else if (entry.isSymlink) {
            try {
              if ((await deno.stat(joinPath(path, entry.name))).isFile) names.push(entry.name);
            } catch {
              // a dangling link is no file
            }
          }
        }
      } catch (error) {
        throw wrap(error);
      }
      return names.sort();
    },
  };
}

function checkSize(length: number, maxBytes: number | undefined): void {
  if (maxBytes !== undefined && length > maxBytes) {
    throw new Error(`${length} bytes, more than the ${maxBytes} allowed`);
  }
}

/**
 * Reads over HTTP from `base`: a file is `GET base + path` (a range with a `Range` header), its
 * size from a `HEAD`, and a folder's files from `GET base + path + "/"` as a JSON array of
 * names, as cli/lab.ts serves them.
 */
export function fetchSource(base: string | URL): FileSource {
  const url = (path: string) => new URL(path.replace(/^\.\//, ""), base);
  const failed = (response: Response): Error =>
    response.status === 404
      ? new FileNotFound("not found")
      : new Error(`HTTP ${response.status} ${response.statusText}`);
  return {
    name: String(base),
    async stat(path) {
      const response = await fetch(url(path), { method: "HEAD" });
      if (!response.ok) throw failed(response);
      const folder = response.headers.get("content-type")?.startsWith("application/json") &&
        response.headers.get("x-kvgpt-folder") === "1";
      const size = Number(response.headers.get("content-length") ?? 0);
      return { isFile: !folder, isDirectory: !!folder, size };
    },
    async readBytes(path, options = {}) {
      const headers: Record<string, string> = {};
      const offset = options.offset ?? 0;
      if (options.offset !== undefined || options.length !== undefined) {
        const last = options.length === undefined ? "" : String(offset + options.length - 1);
        if (options.length === 0) return new Uint8Array(0);
        headers.range = `bytes=${offset}-${last}`;
      }
      const response = await fetch(url(path), { headers });
      if (!response.ok) throw failed(response);
      const total = Number(response.headers.get("content-length") ?? NaN);
      if (Number.isFinite(total)) checkSize(total, options.maxBytes);
      if (!response.body) return new Uint8Array(await response.arrayBuffer());
      // With a known length the bytes go straight into one buffer (a 500 MB checkpoint is
      // not held twice); else chunks are joined at the end.
      const reader = response.body.getReader();
      const known = Number.isFinite(total);
      let out = new Uint8Array(known ? total : 0);
      const chunks: Uint8Array[] = [];
      let loaded = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (
          (options.maxBytes !== undefined && loaded + value.length > options.maxBytes) ||
          (known && loaded + value.length > total)
        ) {
          await reader.cancel();
          checkSize(loaded + value.length, known ? total : options.maxBytes);
        }
        if (known) out.set(value, loaded);
        else chunks.push(value);
        loaded += value.length;
        options.onProgress?.(loaded, known ? total : loaded);
      }
      if (known && loaded !== total) throw new Error(`got ${loaded} of ${total} bytes`);
      if (!known) {
        out = new Uint8Array(loaded);
        let at = 0;
        for (const chunk of chunks) {
          out.set(chunk, at);
          at += chunk.length;
        }
      }
      if (options.length !== undefined && out.length !== options.length) {
        throw new Error(`got ${out.length} of ${options.length} bytes`);
      }
      return out;
    },
    async readDir(path) {
      const response = await fetch(url(path.replace(/\/*$/, "/")));
      if (!response.ok) throw failed(response);
      const names = await response.json();
      if (!Array.isArray(names) || !names.every((n) => typeof n === "string")) {
        throw new Error("the folder listing is not a list of names");
      }
      return names.sort();
    },
  };
}

let current: FileSource | undefined;

/** The source in use: the disk in Deno, else the page's own folder over HTTP. */
export function fileSource(): FileSource {
  if (current) return current;
  const deno = denoApi();
  const location = (globalThis as { location?: { href: string } }).location;
  current = deno ? diskSource(deno) : fetchSource(new URL("./", location?.href ?? "http://x/"));
  return current;
}

/** Makes `source` the one every read goes through (a page sets its server's base URL). */
export function setFileSource(source: FileSource): void {
  current = source;
}

/** Bytes of the file at `path` through the current source. */
export function readBytes(path: string, options?: ReadOptions): Promise<Uint8Array> {
  return fileSource().readBytes(path, options);
}

/** The file at `path` as UTF-8 text (a byte-order mark kept as it is). */
export async function readText(path: string, options?: ReadOptions): Promise<string> {
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(await readBytes(path, options));
}

/** Facts about `path`; throws {@link FileNotFound} when it is absent. */
export function stat(path: string): Promise<FileInfo> {
  return fileSource().stat(path);
}

/** True when `path` exists (any kind of entry the source can see). */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Names of the regular files in the folder `path`, sorted. */
export function readDir(path: string): Promise<string[]> {
  return fileSource().readDir(path);
}

/** Deno's API, or an error saying that writing files needs Deno. */
function denoForWriting(what: string): DenoLike {
  const deno = denoApi();
  if (!deno) throw new Error(`${what}: writing files needs Deno (a page only reads)`);
  return deno;
}

/**
 * Writes `bytes` to `path` through a temporary file renamed into place, so that a reader
 * sees the old file or the new one, never half of one. Deno only.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const deno = denoForWriting(path);
  const temp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    await deno.writeFile(temp, bytes);
    await deno.rename(temp, path);
  } catch (error) {
    await deno.remove(temp).catch(() => {});
    throw error;
  }
}

/** Creates the folder `path` and its parents. Deno only. */
export async function makeDir(path: string): Promise<void> {
  await denoForWriting(path).mkdir(path, { recursive: true });
}

/**
 * True when this process may read `path` (any file, without one) or, for "env", the
 * environment, without asking: Deno's permission state. A page may read what its server
 * offers and has no environment.
 */
export function permitted(name: "read" | "env", path?: string): boolean {
  const deno = denoApi();
  if (!deno) return name === "read";
  const descriptor: Deno.PermissionDescriptor = name === "read" ? { name, path } : { name };
  return deno.permissions.querySync(descriptor).state === "granted";
}
