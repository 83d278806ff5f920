/**
 * The Deno-only side of files, beside base/files.ts (which reads in Deno and in a page): what
 * the downloader and the HuggingFace cache lookup need, namely the environment, the terminal,
 * synchronous looks at small files, and a file written piece by piece. A page never downloads;
 * there each of these says so or answers "nothing" (no environment, no terminal, no file).
 *
 * @module
 */

type DenoLike = typeof Deno;

function denoApi(): DenoLike | undefined {
  const deno = (globalThis as { Deno?: DenoLike }).Deno;
  return typeof deno?.readFile === "function" ? deno : undefined;
}

function needDeno(what: string): DenoLike {
  const deno = denoApi();
  if (!deno) throw new Error(`${what}: needs Deno (a page does not write files)`);
  return deno;
}

/** The environment's variables (Deno's, when it may be read); empty in a page. */
export function environment(): Record<string, string> {
  return denoApi()?.env.toObject() ?? {};
}

/** True when standard error is a terminal (never in a page). */
export function stderrIsTerminal(): boolean {
  return denoApi()?.stderr.isTerminal() ?? false;
}

/** Writes bytes to standard error (nothing in a page). */
export function writeStderr(bytes: Uint8Array): number {
  return denoApi()?.stderr.writeSync(bytes) ?? bytes.length;
}

/** The text of a small file, or undefined when there is none; other errors throw. */
export function readTextSync(path: string): string | undefined {
  const deno = needDeno(path);
  try {
    return deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** Size of the file at `path` (links followed), or null when there is no regular file. */
export function fileSizeSync(path: string): number | null {
  const deno = denoApi();
  try {
    const info = deno?.statSync(path);
    return info?.isFile ? info.size : null;
  } catch {
    return null;
  }
}

/** Removes the file at `path`. */
export async function removeFile(path: string): Promise<void> {
  await needDeno(path).remove(path);
}

/** Renames `from` to `to`, replacing `to`. */
export async function renameFile(from: string, to: string): Promise<void> {
  await needDeno(from).rename(from, to);
}

/** Creates the folder `path` and its parents. */
export async function makeDirs(path: string): Promise<void> {
  await needDeno(path).mkdir(path, { recursive: true });
}

/** A file open for writing: every write writes all its bytes. */
export interface FileWriter {
  write(bytes: Uint8Array): Promise<void>;
  close(): void;
}

/** Opens `path` to append to it (`append`), or to replace its contents. */
export async function openForWriting(path: string, append: boolean): Promise<FileWriter> {
  const file = await needDeno(path).open(path, {
    write: true,
    create: true,
    append,
    truncate: !append,
  });
  return {
    async write(bytes) {
      for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
    },
    close: () => file.close(),
  };
}

/** The bytes of the file at `path`, chunk by chunk (the file is closed at the end). */
export async function* fileChunks(path: string): AsyncGenerator<Uint8Array> {
  const file = await needDeno(path).open(path);
  yield* file.readable;
}
