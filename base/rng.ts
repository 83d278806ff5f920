/**
 * The seeded random number generator every layer shares (sampling, random weights, training
 * batches, fuzz cases).
 *
 * @module
 */
/**
 * Seeded pseudo-random number generator: xoshiro128** (Blackman & Vigna).
 * Its 128-bit state is filled from the seed by a splitmix-style generator
 * (a golden-ratio counter through the MurmurHash3 finaliser, a bijection, so
 * the four words differ and are never all zero). The same seed always gives
 * the same sequence.
 *
 * @example
 * ```ts
 * const rng = new Rng(42);
 * rng.next(); // a number in [0, 1)
 * ```
 */
export class Rng {
  readonly #s = new Uint32Array(4);

  /** Creates a generator from `seed`, a safe integer (negative allowed). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`Rng: seed must be a safe integer, got ${seed}`);
    }
    // Both 32-bit halves of the seed feed splitmix32, so 1 and 2**32 + 1 differ.
    let x = (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) >>> 0, 0x85ebca6b);
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.#s[i] = z ^ (z >>> 16);
    }
  }

  /**
   * A generator that starts from the raw xoshiro128** `state` (four 32-bit
   * words, not all zero), e.g. to check against reference test vectors.
   */
  static fromState(state: readonly [number, number, number, number]): Rng {
    if (state.length !== 4 || state.every((w) => (w >>> 0) === 0)) {
      throw new RangeError("Rng.fromState: state must be four 32-bit words, not all zero");
    }
    const rng = new Rng(0);
    rng.#s.set(state.map((w) => w >>> 0));
    return rng;
  }

  /** The four words of xoshiro128** state (a copy), e.g. for a sampler on the GPU to go on from. */
  state(): [number, number, number, number] {
    const [a, b, c, d] = this.#s;
    return [a, b, c, d];
  }

  /** Goes on from `state`, the words a sampler elsewhere (the GPU's) left after its draws. */
  setState(state: ArrayLike<number>): void {
    if (state.length !== 4) throw new RangeError("Rng.setState: state must be four 32-bit words");
    this.#s.set(Array.from(state, (w) => w >>> 0));
  }

  /** Next 32-bit unsigned integer of the xoshiro128** sequence. */
  nextUint32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Next number, uniform in [0, 1), with 32 random bits. */
  next(): number {
    return this.nextUint32() / 2 ** 32;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
