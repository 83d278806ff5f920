/**
 * The adapter's practical ceiling, measured by `ceiling.wgsl`: the best FMA rate of
 * independent register chains, and the rate of vec4 storage reads from a window that stays
 * in the caches and from one that streams from memory. Matrix products are judged against
 * the FMA rate (`deno task bench`).
 *
 * @module
 */
import { type Dispatch, f32bits, type Gpu, type Tensor } from "./gpu.ts";

import code from "./ceiling.wgsl" with { type: "text" };
import codeF16 from "./ceiling_f16.wgsl" with { type: "text" };

/** Independent FMA chains per invocation that `ceiling.wgsl` has an entry point for. */
export const FMA_CHAINS = [4, 8, 16] as const;

/** One of {@link FMA_CHAINS}. */
export type FmaChains = typeof FMA_CHAINS[number];

/** Invocations of every ceiling dispatch (64 per workgroup): enough to fill every core. */
export const CEILING_INVOCATIONS = 32768;

/**
 * out[i] = the sum of `chains` values, each `iters` rounds of acc = acc·m + c from its own
 * start (see `ceiling.wgsl`), for i < {@link CEILING_INVOCATIONS}; 2·chains·iters FLOP each.
 * out: [CEILING_INVOCATIONS] f32.
 */
export function fmaPeak(
  gpu: Gpu,
  chains: FmaChains,
  iters: number,
  m: number,
  c: number,
  out: Tensor,
  f16 = false,
): Dispatch {
  checkOut("fmaPeak", out);
  if (!Number.isInteger(iters) || iters < 1 || iters > 60000) {
    throw new RangeError(`fmaPeak: iters must be 1..60000 (llvmpipe's loop cap), got ${iters}`);
  }
  const f = gpu.uniform([iters, f32bits(m), f32bits(c), 0]);
  if (f16 && chains !== 16) throw new Error("fmaPeak: f16 runs 16 chains only");
  const kernel = f16
    ? gpu.kernel(f16Code(gpu), "fma_peak_f16_16")
    : gpu.kernel(code, `fma_peak_${chains}`);
  return gpu.dispatch(`fma peak ${chains} chains${f16 ? " f16" : ""}`, kernel, { f, out }, [
    CEILING_INVOCATIONS / 64,
  ]);
}

/**
 * out[i] = the sum of 4·rounds vec4s of src read at i + k·CEILING_INVOCATIONS modulo the
 * window (its first `window` vec4s, a power of two), for i < {@link CEILING_INVOCATIONS}.
 * src: [>= 4·window] f32 words (with `f16`, vec4s of f16, two words each); out:
 * [CEILING_INVOCATIONS] f32.
 */
export function readPeak(
  gpu: Gpu,
  src: Tensor,
  window: number,
  rounds: number,
  out: Tensor,
  f16 = false,
): Dispatch {
  checkOut("readPeak", out);
  const words = (f16 ? 2 : 4) * window;
  if (!Number.isInteger(Math.log2(window)) || src.shape.reduce((a, b) => a * b, 1) < words) {
    throw new RangeError(`readPeak: window ${window} must be a power of two within src`);
  }
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 60000) {
    throw new RangeError(`readPeak: rounds must be 1..60000 (llvmpipe's loop cap), got ${rounds}`);
  }
  const r = gpu.uniform([rounds, window - 1, CEILING_INVOCATIONS, 0]);
  const source: Tensor = { ...src, shape: [words] };
  const kernel = f16 ? gpu.kernel(f16Code(gpu), "read_peak_f16") : gpu.kernel(code, "read_peak");
  const label = `read peak ${window * (f16 ? 8 : 16)} B${f16 ? " f16" : ""}`;
  return gpu.dispatch(label, kernel, { r, src: source, out }, [CEILING_INVOCATIONS / 64]);
}

/** ceiling_f16.wgsl, on an adapter with shader-f16. */
function f16Code(gpu: Gpu): string {
  if (!gpu.hasF16) throw new Error(`f16 micro-benchmarks need shader-f16; ${gpu.description}`);
  return codeF16;
}

function checkOut(what: string, out: Tensor): void {
  if (out.shape.reduce((a, b) => a * b, 1) !== CEILING_INVOCATIONS) {
    throw new Error(`${what}: out[${out.shape}] must hold ${CEILING_INVOCATIONS} values`);
  }
}

/** What {@link measureCeiling} found. */
export interface Ceiling {
  /** Best FMA rate, GFLOP/s (2 FLOP per FMA), and the chains per invocation that gave it. */
  fmaGflops: number;
  fmaChains: FmaChains;
  /** vec4 storage reads from a 64 KiB window (in the caches), GB/s. */
  cachedReadGBs: number;
  /** vec4 storage reads streamed from a 64 MiB buffer, GB/s. */
  memoryReadGBs: number;
}

/** f16 against f32 on the same work, from {@link measureF16}: time ratios f16 / f32. */
export interface F16Ratios {
  /** 16 FMA chains per invocation in vec4<f16> against vec4<f32>. */
  fma: number;
  /** The same count of vec4 reads from a 64 KiB window (in the caches), f16 against f32. */
  cachedRead: number;
  /** The same from a 64 MiB window (streamed from memory). */
  memoryRead: number;
}

/**
 * Whether shader-f16 arithmetic or half-size reads beat f32 here: each pair of kernels runs
 * interleaved (f32, f16, f32, ...) `reps` times, and the ratio of their median GPU times is
 * returned (below 1: f16 is faster). Needs shader-f16.
 */
export async function measureF16(gpu: Gpu, reps = 7): Promise<F16Ratios> {
  const out = gpu.tensor([CEILING_INVOCATIONS], "ceiling out");
  const memoryWindow = 2 ** 22;
  const src = gpu.tensor([4 * memoryWindow], "ceiling src");
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const ratio = async (make: (f16: boolean) => Dispatch) => {
    const [a, b] = [make(false), make(true)];
    await seconds(gpu, a);
    await seconds(gpu, b);
    const [ta, tb]: number[][] = [[], []];
    for (let i = 0; i < reps; i++) {
      ta.push(await seconds(gpu, a));
      tb.push(await seconds(gpu, b));
    }
    return median(tb) / median(ta);
  };
  try {
    const rounds = memoryWindow / CEILING_INVOCATIONS / 4;
    return {
      fma: await ratio((f16) => fmaPeak(gpu, 16, 2048, 0.999, 1e-3, out, f16)),
      cachedRead: await ratio((f16) => readPeak(gpu, src, 2 ** 12, rounds, out, f16)),
      memoryRead: await ratio((f16) => readPeak(gpu, src, memoryWindow, rounds, out, f16)),
    };
  } finally {
    gpu.destroy(out);
    gpu.destroy(src);
  }
}

/** GPU seconds of one run of `d`: its timestamps where the adapter has them, else wall time. */
async function seconds(gpu: Gpu, d: Dispatch): Promise<number> {
  if (gpu.hasTimestamps) {
    gpu.run([d], { profile: true });
    const [t] = await gpu.readProfile();
    return t.ns / 1e9;
  }
  await gpu.sync();
  const t0 = performance.now();
  gpu.run([d]);
  await gpu.sync();
  return (performance.now() - t0) / 1000;
}

/**
 * Measures the {@link Ceiling}: each kernel runs `reps` times (after one warm-up) and the
 * fastest run counts, since other work on the machine can only slow a run down. About a
 * second on llvmpipe's 2 cores.
 */
export async function measureCeiling(gpu: Gpu, reps = 5): Promise<Ceiling> {
  const out = gpu.tensor([CEILING_INVOCATIONS], "ceiling out");
  const memoryWindow = 2 ** 22; // vec4s: 64 MiB
  const src = gpu.tensor([4 * memoryWindow], "ceiling src");
  const best = async (d: Dispatch) => {
    await seconds(gpu, d);
    let s = Infinity;
    for (let i = 0; i < reps; i++) s = Math.min(s, await seconds(gpu, d));
    return s;
  };
  try {
    let fmaGflops = 0;
    let fmaChains: FmaChains = 4;
    for (const chains of FMA_CHAINS) {
      const iters = 32768 / chains;
      const flop = 2 * chains * iters * CEILING_INVOCATIONS;
      const rate = flop / await best(fmaPeak(gpu, chains, iters, 0.999, 1e-3, out)) / 1e9;
      if (rate > fmaGflops) [fmaGflops, fmaChains] = [rate, chains];
    }
    const readRate = async (window: number) => {
      const rounds = memoryWindow / CEILING_INVOCATIONS / 4; // every vec4 of 64 MiB once
      const bytes = 16 * 4 * rounds * CEILING_INVOCATIONS;
      return bytes / await best(readPeak(gpu, src, window, rounds, out)) / 1e9;
    };
    const cachedReadGBs = await readRate(2 ** 12);
    const memoryReadGBs = await readRate(memoryWindow);
    return { fmaGflops, fmaChains, cachedReadGBs, memoryReadGBs };
  } finally {
    gpu.destroy(out);
    gpu.destroy(src);
  }
}
