/**
 * Training text: a file read whole, its verified hash when it is a known dataset, the
 * nanoGPT split (first 90% trains, last 10% validates) and batches of random windows.
 *
 * @module
 */
import { isNotFound, readBytes } from "../base/files.ts";
import { Rng } from "../base/rng.ts";
import type { Tokenizer } from "../tokenizers/tokenizer.ts";

/** Tiny Shakespeare (karpathy/char-rnn), shipped in data/tinyshakespeare/. */
export const TINY_SHAKESPEARE = {
  path: "data/tinyshakespeare/input.txt",
  bytes: 1_115_394,
  sha256: "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
};

/** A text split into training and validation ids. */
export interface Dataset {
  readonly train: Uint32Array;
  readonly val: Uint32Array;
}

/**
 * Reads `path` as UTF-8; the shipped Tiny Shakespeare must match its sha256. An empty or
 * missing file is an error naming it.
 */
export async function readText(path: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await readBytes(path);
  } catch (e) {
    const why = isNotFound(e) ? "not found" : (e as Error).message;
    throw new Error(`${path}: ${why}`);
  }
  if (bytes.length === 0) throw new Error(`${path}: the file is empty`);
  if (samePath(path, TINY_SHAKESPEARE.path)) {
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>),
    );
    const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
    if (hex !== TINY_SHAKESPEARE.sha256) {
      throw new Error(
        `${path}: sha256 ${hex} is not Tiny Shakespeare's ${TINY_SHAKESPEARE.sha256}`,
      );
    }
  }
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
}

/** Encodes `text` and splits it as nanoGPT does: the first 90% of ids train. */
export function splitDataset(text: string, tokenizer: Tokenizer): Dataset {
  const ids = Uint32Array.from(tokenizer.encode(text));
  const n = Math.floor(ids.length * 0.9);
  return { train: ids.subarray(0, n), val: ids.subarray(n) };
}

/**
 * B windows of T + 1 consecutive ids from random offsets of `data` (inputs and their next
 * tokens), drawn by `rng`.
 */
export function sampleBatch(data: Uint32Array, B: number, T: number, rng: Rng): number[][] {
  if (data.length < T + 1) {
    throw new RangeError(`a split of ${data.length} tokens is shorter than one window of ${T + 1}`);
  }
  return Array.from({ length: B }, () => {
    const i = Math.floor(rng.next() * (data.length - T));
    return [...data.subarray(i, i + T + 1)];
  });
}

/** The generator of iteration `it`'s batch: a pure function of the seed, so a resumed run
 * draws the same batches as one that never stopped. */
export function batchRng(seed: number, it: number, stream = 0): Rng {
  return new Rng(seed * 1_000_003 + it * 4 + stream);
}

function samePath(a: string, b: string): boolean {
  const norm = (p: string) => p.replace(/^\.\//, "");
  return norm(a) === norm(b);
}
