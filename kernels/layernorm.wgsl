// LayerNorm over the last dimension, as torch.nn.LayerNorm:
// y = (x - mean) / sqrt(var + eps) * weight + bias, var the biased variance.
// One invocation per row; rows are read as vec4 (C must be a multiple of 4). The backward
// kernels follow the forward.

struct Params {
  T: u32,    // rows
  C: u32,    // row length
  eps: f32,
  keep: u32, // 1: the forward keeps each row's (mean, rstd) in stats, for the backward
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;      // [T, C]
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>; // [C]
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;   // [C]
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>; // [T, C]

// ln_row_stats and ln_apply come from layernorm_row.wgsl, which the wrapper puts in front; it
// reads the row through this.
fn ln_x4(row: u32, i: u32) -> vec4<f32> {
  return x[row + i];
}

@compute @workgroup_size(64)
fn layernorm(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= p.T) { return; }
  let C4 = p.C / 4u;
  let row = t * C4;
  let s = ln_row_stats(row, C4, p.eps);
  if (p.keep == 1u) { stats[t] = s; }
  for (var i = 0u; i < C4; i++) { y[row + i] = ln_apply(x[row + i], s, weight[i], bias[i]); }
}

// ---- Backward, for training. With xhat = (x - mean)·rstd and g = dy·weight, per row
//   dx += rstd·(g - mean(g) - xhat·mean(g·xhat)),
// and over the rows dweight = Σ dy·xhat, dbias = Σ dy. The forward kept each row's mean and
// rstd in stats (keep), so layernorm_backward_rows reads each row twice (no pass for the
// statistics) and adds its dx; layernorm_backward_params then sums each column over the rows
// in order (no atomics, so every run gives the same sums). One invocation per row, then per
// 4 columns.

override WG: u32 = 64u; // invocations per workgroup of the backward kernels

@group(0) @binding(5) var<storage, read> dy: array<vec4<f32>>;            // [T, C]
@group(0) @binding(6) var<storage, read_write> dx: array<vec4<f32>>;      // [T, C]
@group(0) @binding(7) var<storage, read_write> stats: array<vec2<f32>>;   // [T] (mean, rstd)
@group(0) @binding(8) var<storage, read_write> dweight: array<vec4<f32>>; // [C]
@group(0) @binding(9) var<storage, read_write> dbias: array<vec4<f32>>;   // [C]

@compute @workgroup_size(WG)
fn layernorm_backward_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= p.T) { return; }
  let C4 = p.C / 4u;
  let row = t * C4;
  let s = stats[t];
  var g_sum = vec4(0.0);
  var gx_sum = vec4(0.0);
  for (var i = 0u; i < C4; i++) {
    let g = dy[row + i] * weight[i];
    g_sum += g;
    gx_sum = fma(g, (x[row + i] - s.x) * s.y, gx_sum);
  }
  let g_mean = (g_sum.x + g_sum.y + g_sum.z + g_sum.w) / f32(p.C);
  let gx_mean = (gx_sum.x + gx_sum.y + gx_sum.z + gx_sum.w) / f32(p.C);
  for (var i = 0u; i < C4; i++) {
    let xhat = (x[row + i] - s.x) * s.y;
    dx[row + i] += s.y * (dy[row + i] * weight[i] - g_mean - xhat * gx_mean);
  }
}

@compute @workgroup_size(WG)
fn layernorm_backward_params(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  let C4 = p.C / 4u;
  if (c >= C4) { return; }
  var dw = vec4(0.0);
  var db = vec4(0.0);
  for (var t = 0u; t < p.T; t++) {
    let s = stats[t];
    let d = dy[t * C4 + c];
    dw = fma(d, (x[t * C4 + c] - s.x) * s.y, dw);
    db += d;
  }
  dweight[c] = dw;
  dbias[c] = db;
}
