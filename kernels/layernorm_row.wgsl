// One row of torch.nn.LayerNorm: y = (x - mean) / sqrt(var + eps) * weight + bias, var the
// biased variance. No bindings: layernorm.wgsl and fused_decode.wgsl put this one copy in front of
// their own code, and each defines the function it reads the row through:
//   fn ln_x4(row: u32, i: u32) -> vec4<f32>   vec4 i of the row that starts at `row`

// (mean, 1 / sqrt(var + eps)) of the row of C4 vec4s starting at `row`.
fn ln_row_stats(row: u32, C4: u32, eps: f32) -> vec2<f32> {
  let n = f32(4u * C4);
  var sum = vec4(0.0);
  for (var i = 0u; i < C4; i++) { sum += ln_x4(row, i); }
  let mean = (sum.x + sum.y + sum.z + sum.w) / n;
  var sq = vec4(0.0);
  for (var i = 0u; i < C4; i++) {
    let d = ln_x4(row, i) - mean;
    sq = fma(d, d, sq);
  }
  return vec2(mean, 1.0 / sqrt((sq.x + sq.y + sq.z + sq.w) / n + eps));
}

// One normalized vec4 of a row, s = (mean, 1 / sqrt(var + eps)) from ln_row_stats.
fn ln_apply(x: vec4<f32>, s: vec2<f32>, weight: vec4<f32>, bias: vec4<f32>) -> vec4<f32> {
  return (x - s.x) * s.y * weight + bias;
}
