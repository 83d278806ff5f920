// Causal self-attention over the KV cache.
//
// store_kv: copies the K and V thirds of this step's qkv into the cache at positions
//           pos0 .. pos0+T-1 (cache layout [n_head, n_positions, head_dim]).
// attend:   one workgroup per (query t, head h): scores against keys 0 .. pos0+t,
//           softmax, weighted sum of values, as HF's eager attention computes it:
//           p = softmax(q . k * head_dim^-0.5), out = p @ v.

override HD: u32 = 64u;     // head_dim
override KEYS: u32 = 1024u; // n_positions: the most keys a query can see
override WG: u32 = 64u;     // invocations per workgroup (a power of two)

struct Params {
  T: u32,          // query tokens in this step
  C: u32,          // n_embd = n_head * head_dim
  P: u32,          // n_positions (cache rows per head)
  scale: f32,      // head_dim^-0.5
  writeProbs: u32, // 1: also write the softmax rows to probs
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> step: array<u32>;          // [pos0]
@group(0) @binding(2) var<storage, read> qkv: array<f32>;           // [T, 3C]: q | k | v
@group(0) @binding(3) var<storage, read_write> kCache: array<f32>;  // [n_head, P, HD]
@group(0) @binding(4) var<storage, read_write> vCache: array<f32>;  // [n_head, P, HD]
@group(0) @binding(5) var<storage, read_write> out: array<f32>;     // [T, C], heads side by side
@group(0) @binding(6) var<storage, read_write> probs: array<f32>;   // [n_head, T, P] if writeProbs

@compute @workgroup_size(64)
fn store_kv(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * 65535u * 64u + gid.x;
  if (i >= p.T * p.C) { return; }
  let t = i / p.C;
  let c = i % p.C;
  let h = c / HD;
  let at = (h * p.P + step[0] + t) * HD + c % HD;
  kCache[at] = qkv[t * 3u * p.C + p.C + c];
  vCache[at] = qkv[t * 3u * p.C + 2u * p.C + c];
}

var<workgroup> q: array<f32, HD>;
var<workgroup> scores: array<f32, KEYS>;
var<workgroup> red: array<f32, WG>;

// Reduces red[0..WG) to red[0] with max (op 0) or sum (op 1); all invocations call it.
fn reduce(tid: u32, op: u32) {
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (tid < s) {
      red[tid] = select(red[tid] + red[tid + s], max(red[tid], red[tid + s]), op == 0u);
    }
  }
  workgroupBarrier();
}

@compute @workgroup_size(WG)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.x;
  let h = wid.y;
  let keys = step[0] + t + 1u;
  let kv0 = h * p.P * HD; // this head's cache rows
  for (var j = tid; j < HD; j += WG) { q[j] = qkv[t * 3u * p.C + h * HD + j]; }
  workgroupBarrier();

  var m = -3.0e38;
  for (var s = tid; s < keys; s += WG) {
    var dot = 0.0;
    for (var j = 0u; j < HD; j++) { dot = fma(q[j], kCache[kv0 + s * HD + j], dot); }
    scores[s] = dot * p.scale;
    m = max(m, scores[s]);
  }
  red[tid] = m;
  reduce(tid, 0u);
  m = red[0];
  workgroupBarrier();

  var sum = 0.0;
  for (var s = tid; s < keys; s += WG) {
    let e = exp(scores[s] - m);
    scores[s] = e;
    sum += e;
  }
  red[tid] = sum;
  reduce(tid, 1u);
  let inv = 1.0 / red[0];
  for (var s = tid; s < keys; s += WG) {
    scores[s] *= inv;
    if (p.writeProbs == 1u) { probs[(h * p.T + t) * p.P + s] = scores[s]; }
  }
  // Keys past the causal limit have probability 0. Write it: the probs buffer is reused by
  // every step of this shape, and an earlier step with a larger pos0 left its rows there.
  if (p.writeProbs == 1u) {
    for (var s = keys + tid; s < p.P; s += WG) { probs[(h * p.T + t) * p.P + s] = 0.0; }
  }
  workgroupBarrier();

  for (var j = tid; j < HD; j += WG) {
    var acc = 0.0;
    for (var s = 0u; s < keys; s++) { acc = fma(scores[s], vCache[kv0 + s * HD + j], acc); }
    out[t * p.C + h * HD + j] = acc;
  }
}
