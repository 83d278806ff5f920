/**
 * Typed wrappers for `layernorm.wgsl`: the forward and, for training, the backward.
 *
 * @module
 */
import { checkLoopTrips, type Dispatch, f32bits, type Gpu, groups, type Tensor } from "./gpu.ts";

import row from "./layernorm_row.wgsl" with { type: "text" };
import kernels from "./layernorm.wgsl" with { type: "text" };

/** layernorm.wgsl behind the row functions it shares with fused_decode.wgsl. */
const code = `${row}\n${kernels}`;

/**
 * y = LayerNorm(x) * weight + bias. x, y: [T, C]; weight, bias: [C]. With `stats` ([>= T, 2],
 * training), each row's (mean, 1 / sqrt(var + eps)) is kept there for
 * {@link layerNormBackward}.
 */
export function layerNorm(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  y: Tensor,
  eps: number,
  stats: Tensor | null = null,
): Dispatch {
  const [T, C] = x.shape;
  if (
    C % 4 || weight.shape[0] !== C || bias.shape[0] !== C || y.shape[0] !== T ||
    (stats && stats.shape[0] < T)
  ) {
    throw new Error(`layernorm: x[${x.shape}] weight[${weight.shape}] y[${y.shape}] do not fit`);
  }
  const params = gpu.uniform([T, C, f32bits(eps), stats ? 1 : 0]);
  const kernel = gpu.kernel(code, "layernorm");
  const kept = stats ?? gpu.unused("no layernorm stats");
  return gpu.dispatch(
    `layernorm ${T}x${C}`,
    kernel,
    { p: params, x, weight, bias, y, stats: kept },
    [
      groups(T, 64),
    ],
  );
}

/**
 * dx += LayerNorm backward; dweight = sum_t dy*xhat, dbias = sum_t dy (written). x, dy, dx:
 * [T, C]; weight, dweight, dbias: [C]; stats: [>= T, 2], each row's mean and rstd as
 * {@link layerNorm} kept them in the forward over the same x. Deterministic (no atomics): a
 * dispatch over rows (dx), then one over columns (dweight, dbias), whose invocations loop over
 * all T rows: T may not pass about 65,500 (see MAX_LOOP_TRIPS in gpu.ts).
 */
export function layerNormBackward(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  dy: Tensor,
  dx: Tensor,
  dweight: Tensor,
  dbias: Tensor,
  eps: number,
  stats: Tensor,
): Dispatch[] {
  const [T, C] = x.shape;
  const same = (t: Tensor, shape: readonly number[]) => `${t.shape}` === `${shape}`;
  if (
    C % 4 || !same(dy, [T, C]) || !same(dx, [T, C]) || !same(weight, [C]) ||
    !same(dweight, [C]) || !same(dbias, [C]) || stats.shape[0] < T
  ) {
    throw new Error(
      `layerNormBackward: x[${x.shape}] weight[${weight.shape}] dy[${dy.shape}] ` +
        `dx[${dx.shape}] dweight[${dweight.shape}] dbias[${dbias.shape}] do not fit`,
    );
  }
  // Per invocation: 4 loops over a row's C / 4 vec4s, or one over the T rows of a column.
  checkLoopTrips(`layerNormBackward: x[${x.shape}]`, Math.max(C + 4, T + 1));
  const p = gpu.uniform([T, C, f32bits(eps), 0]);
  // Small workgroups on a CPU adapter, so that a few hundred rows spread over every core.
  const WG = gpu.design === "cpu" ? 8 : 64;
  const rows = gpu.kernel(code, "layernorm_backward_rows", { WG });
  const params = gpu.kernel(code, "layernorm_backward_params", { WG });
  return [
    gpu.dispatch(`layernorm backward ${T}x${C} dx`, rows, { p, x, weight, dy, dx, stats }, [
      groups(T, WG),
    ]),
    gpu.dispatch(`layernorm backward ${T}x${C} dweight`, params, {
      p,
      x,
      dy,
      stats,
      dweight,
      dbias,
    }, [groups(C / 4, WG)]),
  ];
}
