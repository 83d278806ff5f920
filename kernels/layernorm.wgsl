// LayerNorm over the last dimension, as torch.nn.LayerNorm:
// y = (x - mean) / sqrt(var + eps) * weight + bias, var the biased variance.
// One invocation per row; rows are read as vec4 (C must be a multiple of 4).

struct Params {
  T: u32,    // rows
  C: u32,    // row length
  eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;      // [T, C]
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>; // [C]
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;   // [C]
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>; // [T, C]

@compute @workgroup_size(64)
fn layernorm(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= p.T) { return; }
  let C4 = p.C / 4u;
  let row = t * C4;
  var sum = vec4(0.0);
  for (var i = 0u; i < C4; i++) { sum += x[row + i]; }
  let mean = (sum.x + sum.y + sum.z + sum.w) / f32(p.C);
  var sq = vec4(0.0);
  for (var i = 0u; i < C4; i++) {
    let d = x[row + i] - mean;
    sq = fma(d, d, sq);
  }
  let rstd = 1.0 / sqrt((sq.x + sq.y + sq.z + sq.w) / f32(p.C) + p.eps);
  for (var i = 0u; i < C4; i++) {
    y[row + i] = (x[row + i] - mean) * rstd * weight[i] + bias[i];
  }
}
