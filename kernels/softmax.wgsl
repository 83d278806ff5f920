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
@group(0) @binding(1) var<storage, read> start: array<u32>; // [pos0]
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.y * 65535u * 64u + gid.x;
  if (r >= p.rows) { return; }
  let n = start[0] + r % p.T + 1u;
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

// Softmax cross-entropy over the vocabulary, fused with its gradient, one workgroup per row:
//   loss[n] = log(sum exp(x - max)) - (x[target] - max)
//   x[j] <- (exp(x[j] - max) / sum - onehot(target)[j]) * scale     for j < V, in place.
// The row's max and sum are reduced in workgroup memory in a fixed order (deterministic).
// Each invocation reads and writes only its own columns j = li, li + CE_WG, ..., so the
// invocation that owns the target column reads x[target] before overwriting it.
// A target >= V gives a NaN loss. Grid: (rows in this dispatch).

const CE_WG = 256u;

struct CrossEntropyParams {
  row0: u32,    // first row of this dispatch
  ld: u32,      // row stride of logits
  V: u32,       // columns in the softmax
  scale: f32,   // gradient scale (1 / rows for a mean loss)
  rows: u32,    // rows in this dispatch
}

@group(0) @binding(3) var<uniform> ce: CrossEntropyParams;
@group(0) @binding(4) var<storage, read_write> logits: array<f32>; // [N, ld]
@group(0) @binding(5) var<storage, read> targets: array<u32>;      // [N]
@group(0) @binding(6) var<storage, read_write> losses: array<f32>; // [N]

var<workgroup> ceShared: array<f32, CE_WG>;

// A quiet NaN, built at run time: Tint (Dawn's WGSL compiler) evaluates bitcast<f32>(0x7fc00000u)
// as a constant and refuses it, since a WGSL constant cannot be NaN.
fn quiet_nan() -> f32 {
  var bits = 0x7fc00000u;
  return bitcast<f32>(bits);
}

// Reduces every invocation's v to one value: op 0 max, 1 sum. Every invocation calls it.
fn ceReduce(li: u32, v: f32, op: u32) -> f32 {
  ceShared[li] = v;
  workgroupBarrier();
  for (var half = CE_WG / 2u; half > 0u; half /= 2u) {
    if (li < half) {
      let o = ceShared[li + half];
      ceShared[li] = select(ceShared[li] + o, max(ceShared[li], o), op == 0u);
    }
    workgroupBarrier();
  }
  let r = ceShared[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(CE_WG)
fn cross_entropy(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let n = ce.row0 + wg.x;
  let row = n * ce.ld;
  let wanted = targets[n]; // the target token
  var m = -3.0e38;
  for (var j = li; j < ce.V; j += CE_WG) { m = max(m, logits[row + j]); }
  m = ceReduce(li, m, 0u);
  var sum = 0.0;
  for (var j = li; j < ce.V; j += CE_WG) { sum += exp(logits[row + j] - m); }
  sum = ceReduce(li, sum, 1u);
  let logSum = log(sum);
  for (var j = li; j < ce.V; j += CE_WG) {
    let x = logits[row + j] - m;
    if (j == wanted) { losses[n] = logSum - x; }
    logits[row + j] = (exp(x) / sum - select(0.0, 1.0, j == wanted)) * ce.scale;
  }
  if (li == 0u && wanted >= ce.V) { losses[n] = quiet_nan(); }
}

// The same for a small vocabulary (a char model's 65 columns): one invocation per row, its
// columns in order, no workgroup memory and no barriers. Grid: rows / 64.
@compute @workgroup_size(64)
fn cross_entropy_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = ce.row0 + gid.x;
  if (gid.x >= ce.rows) { return; }
  let row = n * ce.ld;
  let wanted = targets[n];
  var m = -3.0e38;
  for (var j = 0u; j < ce.V; j++) { m = max(m, logits[row + j]); }
  var sum = 0.0;
  for (var j = 0u; j < ce.V; j++) { sum += exp(logits[row + j] - m); }
  let logSum = log(sum);
  losses[n] = select(quiet_nan(), logSum - (logits[row + min(wanted, ce.V - 1u)] - m),
    wanted < ce.V);
  for (var j = 0u; j < ce.V; j++) {
    let x = logits[row + j] - m;
    logits[row + j] = (exp(x) / sum - select(0.0, 1.0, j == wanted)) * ce.scale;
  }
}
