/**
 * Cache policies chosen by one option: how a generation's KV cache is allocated, stored and
 * bounded, from a short spec such as `int8` or `window:4,60`. Every policy runs on the same
 * kernels; only the cache's buffers and what `generate` does when the cache is full differ.
 *
 * @module
 */
import type { KVCacheOptions } from "../model/kv_cache.ts";

/** The policies by name; `window:S,R` takes its sinks and recent sizes. */
export const CACHE_POLICIES = ["preallocated", "grow", "f16", "int8", "window:S,R"] as const;

/** A parsed cache policy: options for `model.newCache` and, for a window, for `generate`. */
export interface CachePolicy {
  /** The spec it was parsed from. */
  readonly name: string;
  readonly cache: KVCacheOptions;
  readonly window?: { sinks: number; recent: number };
}

/**
 * Parses `preallocated` (one f32 allocation for the whole context), `grow` (f32, doubling on
 * demand), `f16`, `int8` (preallocated, quantized) or `window:S,R` (preallocated f32; when
 * full keep the first S and last R tokens).
 */
export function parseCachePolicy(spec: string): CachePolicy {
  const name = spec.trim();
  switch (name) {
    case "preallocated":
      return { name, cache: { policy: "preallocate" } };
    case "grow":
      return { name, cache: { policy: "grow", growthFactor: 2 } };
    case "f16":
    case "int8":
      return { name, cache: { dtype: name } };
  }
  const m = /^window:(\d+),(\d+)$/.exec(name);
  if (m && Number(m[2]) >= 1) {
    return { name, cache: { policy: "preallocate" }, window: { sinks: +m[1], recent: +m[2] } };
  }
  throw new RangeError(
    `cache policy "${spec}": expected one of ${CACHE_POLICIES.join(", ")} (e.g. window:4,60)`,
  );
}
