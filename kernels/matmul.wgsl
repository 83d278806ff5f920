// Matrix products of GPT-2: the Conv1D layers and the tied lm_head.
//
// llvmpipe (and most GPUs) pay for memory reads, not arithmetic, so each invocation keeps a
// register tile of TM rows x 4*TN columns and reads every operand as vec4: one read of a
// weight vec4 feeds TM rows. TM = 1 is the decode shape (one row), larger TM the prefill.
// Rows and columns past the edge are clamped for reads and skipped for writes, so any M
// works; K and N must be multiples of 4.

override TM: u32 = 4u;  // rows per invocation, 1..8
override TN: u32 = 2u;  // vec4 column groups per invocation, 1..2
override WG: u32 = 64u; // invocations per workgroup

struct Params {
  M: u32,      // rows of x and y
  N: u32,      // columns of y (vocab rows of this weight chunk for matmul_wt)
  K: u32,      // inner dimension
  xRow0: u32,  // first row of x to read
  yCol0: u32,  // column of y that weight column (row, for matmul_wt) 0 lands in
  ldy: u32,    // row stride of y in floats
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> logits: array<f32>;

// y[M, N] = x[M, K] @ w[K, N] + b[N]   (HF Conv1D: weight stored [in, out])
@compute @workgroup_size(WG)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let K4 = p.K / 4u;
  let N4 = p.N / 4u;
  let c0 = gid.x * TN;            // first vec4 column of this invocation
  let r0 = gid.y * TM;            // first row
  if (c0 >= N4) { return; }
  var acc: array<array<vec4<f32>, 2>, 8>;
  var xrow: array<u32, 8>;
  for (var r = 0u; r < TM; r++) { xrow[r] = (p.xRow0 + min(r0 + r, p.M - 1u)) * K4; }
  var col: array<u32, 2>;
  for (var c = 0u; c < TN; c++) { col[c] = min(c0 + c, N4 - 1u); }
  for (var k4 = 0u; k4 < K4; k4++) {
    let wrow = k4 * 4u * N4;
    for (var c = 0u; c < TN; c++) {
      let w0 = w[wrow + col[c]];
      let w1 = w[wrow + N4 + col[c]];
      let w2 = w[wrow + 2u * N4 + col[c]];
      let w3 = w[wrow + 3u * N4 + col[c]];
      for (var r = 0u; r < TM; r++) {
        let xv = x[xrow[r] + k4];
        acc[r][c] = fma(vec4(xv.x), w0, acc[r][c]);
        acc[r][c] = fma(vec4(xv.y), w1, acc[r][c]);
        acc[r][c] = fma(vec4(xv.z), w2, acc[r][c]);
        acc[r][c] = fma(vec4(xv.w), w3, acc[r][c]);
      }
    }
  }
  for (var r = 0u; r < TM; r++) {
    let row = r0 + r;
    if (row >= p.M) { break; }
    for (var c = 0u; c < TN; c++) {
      if (c0 + c < N4) {
        y[(row * p.ldy + p.yCol0) / 4u + c0 + c] = acc[r][c] + b[c0 + c];
      }
    }
  }
}

// logits[M, N] = x[M, K] @ w[N, K]^T   (lm_head: w is wte, or an untied nn.Linear weight)
// w here is a chunk of N rows; its row j lands in logits column yCol0 + j.
@compute @workgroup_size(WG)
fn matmul_wt(@builtin(global_invocation_id) gid: vec3<u32>) {
  let K4 = p.K / 4u;
  let v0 = gid.x * 4u;            // first of 4 weight rows (output columns)
  let r0 = gid.y * TM;
  if (v0 >= p.N) { return; }
  var acc: array<vec4<f32>, 8>;
  var xrow: array<u32, 8>;
  for (var r = 0u; r < TM; r++) { xrow[r] = (p.xRow0 + min(r0 + r, p.M - 1u)) * K4; }
  let wr0 = min(v0, p.N - 1u) * K4;
  let wr1 = min(v0 + 1u, p.N - 1u) * K4;
  let wr2 = min(v0 + 2u, p.N - 1u) * K4;
  let wr3 = min(v0 + 3u, p.N - 1u) * K4;
  for (var k4 = 0u; k4 < K4; k4++) {
    let w0 = w[wr0 + k4];
    let w1 = w[wr1 + k4];
    let w2 = w[wr2 + k4];
    let w3 = w[wr3 + k4];
    for (var r = 0u; r < TM; r++) {
      let xv = x[xrow[r] + k4];
      acc[r] += vec4(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
    }
  }
  // logits columns yCol0 + v0 need not be a multiple of 4: write scalars.
  for (var r = 0u; r < TM; r++) {
    let row = r0 + r;
    if (row >= p.M) { break; }
    for (var j = 0u; j < 4u; j++) {
      if (v0 + j < p.N) {
        logits[row * p.ldy + p.yCol0 + v0 + j] = acc[r][j];
      }
    }
  }
}
