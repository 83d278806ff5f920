// The matrix products of GPT-2: every Conv1D projection and the lm_head, as
//   y[M, N] = x[M, K] @ w[N, K]^T (+ b[N]).
// All weights are stored on the GPU as [out, in] rows (HF Conv1D's [in, out] is transposed
// at load), so each invocation streams whole contiguous weight rows: on llvmpipe that reads
// at several times the bandwidth of walking a column down [in, out] rows.
// Reads, not arithmetic, are the cost: every operand is read as a vec4, and the tile of
// matmul_rows8 reuses each weight read for 8 rows of x (the prefill shape); matmul_row takes
// one row (the decode shape). Four weight rows form a mat4x4 W with rows as columns, so the
// contribution of x[k..k+4] to 4 outputs is x * W. Tiles are written out by hand (named
// accumulators, no arrays): Mesa's Vulkan path keeps private arrays in memory, 6x slower.
// Rows and columns past the edge are clamped for reads and skipped for writes, so any M
// and N work; K must be a multiple of 4.

override WG: u32 = 64u; // invocations per workgroup

struct Params {
  M: u32,       // rows of y
  N: u32,       // weight rows (outputs) in this binding
  K: u32,       // inner dimension
  xRow0: u32,   // first row of x to read
  yCol0: u32,   // column of y that weight row 0 lands in
  ldy: u32,     // row stride of y
  hasBias: u32, // 1: add b
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;  // [*, K]
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;  // [N, K]
@group(0) @binding(3) var<storage, read> b: array<f32>;        // [N] (unused without bias)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;  // [M, ldy]

// Weight rows n .. n+3 (clamped), vec4 k4 of each, as the columns of a matrix.
fn w4(n: u32, k4: u32, K4: u32) -> mat4x4<f32> {
  let last = p.N - 1u;
  return mat4x4(
    w[min(n, last) * K4 + k4],
    w[min(n + 1u, last) * K4 + k4],
    w[min(n + 2u, last) * K4 + k4],
    w[min(n + 3u, last) * K4 + k4],
  );
}

// y[row, n .. n+4] = acc (+ b), for the columns that exist.
fn store(row: u32, n: u32, acc: vec4<f32>) {
  if (row >= p.M) { return; }
  let o = row * p.ldy + p.yCol0 + n;
  for (var j = 0u; j < 4u; j++) {
    if (n + j < p.N) { y[o + j] = acc[j] + select(0.0, b[n + j], p.hasBias == 1u); }
  }
}

// One row x 4 outputs per invocation. Grid: (N / 4 / WG, M).
@compute @workgroup_size(WG)
fn matmul_row(@builtin(global_invocation_id) gid: vec3<u32>) {
  let K4 = p.K / 4u;
  let n = gid.x * 4u;
  if (n >= p.N) { return; }
  let xr = (p.xRow0 + min(gid.y, p.M - 1u)) * K4;
  var acc = vec4(0.0);
  for (var k4 = 0u; k4 < K4; k4++) { acc += x[xr + k4] * w4(n, k4, K4); }
  store(gid.y, n, acc);
}

// 8 rows x 4 outputs per invocation. Grid: (N / 4 / WG, M / 8).
@compute @workgroup_size(WG)
fn matmul_rows8(@builtin(global_invocation_id) gid: vec3<u32>) {
  let K4 = p.K / 4u;
  let n = gid.x * 4u;
  let r0 = gid.y * 8u;
  if (n >= p.N) { return; }
  let last = p.M - 1u;
  let x0 = (p.xRow0 + min(r0, last)) * K4;
  let x1 = (p.xRow0 + min(r0 + 1u, last)) * K4;
  let x2 = (p.xRow0 + min(r0 + 2u, last)) * K4;
  let x3 = (p.xRow0 + min(r0 + 3u, last)) * K4;
  let x4 = (p.xRow0 + min(r0 + 4u, last)) * K4;
  let x5 = (p.xRow0 + min(r0 + 5u, last)) * K4;
  let x6 = (p.xRow0 + min(r0 + 6u, last)) * K4;
  let x7 = (p.xRow0 + min(r0 + 7u, last)) * K4;
  var a0 = vec4(0.0); var a1 = vec4(0.0); var a2 = vec4(0.0); var a3 = vec4(0.0);
  var a4 = vec4(0.0); var a5 = vec4(0.0); var a6 = vec4(0.0); var a7 = vec4(0.0);
  for (var k4 = 0u; k4 < K4; k4++) {
    let wk = w4(n, k4, K4);
    a0 += x[x0 + k4] * wk;
    a1 += x[x1 + k4] * wk;
    a2 += x[x2 + k4] * wk;
    a3 += x[x3 + k4] * wk;
    a4 += x[x4 + k4] * wk;
    a5 += x[x5 + k4] * wk;
    a6 += x[x6 + k4] * wk;
    a7 += x[x7 + k4] * wk;
  }
  store(r0, n, a0);
  store(r0 + 1u, n, a1);
  store(r0 + 2u, n, a2);
  store(r0 + 3u, n, a3);
  store(r0 + 4u, n, a4);
  store(r0 + 5u, n, a5);
  store(r0 + 6u, n, a6);
  store(r0 + 7u, n, a7);
}
