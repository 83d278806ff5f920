/**
 * A one-line terminal progress bar for downloads: bytes done, percentage and
 * speed, redrawn in place with a carriage return.
 *
 * @module
 */
import { writeStderr } from "../base/disk.ts";

const MB = 1e6;

/** Picks kB, MB or GB so that `bytes` reads well. */
function unitFor(bytes: number): [name: string, size: number] {
  if (bytes >= 1e9) return ["GB", 1e9];
  if (bytes >= MB) return ["MB", MB];
  return ["kB", 1e3];
}

/**
 * One progress line, e.g.
 * `model.safetensors [########------------]  40.2%  210.3/523.7 MB  31.4 MB/s`
 * (sizes in kB, MB or GB, whichever suits the total).
 * `total` 0 means unknown: the bar and percentage are left out.
 */
export function formatProgress(
  label: string,
  done: number,
  total: number,
  bytesPerSecond: number,
  width = 20,
): string {
  const speed = `${(bytesPerSecond / MB).toFixed(1)} MB/s`;
  if (!(total > 0)) {
    const [unit, size] = unitFor(done);
    return `${label}  ${(done / size).toFixed(1)} ${unit}  ${speed}`;
  }
  const fraction = Math.min(1, done / total);
  const filled = Math.round(fraction * width);
  const bar = "#".repeat(filled) + "-".repeat(width - filled);
  const percent = `${(fraction * 100).toFixed(1)}%`.padStart(6);
  const [unit, size] = unitFor(total);
  const sizes = `${(done / size).toFixed(1)}/${(total / size).toFixed(1)} ${unit}`;
  return `${label} [${bar}] ${percent}  ${sizes}  ${speed}`;
}

/** Anything with a synchronous write, like `Deno.stderr`. */
export interface SyncWriter {
  /** Writes some of `p`; returns how many bytes were written. */
  writeSync(p: Uint8Array): number;
}

/**
 * Draws {@linkcode formatProgress} lines to a terminal, at most every
 * `intervalMs` milliseconds, and ends the line on {@linkcode ProgressBar.finish}.
 * The speed counts only the bytes seen since the first update, so a resumed
 * download reports its real rate.
 */
export class ProgressBar {
  readonly #label: string;
  readonly #out: SyncWriter;
  readonly #intervalMs: number;
  #start = -1;
  #startBytes = 0;
  #lastDraw = -Infinity;
  #last: [number, number] = [0, 0];

  /** A bar labelled `label`, drawn to `out` (default: standard error). */
  constructor(label: string, out: SyncWriter = { writeSync: writeStderr }, intervalMs = 100) {
    this.#label = label;
    this.#out = out;
    this.#intervalMs = intervalMs;
  }

  /** Records progress; redraws when enough time has passed. */
  update(done: number, total: number): void {
    const now = performance.now();
    if (this.#start < 0) {
      this.#start = now;
      this.#startBytes = done;
    }
    this.#last = [done, total];
    if (now - this.#lastDraw >= this.#intervalMs) this.#draw(now);
  }

  /** Draws the last state once more and moves to the next line. */
  finish(): void {
    if (this.#start < 0) return;
    this.#draw(performance.now());
    this.#write("\n");
  }

  #draw(now: number): void {
    this.#lastDraw = now;
    const [done, total] = this.#last;
    const seconds = (now - this.#start) / 1000;
    const rate = seconds > 0 ? (done - this.#startBytes) / seconds : 0;
    // \x1b[K clears what is left of a longer previous line.
    this.#write(`\r${formatProgress(this.#label, done, total, rate)}\x1b[K`);
  }

  #write(text: string): void {
    const bytes = new TextEncoder().encode(text);
    let offset = 0;
    while (offset < bytes.length) offset += this.#out.writeSync(bytes.subarray(offset));
  }
}
