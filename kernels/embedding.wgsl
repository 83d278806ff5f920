// Token + position embeddings: x[t] = wte[ids[t]] + wpe[pos0 + t], or wpe[positions[t]]
// when the rows belong to different sequences (batched decoding).
// wte may be bound in row chunks (GPT-2's 50257 x 768 table is larger than one binding):
// a dispatch per chunk writes the rows whose token falls in it, so each row is written once.
// With F16, wte is stored as f16 pairs (as matmul.wgsl's weights) and read through wteh.

override F16: bool = false;
override WG: u32 = 64u; // invocations per workgroup of the backward kernels

struct Params {
  T: u32,     // tokens
  C4: u32,    // n_embd / 4
  row0: u32,  // first vocab row of this wte chunk
  rows: u32,  // vocab rows in this chunk
  perRow: u32, // 1: row t's position is positions[t] (rows of different sequences)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;          // [T]
@group(0) @binding(2) var<storage, read> start: array<u32>;         // [pos0]
@group(0) @binding(3) var<storage, read> wte: array<vec4<f32>>;    // [rows, C] chunk
@group(0) @binding(4) var<storage, read> wpe: array<vec4<f32>>;    // [n_positions, C]
@group(0) @binding(5) var<storage, read_write> x: array<vec4<f32>>; // [T, C]
@group(0) @binding(6) var<storage, read> positions: array<u32>;    // [T] with perRow
@group(0) @binding(7) var<storage, read> wteh: array<vec2<u32>>;   // [rows, C] as f16 pairs

fn token4(v: u32, c: u32) -> vec4<f32> {
  if (F16) {
    let h = wteh[v * p.C4 + c];
    return vec4(unpack2x16float(h.x), unpack2x16float(h.y));
  }
  return wte[v * p.C4 + c];
}

@compute @workgroup_size(64)
fn embedding(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * 65535u * 64u + gid.x;
  if (i >= p.T * p.C4) { return; }
  let t = i / p.C4;
  let c = i % p.C4;
  let v = ids[t] - p.row0; // wraps around for ids below row0
  if (v >= p.rows) { return; }
  let pos = select(start[0] + t, positions[t], p.perRow == 1u);
  x[i] = token4(v, c) + wpe[pos * p.C4 + c];
}

// ---- Backward, for training: B sequences of T tokens, row n = b·T + t at position t.
//   dwte[v] += Σ dx[n] over the rows n whose token is v,   dwpe[t] = Σ_b dx[b·T + t].
// WGSL has no float atomics, so every sum has one owner that adds in row order, and no
// invocation loops over more than N rows (llvmpipe ends an invocation's loops silently past
// 65,535 iterations in all; the wrapper refuses larger N):
// embedding_links:     links[n] = the next row after n holding n's token (N if none), with
//                      bit 31 set when no earlier row holds it. Grid: (N / WG).
// embedding_backward:  invocation (n, c) of a row whose token is first seen there walks the
//                      token's rows through links and adds vec4 c of each into its dwte row.
//                      A dispatch per wte chunk, as in the forward. Grid: workgrid(N · C4).
// embedding_positions: invocation (t, c) writes dwpe[t] vec4 c (0 from row T on).
//                      Grid: workgrid(P · C4).

struct GradParams {
  N: u32,         // rows of dx: B·T
  T: u32,         // tokens per sequence
  P: u32,         // rows of dwpe
  C4: u32,        // n_embd / 4
  row0: u32,      // first vocab row of this dwte chunk
  rows: u32,      // vocab rows in this chunk
}

const FIRST = 0x80000000u; // links: no earlier row holds this token

@group(0) @binding(8) var<uniform> gp: GradParams;
@group(0) @binding(9) var<storage, read> dx: array<vec4<f32>>;          // [N, C]
@group(0) @binding(10) var<storage, read_write> dwte: array<vec4<f32>>; // [rows, C] chunk
@group(0) @binding(11) var<storage, read_write> dwpe: array<vec4<f32>>; // [P, C]
@group(0) @binding(12) var<storage, read_write> links: array<u32>;      // [N]
@group(0) @binding(13) var<storage, read> next: array<u32>;             // links, to read

// Each row looks back to the nearest row of its token, then on to the next one: at most
// n + (N - 1 - n) iterations.
@compute @workgroup_size(WG)
fn embedding_links(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= gp.N) { return; }
  let v = ids[r];
  var first = FIRST;
  for (var n = r; n > 0u; n--) {
    if (ids[n - 1u] == v) {
      first = 0u;
      break;
    }
  }
  var following = gp.N;
  for (var n = r + 1u; n < gp.N; n++) {
    if (ids[n] == v) {
      following = n;
      break;
    }
  }
  links[r] = first | following;
}

// One iteration per row of the token: at most N.
@compute @workgroup_size(WG)
fn embedding_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * 65535u * WG + gid.x;
  if (i >= gp.N * gp.C4) { return; }
  let r = i / gp.C4;
  let c = i % gp.C4;
  if ((next[r] & FIRST) == 0u) { return; } // an earlier row holds this token and sums it
  let v = ids[r] - gp.row0; // wraps around for ids below row0
  if (v >= gp.rows) { return; } // another chunk's token
  let o = v * gp.C4 + c;
  var s = dwte[o];
  var n = r;
  loop {
    s += dx[n * gp.C4 + c];
    n = next[n] & ~FIRST;
    if (n >= gp.N) { break; }
  }
  dwte[o] = s;
}

// One iteration per sequence: B = N / T.
@compute @workgroup_size(WG)
fn embedding_positions(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * 65535u * WG + gid.x;
  if (i >= gp.P * gp.C4) { return; }
  let t = i / gp.C4;
  let c = i % gp.C4;
  var s = vec4(0.0);
  if (t < gp.T) {
    for (var n = t; n < gp.N; n += gp.T) { s += dx[n * gp.C4 + c]; }
  }
  dwpe[i] = s;
}
