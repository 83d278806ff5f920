// Causal softmax rows, in place, as torch.softmax: p = exp(s - max) / sum(exp(s - max)).
// x is [rows, ld] with rows = n_head * T (row r is query t = r % T); row r holds the scores
// of keys 0 .. pos0 + t, and the entries after them are masked out: set to 0 when
// zeroTail is 1 (so the rows read as whole probability distributions), else left alone.

struct Params {
  rows: u32,
  T: u32,       // queries per head
  ld: u32,      // row stride
  zeroTail: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> step: array<u32>; // [pos0]
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.y * 65535u * 64u + gid.x;
  if (r >= p.rows) { return; }
  let n = step[0] + r % p.T + 1u;
  let row = r * p.ld;
  var m = x[row];
  for (var j = 1u; j < n; j++) { m = max(m, x[row + j]); }
  var sum = 0.0;
  for (var j = 0u; j < n; j++) {
    let e = exp(x[row + j] - m);
    x[row + j] = e;
    sum += e;
  }
  for (var j = 0u; j < n; j++) { x[row + j] = x[row + j] / sum; }
  if (p.zeroTail == 1u) {
    for (var j = n; j < p.ld; j++) { x[row + j] = 0.0; }
  }
}
