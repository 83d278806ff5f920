/**
 * The sliding window that lets generation and chat go on past the model's context: when the
 * sequence would not fit, keep its first `sinks` tokens and its last `recent` ones, drop the
 * middle, and go on. Two ways to treat the cache when it slides:
 *
 * - `recompute`: the kept tokens are prefilled again at positions 0.. (one prefill per slide).
 *   The model sees a plain stretch of text, as nanoGPT's `sample.py` does when it crops the
 *   input to the context.
 * - `sinks` (StreamingLLM): the kept rows stay cached with the K/V computed at their old
 *   positions ({@link KVCache.evict}); nothing is prefilled again.
 *
 * @module
 */
import type { KVCache } from "../model/kv_cache.ts";

/** What the window keeps when it slides: the first `sinks` tokens and the last `recent`. */
export interface SlidingWindow {
  sinks: number;
  recent: number;
}

/** What a slide does to the cache: prefill the kept tokens again, or keep their rows. */
export type WindowMode = "recompute" | "sinks";

/**
 * Throws unless a sliding window fits a context of `nPositions`: the sinks and the recent
 * tokens it keeps must leave room for the token being fed.
 */
export function checkWindow(window: SlidingWindow, nPositions: number): void {
  if (window.sinks + window.recent >= nPositions - 1) {
    throw new RangeError(
      `window: sinks + recent (${window.sinks} + ${window.recent}) must leave room in the ` +
        `context (${nPositions} positions)`,
    );
  }
}

/**
 * The window chat and generate use unless told otherwise: `sinks` tokens kept at the front
 * (the system prompt, if any) and recent tokens up to three quarters of the context, so a
 * slide happens about every quarter context. Null when the sinks leave no room for any.
 */
export function defaultWindow(nPositions: number, sinks: number): SlidingWindow | null {
  const window = { sinks, recent: Math.floor((3 * nPositions) / 4) - sinks };
  if (window.recent < 1 || sinks + window.recent >= nPositions - 1) return null;
  return window;
}

/** A slide: the sequence the model now sees, and how many tokens left it. */
export interface Slide {
  /** The kept tokens: the first `sinks`, then the last ones (the unfed tail included). */
  history: number[];
  /** Tokens dropped from the middle. */
  dropped: number;
}

/**
 * Slides the window when `history` (the cached tokens, then the unfed tail) no longer fits
 * the context with one position kept free; null when it still fits. The first `sinks` and
 * the last `recent` cached tokens stay (fewer when the unfed tail needs the room). With
 * `recompute` the cache is emptied: the caller feeds the kept tokens again. With `sinks`
 * the kept rows move together in the cache.
 */
export function slideWindow(
  history: readonly number[],
  cache: KVCache,
  window: SlidingWindow,
  nPositions: number,
  mode: WindowMode,
): Slide | null {
  const limit = nPositions - 1;
  if (history.length <= limit) return null;
  const { sinks } = window;
  const cached = cache.length;
  const unfed = history.length - cached;
  const recent = Math.min(window.recent, limit - sinks - unfed);
  let dropped = cached - sinks - recent;
  if (mode === "sinks") dropped = cache.evict(sinks, recent);
  else cache.reset();
  return {
    history: [...history.slice(0, sinks), ...history.slice(cached - recent)],
    dropped,
  };
}
