// Causal self-attention over the KV cache, in HF's eager order:
//   scores = (q . k) * head_dim^-0.5,  p = softmax(scores) (softmax.wgsl),  out = p @ v.
//
// store_kv: copies the K and V thirds of this step's qkv into the cache at positions
//           pos0 .. pos0+T-1 (cache layout [n_head, P, head_dim]).
// scores:   s[h, t, j] for keys j <= pos0 + t; later keys are left for softmax to mask.
// values:   out[t, h*HD ..] = sum over j <= pos0 + t of p[h, t, j] * v[h, j].
// Like matmul.wgsl, each invocation keeps a register tile of TM queries and reads vec4s;
// the grid covers all P cache rows and invocations past the causal limit return at once,
// so one recorded dispatch serves every cache length. head_dim must be a multiple of 4.

override HD: u32 = 64u;     // head_dim
override TM: u32 = 4u;      // queries per invocation, 1..8

struct Params {
  T: u32,          // query tokens in this step
  C: u32,          // n_embd = n_head * head_dim
  P: u32,          // cache rows per head (n_positions)
  scale: f32,      // head_dim^-0.5
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> step: array<u32>;          // [pos0]
@group(0) @binding(2) var<storage, read> qkv: array<f32>;           // [T, 3C]: q | k | v
@group(0) @binding(3) var<storage, read_write> kCache: array<f32>;  // [n_head, P, HD]
@group(0) @binding(4) var<storage, read_write> vCache: array<f32>;  // [n_head, P, HD]
@group(0) @binding(5) var<storage, read> q4: array<vec4<f32>>;      // qkv as vec4
@group(0) @binding(6) var<storage, read> k4: array<vec4<f32>>;      // kCache as vec4
@group(0) @binding(7) var<storage, read> v4: array<vec4<f32>>;      // vCache as vec4
@group(0) @binding(8) var<storage, read_write> probs: array<f32>;   // [n_head, T, P]
@group(0) @binding(9) var<storage, read_write> out4: array<vec4<f32>>; // [T, C] as vec4

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


// probs[h, t, j] = (q[t, h] . k[h, j]) * scale for j <= pos0 + t.
// One invocation: TM queries x 4 keys; grid (P / 4 / 64, T / TM, n_head).
@compute @workgroup_size(64)
fn scores(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.z;
  let j0 = gid.x * 4u;        // first of 4 keys
  let r0 = gid.y * TM;        // first query
  let pos0 = step[0];
  let rows = min(TM, p.T - r0);
  if (j0 > pos0 + r0 + rows - 1u) { return; } // past every query's causal limit
  let HD4 = HD / 4u;
  let kb = h * p.P * HD4;
  let k0 = kb + min(j0, p.P - 1u) * HD4;
  let k1 = kb + min(j0 + 1u, p.P - 1u) * HD4;
  let k2 = kb + min(j0 + 2u, p.P - 1u) * HD4;
  let k3 = kb + min(j0 + 3u, p.P - 1u) * HD4;
  var qrow: array<u32, 8>;
  for (var r = 0u; r < TM; r++) { qrow[r] = (min(r0 + r, p.T - 1u) * 3u * p.C + h * HD) / 4u; }
  var acc: array<vec4<f32>, 8>;
  for (var d = 0u; d < HD4; d++) {
    let ka = k4[k0 + d];
    let kb1 = k4[k1 + d];
    let kc = k4[k2 + d];
    let kd = k4[k3 + d];
    for (var r = 0u; r < TM; r++) {
      let q = q4[qrow[r] + d];
      acc[r] += vec4(dot(q, ka), dot(q, kb1), dot(q, kc), dot(q, kd));
    }
  }
  for (var r = 0u; r < rows; r++) {
    let t = r0 + r;
    let row = (h * p.T + t) * p.P;
    for (var j = 0u; j < 4u; j++) {
      if (j0 + j <= pos0 + t) { probs[row + j0 + j] = acc[r][j] * p.scale; }
    }
  }
}

// out[t, h*HD + 4c ..] = sum over j <= pos0 + t of probs[h, t, j] * v[h, j, 4c ..].
// One invocation: TM queries x one vec4 of head dimensions; grid (HD / 4, T / TM, n_head).
@compute @workgroup_size(HD / 4u)
fn values(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.z;
  let c = gid.x;              // vec4 column within the head
  let r0 = gid.y * TM;
  let pos0 = step[0];
  let HD4 = HD / 4u;
  let rows = min(TM, p.T - r0);
  var prow: array<u32, 8>;
  var last: array<u32, 8>;    // last key each query sees
  for (var r = 0u; r < TM; r++) {
    let t = min(r0 + r, p.T - 1u);
    prow[r] = (h * p.T + t) * p.P;
    last[r] = pos0 + t;
  }
  var acc: array<vec4<f32>, 8>;
  let keys = pos0 + r0 + rows;
  for (var j = 0u; j < keys; j++) {
    let v = v4[(h * p.P + j) * HD4 + c];
    for (var r = 0u; r < TM; r++) {
      let w = select(0.0, probs[prow[r] + j], j <= last[r]);
      acc[r] = fma(vec4(w), v, acc[r]);
    }
  }
  for (var r = 0u; r < rows; r++) {
    out4[((r0 + r) * p.C + h * HD) / 4u + c] = acc[r];
  }
}
