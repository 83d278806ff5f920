// One row of x times four weight rows: the inner loop of a decode-shaped matrix product,
// y[n .. n+3] = x · w[n .. n+3]^T with w stored [out, in]. No bindings: matmul.wgsl
// (matmul_row, matmul_row_f16) and fused_decode.wgsl put this one copy in front of their own code,
// and each defines the functions it reads x and w through (offsets in vec4s):
//   fn dot_x4(i: u32) -> vec4<f32>   x values 4·i .. 4·i+3
//   fn dot_w4(i: u32) -> vec4<f32>   4 weights (f32, or f16 pairs unpacked)
//   fn dot_w8(i: u32) -> vec4<u32>   8 f16 weights, two per word
// Four weight rows form a mat4x4 with rows as columns, so x[4k .. 4k+4] times it adds their
// contribution to the 4 outputs.

// Σ over k4 < K4 of x[4·(x0 + k4) ..] times weight rows that start at rows.x .. rows.w.
fn dot_row4(x0: u32, rows: vec4<u32>, K4: u32) -> vec4<f32> {
  var acc = vec4(0.0);
  for (var k4 = 0u; k4 < K4; k4++) {
    acc += dot_x4(x0 + k4) *
      mat4x4(dot_w4(rows.x + k4), dot_w4(rows.y + k4), dot_w4(rows.z + k4), dot_w4(rows.w + k4));
  }
  return acc;
}

// Weights 4·i .. 4·i+3 of a vec4<u32> holding 8 f16 weights: i = 0 (low) or 1 (high).
fn halves4(v: vec4<u32>, i: u32) -> vec4<f32> {
  let pair = select(v.xy, v.zw, i == 1u);
  return vec4(unpack2x16float(pair.x), unpack2x16float(pair.y));
}

// dot_row4 for f16 weights read 8 at a time (rows start at rows.x .. in vec4<u32>s): half the
// reads of 4 at a time, which on llvmpipe cost as much as 4 f32. K8 = K / 8.
fn dot_row4_f16(x0: u32, rows: vec4<u32>, K8: u32) -> vec4<f32> {
  var acc = vec4(0.0);
  for (var k8 = 0u; k8 < K8; k8++) {
    let a = dot_w8(rows.x + k8);
    let b = dot_w8(rows.y + k8);
    let c = dot_w8(rows.z + k8);
    let d = dot_w8(rows.w + k8);
    acc += dot_x4(x0 + 2u * k8) *
      mat4x4(halves4(a, 0u), halves4(b, 0u), halves4(c, 0u), halves4(d, 0u));
    acc += dot_x4(x0 + 2u * k8 + 1u) *
      mat4x4(halves4(a, 1u), halves4(b, 1u), halves4(c, 1u), halves4(d, 1u));
  }
  return acc;
}
