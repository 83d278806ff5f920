/**
 * The one measure every comparison in kvgpt reports: parity with HuggingFace, gradcheck
 * against PyTorch, and the tests.
 *
 * @module
 */

/**
 * Largest |a[i] - b[i]| over two arrays. Arrays of different lengths, or a NaN on either side
 * where the other holds a number, count as an infinite difference, so no such mismatch passes
 * a tolerance.
 */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}
