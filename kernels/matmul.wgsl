// The matrix products of GPT-2: every Conv1D projection and the lm_head, as
//   y[M, N] = x[M, K] @ w[N, K]^T (+ b[N]).
// All weights are stored on the GPU as [out, in] rows (HF Conv1D's [in, out] is transposed
// at load), so each invocation streams whole contiguous weight rows: on llvmpipe that reads
// at several times the bandwidth of walking a column down [in, out] rows.
// Reads, not arithmetic, are the cost: on llvmpipe the time of a kernel follows the number
// of vec4 reads per invocation, and the multiply-adds are almost free. matmul_row takes one
// row of x (the decode shape), matmul_rows4 two or three (a small batch of decode steps);
// matmul_rows16 computes a 16 x 16 tile (the prefill shape), so
// each vec4 read feeds 16 products: 8 x 4 tiles ran at ~22 GFLOP/s, 16 x 16 at ~38. Four
// weight rows form a mat4x4 W with rows as columns, so the contribution of x[k..k+4] to 4
// outputs is x * W. Tiles are written out by hand (named accumulators, no arrays): Mesa's
// Vulkan path keeps private arrays in memory, 6x slower.
// Weights may be f32, or f16 packed two per u32 word (F16): half the bytes and half the
// reads per weight, each weight rounded to f16 when it is uploaded.
// Rows and columns past the edge are clamped for reads and skipped for writes, so any M
// and N work; K must be a multiple of 4.
// For training, the backward kernels (dx = dy @ w, dw = dy^T @ x, db) follow the forward ones,
// in the same two designs. gelu_new comes from gelu_formula.wgsl and the row loop of matmul_row
// and matmul_row_f16 from matmul_row.wgsl (shared with fused_decode.wgsl), which the wrapper prepends.

override WG: u32 = 64u;     // invocations per workgroup
override F16: bool = false; // weights stored as f16 pairs (read through wh, not w)

struct Params {
  M: u32,       // rows of y
  N: u32,       // weight rows (outputs) in this binding
  K: u32,       // inner dimension
  xRow0: u32,   // first row of x to read
  yCol0: u32,   // column of y that weight row 0 lands in
  ldy: u32,     // row stride of y
  hasBias: u32, // 1: add b
  epilogue: u32, // what the stored value v = x·w (+ b) becomes: 0 y = v; 1 y = gelu(v);
                 // 2 y = y + v (a residual add into y); 3 y = gelu(v) and pre = v (training
                 // keeps the value before the activation for the backward)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;  // [*, K]
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;  // [N, K] (f32)
@group(0) @binding(3) var<storage, read> b: array<f32>;        // [N] (unused without bias)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;  // [M, ldy]
@group(0) @binding(5) var<storage, read> wh: array<vec2<u32>>; // [N, K] as f16 pairs (F16)
@group(0) @binding(6) var<storage, read> wh8: array<vec4<u32>>; // the same, 8 weights a read
@group(0) @binding(13) var<storage, read_write> pre: array<f32>; // [M, ldy] (epilogue 3 only)

// Weights k .. k+3 of weight row n: w[n, 4·k4 ..].
fn wrow(n: u32, k4: u32, K4: u32) -> vec4<f32> {
  if (F16) {
    let h = wh[n * K4 + k4];
    return vec4(unpack2x16float(h.x), unpack2x16float(h.y));
  }
  return w[n * K4 + k4];
}

// The offset of row r0 + i of x (clamped to the last row), in vec4s.
fn xrow(r0: u32, i: u32, K4: u32) -> u32 {
  return (p.xRow0 + min(r0 + i, p.M - 1u)) * K4;
}

// Weight rows n .. n+3 (clamped), vec4 k4 of each, as the columns of a matrix.
fn w4(n: u32, k4: u32, K4: u32) -> mat4x4<f32> {
  let last = p.N - 1u;
  return mat4x4(
    wrow(min(n, last), k4, K4),
    wrow(min(n + 1u, last), k4, K4),
    wrow(min(n + 2u, last), k4, K4),
    wrow(min(n + 3u, last), k4, K4),
  );
}

// y[o] = v (+ b[n]), through the epilogue. gelu_new is gelu_formula.wgsl's, which the
// wrapper puts in front of this file.
fn finish(o: u32, n: u32, acc: f32) {
  var v = acc;
  if (p.hasBias == 1u) { v += b[n]; }
  if (p.epilogue == 3u) {
    pre[o] = v;
    v = gelu_new(v);
  } else if (p.epilogue == 1u) {
    v = gelu_new(v);
  } else if (p.epilogue == 2u) {
    v = y[o] + v;
  }
  y[o] = v;
}

// y[row, n .. n+4] = acc, for the columns that exist.
fn store(row: u32, n: u32, acc: vec4<f32>) {
  if (row >= p.M) { return; }
  let o = row * p.ldy + p.yCol0 + n;
  for (var j = 0u; j < 4u; j++) {
    if (n + j < p.N) { finish(o + j, n + j, acc[j]); }
  }
}

// The 4 rows of w from n on (clamped to the last), as vec4 offsets of rows K4 vec4s long.
fn row_starts(n: u32, K4: u32) -> vec4<u32> {
  return min(vec4(n) + vec4(0u, 1u, 2u, 3u), vec4(p.N - 1u)) * K4;
}

// What dot_row4 and dot_row4_f16 (matmul_row.wgsl, in front of this file) read.
fn dot_x4(i: u32) -> vec4<f32> {
  return x[i];
}

fn dot_w4(i: u32) -> vec4<f32> {
  if (F16) {
    let h = wh[i];
    return vec4(unpack2x16float(h.x), unpack2x16float(h.y));
  }
  return w[i];
}

fn dot_w8(i: u32) -> vec4<u32> {
  return wh8[i];
}

// One row x 4 outputs per invocation. Grid: (N / 4 / WG, M).
@compute @workgroup_size(WG)
fn matmul_row(@builtin(global_invocation_id) gid: vec3<u32>) {
  let K4 = p.K / 4u;
  let n = gid.x * 4u;
  if (n >= p.N) { return; }
  store(gid.y, n, dot_row4(xrow(gid.y, 0u, K4), row_starts(n, K4), K4));
}

// 4 rows x 4 outputs per invocation, for 2 or 3 rows (a small batch of decode steps): each
// weight read serves every row, where matmul_row would read the weights once per row.
// Grid: (N / 4 / WG, M / 4).
@compute @workgroup_size(WG)
fn matmul_rows4(@builtin(global_invocation_id) gid: vec3<u32>) {
  let K4 = p.K / 4u;
  let n = gid.x * 4u;
  let r0 = gid.y * 4u;
  if (n >= p.N) { return; }
  let x0 = xrow(r0, 0u, K4);
  let x1 = xrow(r0, 1u, K4);
  let x2 = xrow(r0, 2u, K4);
  let x3 = xrow(r0, 3u, K4);
  var a0 = vec4(0.0);
  var a1 = vec4(0.0);
  var a2 = vec4(0.0);
  var a3 = vec4(0.0);
  for (var k4 = 0u; k4 < K4; k4++) {
    let wk = w4(n, k4, K4);
    a0 += x[x0 + k4] * wk;
    a1 += x[x1 + k4] * wk;
    a2 += x[x2 + k4] * wk;
    a3 += x[x3 + k4] * wk;
  }
  store(r0, n, a0);
  store(r0 + 1u, n, a1);
  store(r0 + 2u, n, a2);
  store(r0 + 3u, n, a3);
}

// matmul_row for f16 weights: each read takes 8 weights of a row, half the reads of f32
// (reading 4 f16 at a time costs as much as 4 f32). K must be a multiple of 8.
@compute @workgroup_size(WG)
fn matmul_row_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
  let K8 = p.K / 8u;
  let n = gid.x * 4u;
  if (n >= p.N) { return; }
  store(gid.y, n, dot_row4_f16(xrow(gid.y, 0u, 2u * K8), row_starts(n, K8), K8));
}

// The 16 outputs n .. n+15 of one row, in four vec4s.
struct Out16 { o0: vec4<f32>, o1: vec4<f32>, o2: vec4<f32>, o3: vec4<f32> }

// Weight rows n .. n+15 at vec4 k4, as four 4x4 blocks.
struct W16 { m0: mat4x4<f32>, m1: mat4x4<f32>, m2: mat4x4<f32>, m3: mat4x4<f32> }

fn w16(n: u32, k4: u32, K4: u32) -> W16 {
  return W16(w4(n, k4, K4), w4(n + 4u, k4, K4), w4(n + 8u, k4, K4), w4(n + 12u, k4, K4));
}

// acc + x[k4 .. k4+4] times the 16 weight rows.
fn fma16(acc: Out16, xk: vec4<f32>, wk: W16) -> Out16 {
  return Out16(acc.o0 + xk * wk.m0, acc.o1 + xk * wk.m1, acc.o2 + xk * wk.m2, acc.o3 + xk * wk.m3);
}

// y[row, n .. n+16] = acc (+ b) (+ y, epilogue 2), store()'s arithmetic less the GELU, which
// tile16_gelu applies after: with the GELU inlined 256 times per tile, lavapipe took ~0.95 s to
// build the pipeline (now ~0.33 s), and the tile ran 6-19 % slower.
fn store16_raw(row: u32, n: u32, acc: Out16) {
  store4_raw(row, n, acc.o0);
  store4_raw(row, n + 4u, acc.o1);
  store4_raw(row, n + 8u, acc.o2);
  store4_raw(row, n + 12u, acc.o3);
}

fn store4_raw(row: u32, n: u32, acc: vec4<f32>) {
  if (row >= p.M) { return; }
  let o = row * p.ldy + p.yCol0 + n;
  for (var j = 0u; j < 4u; j++) {
    if (n + j < p.N) {
      var v = acc[j];
      if (p.hasBias == 1u) { v += b[n + j]; }
      if (p.epilogue == 2u) { v = y[o + j] + v; }
      y[o + j] = v;
    }
  }
}

// The GELU epilogues (1; 3 keeps the value before it) of a raw 16 x 16 tile, in a rolled loop.
fn tile16_gelu(n: u32, r0: u32) {
  if (p.epilogue != 1u && p.epilogue != 3u) { return; }
  for (var i = 0u; i < 256u; i++) {
    let row = r0 + i / 16u;
    let c = n + i % 16u;
    if (row < p.M && c < p.N) {
      let o = row * p.ldy + p.yCol0 + c;
      let v = y[o];
      if (p.epilogue == 3u) { pre[o] = v; }
      y[o] = gelu_new(v);
    }
  }
}


// 16 rows x 16 outputs per invocation: each vec4 read feeds 16 (x) or 16 (w) products, a
// third of the reads per product of an 8 x 4 tile. The tile of rows r0 .., outputs n ...
fn tile16(n: u32, r0: u32) {
  let K4 = p.K / 4u;
  if (n >= p.N || r0 >= p.M) { return; }
  let x0 = xrow(r0, 0u, K4); let x1 = xrow(r0, 1u, K4); let x2 = xrow(r0, 2u, K4);
  let x3 = xrow(r0, 3u, K4); let x4 = xrow(r0, 4u, K4); let x5 = xrow(r0, 5u, K4);
  let x6 = xrow(r0, 6u, K4); let x7 = xrow(r0, 7u, K4); let x8 = xrow(r0, 8u, K4);
  let x9 = xrow(r0, 9u, K4); let x10 = xrow(r0, 10u, K4); let x11 = xrow(r0, 11u, K4);
  let x12 = xrow(r0, 12u, K4); let x13 = xrow(r0, 13u, K4); let x14 = xrow(r0, 14u, K4);
  let x15 = xrow(r0, 15u, K4);
  let z = Out16(vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
  var a0 = z; var a1 = z; var a2 = z; var a3 = z; var a4 = z; var a5 = z; var a6 = z;
  var a7 = z; var a8 = z; var a9 = z; var a10 = z; var a11 = z; var a12 = z; var a13 = z;
  var a14 = z; var a15 = z;
  for (var k4 = 0u; k4 < K4; k4++) {
    let wk = w16(n, k4, K4);
    a0 = fma16(a0, x[x0 + k4], wk);
    a1 = fma16(a1, x[x1 + k4], wk);
    a2 = fma16(a2, x[x2 + k4], wk);
    a3 = fma16(a3, x[x3 + k4], wk);
    a4 = fma16(a4, x[x4 + k4], wk);
    a5 = fma16(a5, x[x5 + k4], wk);
    a6 = fma16(a6, x[x6 + k4], wk);
    a7 = fma16(a7, x[x7 + k4], wk);
    a8 = fma16(a8, x[x8 + k4], wk);
    a9 = fma16(a9, x[x9 + k4], wk);
    a10 = fma16(a10, x[x10 + k4], wk);
    a11 = fma16(a11, x[x11 + k4], wk);
    a12 = fma16(a12, x[x12 + k4], wk);
    a13 = fma16(a13, x[x13 + k4], wk);
    a14 = fma16(a14, x[x14 + k4], wk);
    a15 = fma16(a15, x[x15 + k4], wk);
  }
  store16_raw(r0, n, a0);
  store16_raw(r0 + 1u, n, a1);
  store16_raw(r0 + 2u, n, a2);
  store16_raw(r0 + 3u, n, a3);
  store16_raw(r0 + 4u, n, a4);
  store16_raw(r0 + 5u, n, a5);
  store16_raw(r0 + 6u, n, a6);
  store16_raw(r0 + 7u, n, a7);
  store16_raw(r0 + 8u, n, a8);
  store16_raw(r0 + 9u, n, a9);
  store16_raw(r0 + 10u, n, a10);
  store16_raw(r0 + 11u, n, a11);
  store16_raw(r0 + 12u, n, a12);
  store16_raw(r0 + 13u, n, a13);
  store16_raw(r0 + 14u, n, a14);
  store16_raw(r0 + 15u, n, a15);
  tile16_gelu(n, r0);
}

// tile16 with a workgroup's invocations on consecutive output tiles (reading the same rows of
// x). Grid: (N / 16 / WG, M / 16).
@compute @workgroup_size(WG)
fn matmul_rows16(@builtin(global_invocation_id) gid: vec3<u32>) {
  tile16(gid.x * 16u, gid.y * 16u);
}

// tile16 with a workgroup's invocations on consecutive row tiles (reading the same weights).
// Grid: (M / 16 / WG, N / 16).
@compute @workgroup_size(WG)
fn matmul_rows16_by_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
  tile16(gid.y * 16u, gid.x * 16u);
}

// ---- Design "gpu": for real GPUs, where workgroup memory is fast and barriers cheap. ----

// y[row, n] = s, if the row and column exist.
fn store1(row: u32, n: u32, s: f32) {
  if (row >= p.M || n >= p.N) { return; }
  finish(row * p.ldy + p.yCol0 + n, n, s);
}

// A 64 x 64 tile of y per workgroup of 16 x 16 invocations, 4 x 4 outputs each. Every step
// of 16 along K stages x[64 rows, 16] and w[64 outputs, 16] in workgroup memory (one vec4 of
// each per invocation), so each value read from memory serves 64 products.
// Grid: (N / 64, M / 64).
var<workgroup> xTile: array<array<f32, 17>, 64>; // [row][k], padded against bank conflicts
var<workgroup> wTile: array<array<f32, 17>, 64>; // [output][k]

// acc[j] += Σ_k xTile[4·lid.y + j][k] · (wTile[4·lid.x][k], .., wTile[4·lid.x + 3][k]): an
// invocation's 4 x 4 outputs of the 64 x 64 tile, over the 16 staged steps of the sum.
fn tile_products(acc: ptr<function, array<vec4<f32>, 4>>, lid: vec2<u32>) {
  for (var k = 0u; k < 16u; k++) {
    let wk = vec4(
      wTile[4u * lid.x][k],
      wTile[4u * lid.x + 1u][k],
      wTile[4u * lid.x + 2u][k],
      wTile[4u * lid.x + 3u][k],
    );
    for (var j = 0u; j < 4u; j++) { (*acc)[j] += xTile[4u * lid.y + j][k] * wk; }
  }
}

@compute @workgroup_size(16, 16)
fn matmul_tiled(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  let K4 = p.K / 4u;
  let row0 = wg.y * 64u;
  let n0 = wg.x * 64u;
  let i = lid.y * 16u + lid.x; // this invocation stages row/output i / 4, vec4 i % 4
  let r = i / 4u;
  let c = i % 4u;
  var acc: array<vec4<f32>, 4>; // rows row0 + 4·lid.y + j, outputs n0 + 4·lid.x ..
  for (var k0 = 0u; k0 < K4; k0 += 4u) {
    let k4 = k0 + c;
    var xv = vec4(0.0);
    var wv = vec4(0.0);
    if (k4 < K4) {
      xv = x[xrow(row0, r, K4) + k4];
      wv = wrow(min(n0 + r, p.N - 1u), k4, K4);
    }
    for (var j = 0u; j < 4u; j++) {
      xTile[r][4u * c + j] = xv[j];
      wTile[r][4u * c + j] = wv[j];
    }
    workgroupBarrier();
    tile_products(&acc, lid.xy);
    workgroupBarrier();
  }
  for (var j = 0u; j < 4u; j++) { store(row0 + 4u * lid.y + j, n0 + 4u * lid.x, acc[j]); }
}

// One output per workgroup of 64: the invocations read consecutive vec4s of the weight row
// (coalesced) and sum in workgroup memory. Grid: (min(N, 65535), M, N / 65535).
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn matmul_gemv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let K4 = p.K / 4u;
  let n = wg.z * 65535u + wg.x;
  let xr = xrow(wg.y, 0u, K4);
  var s = 0.0;
  for (var k4 = li; k4 < K4; k4 += 64u) { s += dot(x[xr + k4], wrow(min(n, p.N - 1u), k4, K4)); }
  partial[li] = s;
  workgroupBarrier();
  for (var half = 32u; half > 0u; half /= 2u) {
    if (li < half) { partial[li] += partial[li + half]; }
    workgroupBarrier();
  }
  if (li == 0u) { store1(wg.y, n, partial[0]); }
}

// ---- Backward, for training: the gradients of y = x @ w^T + b (f32 weights only). ----
//   dx[M, K] = dy @ w,   dw[N, K] = dy^T @ x,   db[N] = Σ_m dy[m, :].
// dy is [M, ldy]: its columns col0 .. col0+N are the gradients of the N weight rows (all of a
// layer's outputs, or one chunk of the lm_head's vocabulary); the columns past N may hold
// anything (the logits' padding) and are never used. dy is read four floats at a time, as one
// vec4 (dy4) when they are aligned (DY_VEC4), else as four scalars (dy).
// Design "cpu" computes 16 x 16 register tiles as the forward does: dx from 16 rows of dy and
// 16 columns of w, dw from 16 columns of dy and 16 of x, every read feeding 16 products; the
// tiles of dw in the first 16 columns also sum db from the dy values they read anyway.

override DY_VEC4: bool = true; // col0 and ldy are multiples of 4: dy comes as vec4s

struct GradParams {
  M: u32,          // rows of dy, x and dx
  N: u32,          // weight rows: columns col0 .. col0+N of dy
  K: u32,          // weight columns: columns of x and dx
  ldy: u32,        // row stride of dy
  col0: u32,       // column of dy that weight row 0 belongs to
  accumulate: u32, // 1: dx (or dw) += the product; 0: dx (or dw) = the product
  hasBias: u32,    // 1: db = Σ_m dy[m, col0 ..] (written)
  gelu: u32,       // 1: dx = the product · gelu_new'(gelu_x), GELU's backward (not with +=)
}

@group(0) @binding(7) var<uniform> gp: GradParams;
@group(0) @binding(8) var<storage, read> dy: array<f32>;              // [M, ldy]
@group(0) @binding(9) var<storage, read> dy4: array<vec4<f32>>;       // the same, as vec4s
@group(0) @binding(10) var<storage, read_write> dx: array<vec4<f32>>; // [M, K]
@group(0) @binding(11) var<storage, read_write> dw: array<vec4<f32>>; // [N, K]
@group(0) @binding(12) var<storage, read_write> db: array<f32>;       // [N]
@group(0) @binding(14) var<storage, read> gelu_x: array<vec4<f32>>;   // [M, K] (gelu only)

// The four floats of dy starting at element i (a multiple of 4 with DY_VEC4).
fn dyq(i: u32) -> vec4<f32> {
  if (DY_VEC4) { return dy4[i / 4u]; }
  return vec4(dy[i], dy[i + 1u], dy[i + 2u], dy[i + 3u]);
}

// The same for weight rows n .. n+3, with those from N on read as 0 (their columns of dy
// may hold anything, NaN included).
fn dyq_masked(i: u32, n: u32) -> vec4<f32> {
  return select(vec4(0.0), dyq(i), vec4(n) + vec4(0u, 1u, 2u, 3u) < vec4(gp.N));
}

// Where row m of dy (clamped to the last) meets weight row 0, as an element index.
fn dyrow(m: u32) -> u32 {
  return min(m, gp.M - 1u) * gp.ldy + gp.col0;
}

// w[n .. n+3 (clamped), 4·k4 ..] as the columns of a matrix: times dy[m, n .. n+3], the
// contribution of those weight rows to dx[m, 4·k4 ..].
fn wcols(n: u32, k4: u32, K4: u32) -> mat4x4<f32> {
  let last = gp.N - 1u;
  return mat4x4(
    w[min(n, last) * K4 + k4],
    w[min(n + 1u, last) * K4 + k4],
    w[min(n + 2u, last) * K4 + k4],
    w[min(n + 3u, last) * K4 + k4],
  );
}

// dx[m, 4·k4 ..] = v, or += v; nothing past the edges.
fn store_dx(m: u32, k4: u32, v: vec4<f32>) {
  let K4 = gp.K / 4u;
  if (m >= gp.M || k4 >= K4) { return; }
  let o = m * K4 + k4;
  var d = v;
  if (gp.gelu == 1u) {
    let a = gelu_x[o];
    d *= vec4(gelu_new_grad(a.x), gelu_new_grad(a.y), gelu_new_grad(a.z), gelu_new_grad(a.w));
  }
  if (gp.accumulate == 1u) { dx[o] += d; } else { dx[o] = d; }
}

// dw[n, 4·k4 ..] = v, or += v; nothing past the edges.
fn store_dw(n: u32, k4: u32, v: vec4<f32>) {
  let K4 = gp.K / 4u;
  if (n >= gp.N || k4 >= K4) { return; }
  let o = n * K4 + k4;
  if (gp.accumulate == 1u) { dw[o] += v; } else { dw[o] = v; }
}

// db[n .. n+3] = s, for the rows that exist.
fn store_db(n: u32, s: vec4<f32>) {
  for (var j = 0u; j < 4u; j++) {
    if (n + j < gp.N) { db[n + j] = s[j]; }
  }
}

fn store_dx16(m: u32, k4: u32, acc: Out16) {
  store_dx(m, k4, acc.o0);
  store_dx(m, k4 + 1u, acc.o1);
  store_dx(m, k4 + 2u, acc.o2);
  store_dx(m, k4 + 3u, acc.o3);
}

fn store_dw16(n: u32, k4: u32, acc: Out16) {
  store_dw(n, k4, acc.o0);
  store_dw(n, k4 + 1u, acc.o1);
  store_dw(n, k4 + 2u, acc.o2);
  store_dw(n, k4 + 3u, acc.o3);
}

// acc + the contribution of 4 weight rows (wk, 16 columns) weighted by one row's dy (d).
fn fma16_backward(acc: Out16, d: vec4<f32>, wk: W16) -> Out16 {
  return Out16(acc.o0 + wk.m0 * d, acc.o1 + wk.m1 * d, acc.o2 + wk.m2 * d, acc.o3 + wk.m3 * d);
}

// acc + d · xs: 16 gradients of one weight row from one row of dy (d) and of x (xs).
fn axpy16(acc: Out16, d: f32, xs: Out16) -> Out16 {
  return Out16(acc.o0 + d * xs.o0, acc.o1 + d * xs.o1, acc.o2 + d * xs.o2, acc.o3 + d * xs.o3);
}

// dx rows 16·gid.x .., columns 16·gid.y .. per invocation, summing over the weight rows 4 at
// a time. A workgroup's invocations take consecutive rows, so they read the same weights:
// at GPT-2's 256 x 3072 x 768 that ran in 0.85x the time of the transposed grid.
// Grid: (M / 16 / WG, K / 16).
@compute @workgroup_size(WG)
fn matmul_backward_input_rows16(@builtin(global_invocation_id) gid: vec3<u32>) {
  let K4 = gp.K / 4u;
  let k4 = gid.y * 4u;
  let m0 = gid.x * 16u;
  if (k4 >= K4 || m0 >= gp.M) { return; }
  let d0 = dyrow(m0); let d1 = dyrow(m0 + 1u); let d2 = dyrow(m0 + 2u);
  let d3 = dyrow(m0 + 3u); let d4 = dyrow(m0 + 4u); let d5 = dyrow(m0 + 5u);
  let d6 = dyrow(m0 + 6u); let d7 = dyrow(m0 + 7u); let d8 = dyrow(m0 + 8u);
  let d9 = dyrow(m0 + 9u); let d10 = dyrow(m0 + 10u); let d11 = dyrow(m0 + 11u);
  let d12 = dyrow(m0 + 12u); let d13 = dyrow(m0 + 13u); let d14 = dyrow(m0 + 14u);
  let d15 = dyrow(m0 + 15u);
  let z = Out16(vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
  var a0 = z; var a1 = z; var a2 = z; var a3 = z; var a4 = z; var a5 = z; var a6 = z;
  var a7 = z; var a8 = z; var a9 = z; var a10 = z; var a11 = z; var a12 = z; var a13 = z;
  var a14 = z; var a15 = z;
  for (var n = 0u; n < gp.N; n += 4u) {
    let wk = W16(wcols(n, k4, K4), wcols(n, k4 + 1u, K4), wcols(n, k4 + 2u, K4),
                 wcols(n, k4 + 3u, K4));
    a0 = fma16_backward(a0, dyq_masked(d0 + n, n), wk);
    a1 = fma16_backward(a1, dyq_masked(d1 + n, n), wk);
    a2 = fma16_backward(a2, dyq_masked(d2 + n, n), wk);
    a3 = fma16_backward(a3, dyq_masked(d3 + n, n), wk);
    a4 = fma16_backward(a4, dyq_masked(d4 + n, n), wk);
    a5 = fma16_backward(a5, dyq_masked(d5 + n, n), wk);
    a6 = fma16_backward(a6, dyq_masked(d6 + n, n), wk);
    a7 = fma16_backward(a7, dyq_masked(d7 + n, n), wk);
    a8 = fma16_backward(a8, dyq_masked(d8 + n, n), wk);
    a9 = fma16_backward(a9, dyq_masked(d9 + n, n), wk);
    a10 = fma16_backward(a10, dyq_masked(d10 + n, n), wk);
    a11 = fma16_backward(a11, dyq_masked(d11 + n, n), wk);
    a12 = fma16_backward(a12, dyq_masked(d12 + n, n), wk);
    a13 = fma16_backward(a13, dyq_masked(d13 + n, n), wk);
    a14 = fma16_backward(a14, dyq_masked(d14 + n, n), wk);
    a15 = fma16_backward(a15, dyq_masked(d15 + n, n), wk);
  }
  store_dx16(m0, k4, a0);
  store_dx16(m0 + 1u, k4, a1);
  store_dx16(m0 + 2u, k4, a2);
  store_dx16(m0 + 3u, k4, a3);
  store_dx16(m0 + 4u, k4, a4);
  store_dx16(m0 + 5u, k4, a5);
  store_dx16(m0 + 6u, k4, a6);
  store_dx16(m0 + 7u, k4, a7);
  store_dx16(m0 + 8u, k4, a8);
  store_dx16(m0 + 9u, k4, a9);
  store_dx16(m0 + 10u, k4, a10);
  store_dx16(m0 + 11u, k4, a11);
  store_dx16(m0 + 12u, k4, a12);
  store_dx16(m0 + 13u, k4, a13);
  store_dx16(m0 + 14u, k4, a14);
  store_dx16(m0 + 15u, k4, a15);
}

// dw rows n0 .. n0+15, columns 16·gid.x .. per invocation, summing over the rows of dy and x;
// with hasBias, the invocations of the first 16 columns also write db[n0 .. n0+15].
// Grid: (K / 16 / WG, N / 16).
@compute @workgroup_size(WG)
fn matmul_backward_weight_rows16(@builtin(global_invocation_id) gid: vec3<u32>) {
  let K4 = gp.K / 4u;
  let k4 = gid.x * 4u;
  let n0 = gid.y * 16u;
  if (k4 >= K4) { return; }
  let z = Out16(vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
  var a0 = z; var a1 = z; var a2 = z; var a3 = z; var a4 = z; var a5 = z; var a6 = z;
  var a7 = z; var a8 = z; var a9 = z; var a10 = z; var a11 = z; var a12 = z; var a13 = z;
  var a14 = z; var a15 = z;
  var bias = z; // Σ_m dy[m, n0 .. n0+15]
  for (var m = 0u; m < gp.M; m++) {
    let xr = m * K4 + k4;
    let xs = Out16(x[xr], x[xr + 1u], x[xr + 2u], x[xr + 3u]);
    let dr = m * gp.ldy + gp.col0 + n0;
    let d = Out16(dyq(dr), dyq(dr + 4u), dyq(dr + 8u), dyq(dr + 12u));
    a0 = axpy16(a0, d.o0.x, xs);
    a1 = axpy16(a1, d.o0.y, xs);
    a2 = axpy16(a2, d.o0.z, xs);
    a3 = axpy16(a3, d.o0.w, xs);
    a4 = axpy16(a4, d.o1.x, xs);
    a5 = axpy16(a5, d.o1.y, xs);
    a6 = axpy16(a6, d.o1.z, xs);
    a7 = axpy16(a7, d.o1.w, xs);
    a8 = axpy16(a8, d.o2.x, xs);
    a9 = axpy16(a9, d.o2.y, xs);
    a10 = axpy16(a10, d.o2.z, xs);
    a11 = axpy16(a11, d.o2.w, xs);
    a12 = axpy16(a12, d.o3.x, xs);
    a13 = axpy16(a13, d.o3.y, xs);
    a14 = axpy16(a14, d.o3.z, xs);
    a15 = axpy16(a15, d.o3.w, xs);
    bias = Out16(bias.o0 + d.o0, bias.o1 + d.o1, bias.o2 + d.o2, bias.o3 + d.o3);
  }
  store_dw16(n0, k4, a0);
  store_dw16(n0 + 1u, k4, a1);
  store_dw16(n0 + 2u, k4, a2);
  store_dw16(n0 + 3u, k4, a3);
  store_dw16(n0 + 4u, k4, a4);
  store_dw16(n0 + 5u, k4, a5);
  store_dw16(n0 + 6u, k4, a6);
  store_dw16(n0 + 7u, k4, a7);
  store_dw16(n0 + 8u, k4, a8);
  store_dw16(n0 + 9u, k4, a9);
  store_dw16(n0 + 10u, k4, a10);
  store_dw16(n0 + 11u, k4, a11);
  store_dw16(n0 + 12u, k4, a12);
  store_dw16(n0 + 13u, k4, a13);
  store_dw16(n0 + 14u, k4, a14);
  store_dw16(n0 + 15u, k4, a15);
  if (gp.hasBias == 1u && gid.x == 0u) {
    store_db(n0, bias.o0);
    store_db(n0 + 4u, bias.o1);
    store_db(n0 + 8u, bias.o2);
    store_db(n0 + 12u, bias.o3);
  }
}

// Design "gpu": 64 x 64 tiles of dx per workgroup, as matmul_tiled: each step stages
// xTile[r][j] = dy[m0 + r, n0 + j] and wTile[k][j] = w[n0 + j, k0 + k] for 16 weight rows.
// Grid: (K / 64, M / 64).
@compute @workgroup_size(16, 16)
fn matmul_backward_input_tiled(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  let K4 = gp.K / 4u;
  let m0 = wg.y * 64u;
  let k40 = wg.x * 16u; // first vec4 of the tile's columns
  let i = lid.y * 16u + lid.x;
  let r = i / 4u;        // this invocation stages dy row m0 + r, weight rows n0 + 4·(i % 4) ..
  let c = 4u * (i % 4u);
  let wn = i / 16u;      // and w row n0 + wn, vec4 k40 + i % 16
  let wq = i % 16u;
  var acc: array<vec4<f32>, 4>; // dx rows m0 + 4·lid.y + j, columns k40·4 + 4·lid.x ..
  for (var n0 = 0u; n0 < gp.N; n0 += 16u) {
    let d = dyq_masked(dyrow(m0 + r) + n0 + c, n0 + c);
    var wv = vec4(0.0);
    if (n0 + wn < gp.N && k40 + wq < K4) { wv = w[(n0 + wn) * K4 + k40 + wq]; }
    for (var j = 0u; j < 4u; j++) {
      xTile[r][c + j] = d[j];
      wTile[4u * wq + j][wn] = wv[j];
    }
    workgroupBarrier();
    tile_products(&acc, lid.xy);
    workgroupBarrier();
  }
  for (var j = 0u; j < 4u; j++) { store_dx(m0 + 4u * lid.y + j, k40 + lid.x, acc[j]); }
}

// Design "gpu": 64 x 64 tiles of dw per workgroup; each step stages 16 rows of dy and x as
// xTile[n][m] = dy[m0 + m, n0 + n] and wTile[k][m] = x[m0 + m, k0 + k]. The workgroups of the
// first column tile also sum db. Grid: (K / 64, N / 64).
@compute @workgroup_size(16, 16)
fn matmul_backward_weight_tiled(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  let K4 = gp.K / 4u;
  let n0 = wg.y * 64u;
  let k40 = wg.x * 16u;
  let i = lid.y * 16u + lid.x;
  let s = i / 16u; // this invocation stages row m0 + s: dy columns n0 + 4·q .., x vec4 k40 + q
  let q = i % 16u;
  var acc: array<vec4<f32>, 4>; // dw rows n0 + 4·lid.y + j, columns k40·4 + 4·lid.x ..
  var bias = vec4(0.0);         // Σ_m dy[m, n0 + 4·lid.y ..], summed where lid.x = 0
  for (var m0 = 0u; m0 < gp.M; m0 += 16u) {
    var d = vec4(0.0);
    var xv = vec4(0.0);
    if (m0 + s < gp.M) {
      d = dyq(dyrow(m0 + s) + n0 + 4u * q);
      xv = x[(m0 + s) * K4 + min(k40 + q, K4 - 1u)];
    }
    for (var j = 0u; j < 4u; j++) {
      xTile[4u * q + j][s] = d[j];
      wTile[4u * q + j][s] = xv[j];
    }
    workgroupBarrier();
    tile_products(&acc, lid.xy);
    if (lid.x == 0u) {
      for (var k = 0u; k < 16u; k++) {
        bias += vec4(xTile[4u * lid.y][k], xTile[4u * lid.y + 1u][k], xTile[4u * lid.y + 2u][k],
                     xTile[4u * lid.y + 3u][k]);
      }
    }
    workgroupBarrier();
  }
  for (var j = 0u; j < 4u; j++) { store_dw(n0 + 4u * lid.y + j, k40 + lid.x, acc[j]); }
  if (gp.hasBias == 1u && wg.x == 0u && lid.x == 0u) { store_db(n0 + 4u * lid.y, bias); }
}
