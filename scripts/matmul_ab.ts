/**
 * `deno task matmul_ab [--rounds N] [--f16]`: which tiling of the cpu design's matrix products
 * is fastest at the shapes that matter (training's K = 128 and K = 512, prefill's
 * 512 x 768 x 2304), measured as an interleaved A/B: every round runs each variant (in a
 * rotated order) three times in one submission, timed by GPU timestamps, so that load on the
 * machine falls on all variants alike. Prints each variant's median and its ratio to the
 * first (the current default). With --f16, the same with f16 weights, and the f32 default
 * against the f16 default at each shape.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Gpu, type Tensor } from "../kernels/gpu.ts";
import {
  matmulBackwardInput,
  matmulTiled,
  type Tiling,
  transpose,
  uploadWeight,
  type WeightFormat,
} from "../kernels/matmul.ts";
import { Rng } from "../base/rng.ts";

const SHAPES: [string, number, number, number][] = [
  ["baby c_attn (K = 128)", 768, 128, 384],
  ["baby c_fc (K = 128)", 768, 128, 512],
  ["baby mlp c_proj (K = 512)", 768, 512, 128],
  ["prefill 512 c_attn", 512, 768, 2304],
];

/** The variants: the default first. Workgroups of fewer than 8 leave lanes of llvmpipe's
 * 8-wide SIMD batches idle (measured: 1.7-2.4x the time at 4). */
const TILINGS: Tiling[] = [
  { entry: "matmul_rows16", wg: 8 },
  { entry: "matmul_rows16", wg: 16 },
  { entry: "matmul_rows16_by_rows", wg: 8 },
];

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

const USAGE = "usage: deno task matmul_ab [--rounds N] [--f16]";
let values: { rounds: string; f16: boolean; help: boolean };
try {
  ({ values } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string", default: "15" },
      f16: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  }));
} catch (e) {
  console.error(`matmul_ab: ${(e as Error).message.split("\n")[0]}\n${USAGE}`);
  Deno.exit(2);
}
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`--rounds: expected a positive integer, got "${values.rounds}"`);
  Deno.exit(2);
}
const gpu = await Gpu.open({ design: "cpu" });
if (!gpu.hasTimestamps) {
  console.error("matmul_ab: needs the timestamp-query feature");
  Deno.exit(1);
}
console.log(`adapter: ${gpu.description}; ${rounds} rounds, interleaved`);
const rng = new Rng(1);
const uniforms = (n: number) => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
const formats: WeightFormat[] = values.f16 ? ["f32", "f16"] : ["f32"];
for (const [what, M, K, N] of SHAPES) {
  const owned: Tensor[] = [];
  const own = (t: Tensor) => (owned.push(t), t);
  const x = own(gpu.upload(uniforms(M * K), [M, K], "x"));
  const b = own(gpu.upload(uniforms(N), [N], "b"));
  const y = own(gpu.tensor([M, N], "y"));
  const data = uniforms(N * K);
  const variants = formats.flatMap((format) => {
    const w = uploadWeight(gpu, data, N, K, "w", format);
    own(w.tensor);
    const tilings = format === "f32" ? TILINGS : TILINGS.slice(0, 1);
    return tilings.map((t) => ({
      name: `${format} ${t.entry} wg ${t.wg}`,
      dispatch: matmulTiled(gpu, x, w, b, y, t),
      ms: [] as number[],
    }));
  });
  // The same product as the input gradient's kernel computes it, x @ (w^T stored [K, N]):
  // sums of weight rows scaled by x, instead of dot products of x with weight rows (no bias).
  const wKN = uploadWeight(gpu, transpose(data, N, K), K, N, "w [in, out]");
  own(wKN.tensor);
  variants.push({
    name: "f32 as backward input, w [in, out]",
    dispatch: matmulBackwardInput(gpu, x, wKN, y),
    ms: [],
  });
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < variants.length; i++) {
      const v = variants[(i + r) % variants.length];
      gpu.run([v.dispatch, v.dispatch, v.dispatch], { profile: true });
      v.ms.push(median((await gpu.readProfile()).map((t) => t.ns / 1e6)));
    }
  }
  const base = median(variants[0].ms);
  const gflop = 2 * M * K * N / 1e9;
  console.log(`${what}: ${M} x ${K} x ${N}`);
  for (const v of variants) {
    const ms = median(v.ms);
    console.log(
      `  ${v.name.padEnd(34)} ${ms.toFixed(2).padStart(8)} ms ${
        (gflop / ms * 1000).toFixed(1).padStart(6)
      } GFLOP/s  ratio ${(ms / base).toFixed(3)}`,
    );
  }
  for (const t of owned) gpu.destroy(t);
}
