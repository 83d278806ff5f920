// Causal self-attention over the KV cache, in HF's eager order:
//   scores = (q . k) * head_dim^-0.5,  p = softmax(scores) (softmax.wgsl),  out = p @ v.
//
// store_kv: encodes the K and V thirds of this step's qkv into the cache at positions
//           pos0 .. pos0+T-1 (the layout below; model/kv_cache.ts says who else writes it).
// scores:   s[h, t, j] for keys j <= pos0 + t; later keys are left for softmax to mask.
// values:   out[t, h*HD ..] = sum over j <= pos0 + t of p[h, t, j] * v[h, j].
// A dispatch may cover several sequences of T rows each (qkv rows row0 + b*T + t), each with
// its own cache slab: caches are [seqs * n_head, P, words] (words: head_dim values in kv_codec
// .wgsl's encoding; one sequence is [n_head, P, words]) and probs [seqs * n_head, T, P],
// slab z = b * n_head + h, and the grid's z is that slab (store_kv: the sequence b).
// Like matmul.wgsl, each invocation keeps a register tile of TM queries and reads vec4s;
// the grid covers all P cache rows and invocations past the causal limit return at once,
// so one recorded dispatch serves every cache length. head_dim must be a multiple of 4.
// The cache may hold f32, f16 or int8 values (KV); scores and values dequantize on read.

// HD (head_dim) and KV (how the cache stores values: f32, f16 or int8 with a scale per row)
// come from kv_codec.wgsl, which the wrapper puts in front, with the cache's encoding.
override TM: u32 = 4u;      // queries per invocation, 1..8

struct Params {
  T: u32,          // query tokens in this step
  C: u32,          // n_embd = n_head * head_dim
  P: u32,          // cache rows per head: the cache's capacity (n_positions when preallocated)
  scale: f32,      // head_dim^-0.5
  row0: u32,       // first row of qkv and out that this dispatch's T queries take
  zeroTail: u32,   // attend_one: 1 sets the softmax row past the causal limit to 0
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> start: array<u32>;          // [pos0]
@group(0) @binding(2) var<storage, read> qkv: array<f32>;           // [T, 3C]: q | k | v
@group(0) @binding(3) var<storage, read_write> kCache: array<u32>;  // [n_head, P, words]
@group(0) @binding(4) var<storage, read_write> vCache: array<u32>;  // [n_head, P, words]
@group(0) @binding(5) var<storage, read> q4: array<vec4<f32>>;      // qkv as vec4
@group(0) @binding(6) var<storage, read> k4: array<vec4<f32>>;      // kCache as vec4
@group(0) @binding(7) var<storage, read> v4: array<vec4<f32>>;      // vCache as vec4
@group(0) @binding(8) var<storage, read_write> probs: array<f32>;   // [n_head, T, P]
@group(0) @binding(9) var<storage, read_write> out4: array<vec4<f32>>; // [T, C] as vec4
@group(0) @binding(10) var<storage, read> kw: array<u32>;           // kCache's words, to read
@group(0) @binding(11) var<storage, read> vw: array<u32>;           // vCache's words, to read
@group(0) @binding(12) var<storage, read_write> kScale: array<f32>; // [n_head, P] with int8
@group(0) @binding(13) var<storage, read_write> vScale: array<f32>; // [n_head, P] with int8
@group(0) @binding(14) var<storage, read> dout4: array<vec4<f32>>;   // backward: [T, C] as vec4
@group(0) @binding(15) var<storage, read_write> dqkv4: array<vec4<f32>>; // [T, 3C] as vec4
@group(0) @binding(16) var<storage, read_write> dprobs: array<f32>; // [n_head, T, P]

// What kv_codec.wgsl reads through: this step's qkv, and the K (cache 0) or V (cache 1) bound.
fn kv_src(at: u32) -> f32 {
  return qkv[at];
}

fn kv_vec4(cache: u32, i4: u32) -> vec4<f32> {
  if (cache == 0u) { return k4[i4]; }
  return v4[i4];
}

fn kv_word(cache: u32, i: u32) -> u32 {
  if (cache == 0u) { return kw[i]; }
  return vw[i];
}

fn kv_scale(cache: u32, row: u32) -> f32 {
  if (cache == 0u) { return kScale[row]; }
  return vScale[row];
}

fn kv_put_scale(cache: u32, row: u32, s: f32) {
  if (cache == 0u) { kScale[row] = s; } else { vScale[row] = s; }
}

// Dimensions 4·d4 .. 4·d4+3 of cache row `row` (= head · P + position) of K or V.
fn key4(row: u32, d4: u32) -> vec4<f32> {
  return kv_load4(0u, row, d4);
}

fn value4(row: u32, d4: u32) -> vec4<f32> {
  return kv_load4(1u, row, d4);
}

@compute @workgroup_size(64)
fn store_kv(@builtin(global_invocation_id) gid: vec3<u32>) {
  let words = HD / kv_per_word();
  let nHead = p.C / HD;
  let b = gid.z; // sequence
  let i = gid.y * 65535u * 64u + gid.x;
  if (i >= p.T * nHead * words) { return; }
  let w = i % words;
  let h = (i / words) % nHead;
  let t = i / (words * nHead);
  let row = (b * nHead + h) * p.P + start[0] + t; // cache row of this token's head h
  let q = (p.row0 + b * p.T + t) * 3u * p.C + h * HD; // its q in qkv; k is C further, v 2C
  kCache[row * words + w] = kv_store_word(0u, row, q + p.C, w, HD);
  vCache[row * words + w] = kv_store_word(1u, row, q + 2u * p.C, w, HD);
}


// The first qkv row of sequence z / n_head (z = grid's z), as a row index.
fn seqRow0(z: u32) -> u32 {
  return p.row0 + z / (p.C / HD) * p.T;
}

// Where head z % n_head starts within a row of C columns.
fn headCol(z: u32) -> u32 {
  return z % (p.C / HD) * HD;
}

// probs[z, t, j] = (q[t, h] . k[z, j]) * scale for j <= pos0 + t.
// One invocation: TM queries x 4 keys; grid (P / 4 / 64, T / TM, seqs * n_head).
@compute @workgroup_size(64)
fn scores(@builtin(global_invocation_id) gid: vec3<u32>) {
  let z = gid.z;
  let j0 = gid.x * 4u;        // first of 4 keys
  let r0 = gid.y * TM;        // first query
  let pos0 = start[0];
  let rows = min(TM, p.T - r0);
  if (j0 > pos0 + r0 + rows - 1u) { return; } // past every query's causal limit
  let HD4 = HD / 4u;
  let k0 = z * p.P + min(j0, p.P - 1u); // cache rows of the 4 keys
  let k1 = z * p.P + min(j0 + 1u, p.P - 1u);
  let k2 = z * p.P + min(j0 + 2u, p.P - 1u);
  let k3 = z * p.P + min(j0 + 3u, p.P - 1u);
  var qrow: array<u32, 8>;
  for (var r = 0u; r < TM; r++) {
    qrow[r] = ((seqRow0(z) + min(r0 + r, p.T - 1u)) * 3u * p.C + headCol(z)) / 4u;
  }
  var acc: array<vec4<f32>, 8>;
  for (var d = 0u; d < HD4; d++) {
    let ka = key4(k0, d);
    let kb1 = key4(k1, d);
    let kc = key4(k2, d);
    let kd = key4(k3, d);
    for (var r = 0u; r < TM; r++) {
      let q = q4[qrow[r] + d];
      acc[r] += vec4(dot(q, ka), dot(q, kb1), dot(q, kc), dot(q, kd));
    }
  }
  // Loops to TM (a constant), not to rows, so that the compiler can unroll them and keep
  // qrow and acc in registers: Mesa's Vulkan path keeps dynamically indexed arrays in memory.
  for (var r = 0u; r < TM; r++) {
    let t = r0 + r;
    let row = (z * p.T + t) * p.P;
    for (var j = 0u; j < 4u; j++) {
      if (r < rows && j0 + j <= pos0 + t) { probs[row + j0 + j] = acc[r][j] * p.scale; }
    }
  }
}

// out[t, h*HD + 4c ..] = sum over j <= pos0 + t of probs[z, t, j] * v[z, j, 4c ..].
// One invocation: TM queries x one vec4 of head dimensions; grid (HD / 4, T / TM, seqs * n_head).
@compute @workgroup_size(HD / 4u)
fn values(@builtin(global_invocation_id) gid: vec3<u32>) {
  let z = gid.z;
  let c = gid.x;              // vec4 column within the head
  let r0 = gid.y * TM;
  let pos0 = start[0];
  let HD4 = HD / 4u;
  let rows = min(TM, p.T - r0);
  var prow: array<u32, 8>;
  var last: array<u32, 8>;    // last key each query sees
  for (var r = 0u; r < TM; r++) {
    let t = min(r0 + r, p.T - 1u);
    prow[r] = (z * p.T + t) * p.P;
    last[r] = pos0 + t;
  }
  var acc: array<vec4<f32>, 8>;
  let keys = pos0 + r0 + rows;
  for (var j = 0u; j < keys; j++) {
    let v = value4(z * p.P + j, c);
    for (var r = 0u; r < TM; r++) {
      let w = select(0.0, probs[prow[r] + j], j <= last[r]);
      acc[r] = fma(vec4(w), v, acc[r]);
    }
  }
  for (var r = 0u; r < TM; r++) { // to TM, not rows: see scores
    if (r < rows) { out4[((seqRow0(z) + r0 + r) * p.C + headCol(z)) / 4u + c] = acc[r]; }
  }
}

// Decode (T = 1) in one dispatch instead of scores, softmax and values: a workgroup per
// sequence and head (slab z) computes the query's scores, the softmax (max and sum reduced in
// workgroup memory) and the values, with the keys split over the invocations. The row of
// scores, then probabilities, lives in probs (storage), not in workgroup memory: a workgroup
// array as long as the context made OpenGL's llvmpipe spend 16-79 s compiling this kernel.
// Same arithmetic as the three kernels, summed in another order. Grid: (seqs * n_head).
// Needs HD <= 256.
var<workgroup> partial: array<f32, 64>;
var<workgroup> partial4: array<vec4<f32>, 64>;

// Reduces every invocation's v to one value: op 0 max, 1 sum. Every invocation calls it.
fn reduce(li: u32, v: f32, op: u32) -> f32 {
  partial[li] = v;
  workgroupBarrier();
  for (var half = 32u; half > 0u; half /= 2u) {
    if (li < half) {
      let o = partial[li + half];
      partial[li] = select(partial[li] + o, max(partial[li], o), op == 0u);
    }
    workgroupBarrier();
  }
  let r = partial[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(64)
fn attend_one(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let z = wg.x;
  let HD4 = HD / 4u;
  let n = start[0] + 1u;                           // keys 0 .. pos0
  let q = (seqRow0(z) * 3u * p.C + headCol(z)) / 4u; // this head's query in qkv, as vec4s
  let row = z * p.P;                              // cache row of key 0, and the probs row
  // Invocation li owns keys 4·li + 256·i .. +3: their scores, exps and probabilities, which
  // only it reads and writes until the values.
  var m = -3.0e38;
  for (var j0 = 4u * li; j0 < n; j0 += 256u) {
    let k1 = row + min(j0 + 1u, n - 1u);
    let k2 = row + min(j0 + 2u, n - 1u);
    let k3 = row + min(j0 + 3u, n - 1u);
    var acc = vec4(0.0);
    for (var d = 0u; d < HD4; d++) {
      let qd = q4[q + d];
      acc += vec4(dot(qd, key4(row + j0, d)), dot(qd, key4(k1, d)), dot(qd, key4(k2, d)),
        dot(qd, key4(k3, d)));
    }
    for (var i = 0u; i < min(4u, n - j0); i++) {
      let score = acc[i] * p.scale;
      probs[row + j0 + i] = score;
      m = max(m, score);
    }
  }
  m = reduce(li, m, 0u);
  var sum = 0.0;
  for (var j0 = 4u * li; j0 < n; j0 += 256u) {
    for (var j = j0; j < min(j0 + 4u, n); j++) {
      let e = exp(probs[row + j] - m);
      probs[row + j] = e;
      sum += e;
    }
  }
  sum = reduce(li, sum, 1u);
  for (var j0 = 4u * li; j0 < n; j0 += 256u) {
    for (var j = j0; j < min(j0 + 4u, n); j++) { probs[row + j] = probs[row + j] / sum; }
  }
  if (p.zeroTail == 1u) {
    for (var j = n + li; j < p.P; j += 64u) { probs[row + j] = 0.0; }
  }
  storageBarrier(); // every probability written before any invocation reads another's
  // Values: invocation li sums keys g, g + G, .. of vec4 column c; then the G groups add up.
  let G = 64u / HD4;
  let c = li % HD4;
  let g = li / HD4;
  var acc = vec4(0.0);
  if (g < G) {
    for (var j = g; j < n; j += G) { acc = fma(vec4(probs[row + j]), value4(row + j, c), acc); }
  }
  partial4[li] = acc;
  workgroupBarrier();
  if (li < HD4) {
    var o = vec4(0.0);
    for (var k = 0u; k < G; k++) { o += partial4[k * HD4 + li]; }
    out4[(seqRow0(z) * p.C + headCol(z)) / 4u + li] = o;
  }
}

// Backward of out = softmax(q k^T * scale, causal) @ v, for f32 caches and pos0 = 0, in
// three dispatches with no atomics (every sum has one owner and a fixed order):
// back_dscores: per query row, dP[t, j] = dout[t] . v[j] and
//               dS[t, j] = scale * P[t, j] * (dP[t, j] - sum over i <= t of P[t, i] dP[t, i])
//               into dprobs (scale folded in, so dq and dk need not apply it).
// back_dq:      dq[t] = sum over j <= t of dS[t, j] k[j]              (like values)
// back_dkv:     dk[j] = sum over t >= j of dS[t, j] q[t],  dv[j] = sum over t >= j of P[t, j] dout[t]
// dq, dk and dv go to dqkv in qkv's layout. Entries of probs and dprobs past t are never read.

// One invocation per query row t of slab z; grid (T / 64, 1, seqs * n_head).
@compute @workgroup_size(64)
fn back_dscores(@builtin(global_invocation_id) gid: vec3<u32>) {
  let z = gid.z;
  let t = gid.x;
  if (t >= p.T) { return; }
  let HD4 = HD / 4u;
  let o = ((seqRow0(z) + t) * p.C + headCol(z)) / 4u; // dout[t] of this head, as vec4s
  let row = (z * p.T + t) * p.P;
  var pdp = 0.0; // sum of P * dP over the row
  for (var j = 0u; j <= t; j++) {
    var acc = vec4(0.0);
    for (var d = 0u; d < HD4; d++) { acc = fma(dout4[o + d], v4[(z * p.P + j) * HD4 + d], acc); }
    let dp = acc.x + acc.y + acc.z + acc.w;
    dprobs[row + j] = dp;
    pdp = fma(probs[row + j], dp, pdp);
  }
  for (var j = 0u; j <= t; j++) {
    dprobs[row + j] = probs[row + j] * (dprobs[row + j] - pdp) * p.scale;
  }
}

// dq of TM queries x one vec4 of head dimensions per invocation; grid (1, T / TM, seqs * n_head).
@compute @workgroup_size(HD / 4u)
fn back_dq(@builtin(global_invocation_id) gid: vec3<u32>) {
  let z = gid.z;
  let c = gid.x;
  let r0 = gid.y * TM;
  let HD4 = HD / 4u;
  let rows = min(TM, p.T - r0);
  var srow: array<u32, 8>; // dprobs row of each query
  for (var r = 0u; r < TM; r++) { srow[r] = (z * p.T + min(r0 + r, p.T - 1u)) * p.P; }
  var acc: array<vec4<f32>, 8>;
  for (var j = 0u; j < r0 + rows; j++) {
    let k = k4[(z * p.P + j) * HD4 + c];
    for (var r = 0u; r < TM; r++) {
      acc[r] = fma(vec4(select(0.0, dprobs[srow[r] + j], j <= r0 + r)), k, acc[r]);
    }
  }
  for (var r = 0u; r < TM; r++) { // to TM, not rows: see scores
    if (r < rows) { dqkv4[((seqRow0(z) + r0 + r) * 3u * p.C + headCol(z)) / 4u + c] = acc[r]; }
  }
}

// dk and dv of TM keys x one vec4 of head dimensions per invocation; grid (1, T / TM,
// seqs * n_head).
@compute @workgroup_size(HD / 4u)
fn back_dkv(@builtin(global_invocation_id) gid: vec3<u32>) {
  let z = gid.z;
  let c = gid.x;
  let j0 = gid.y * TM;
  let keys = min(TM, p.T - j0);
  let first = seqRow0(z);
  let col = headCol(z) / 4u + c;
  var dk: array<vec4<f32>, 8>;
  var dv: array<vec4<f32>, 8>;
  for (var t = j0; t < p.T; t++) {
    let q = q4[(first + t) * 3u * p.C / 4u + col];
    let o = dout4[(first + t) * p.C / 4u + col];
    let row = (z * p.T + t) * p.P;
    for (var r = 0u; r < TM; r++) {
      let j = min(j0 + r, t);
      let seen = j0 + r <= t; // key j0 + r is one query t attends to
      dk[r] = fma(vec4(select(0.0, dprobs[row + j], seen)), q, dk[r]);
      dv[r] = fma(vec4(select(0.0, probs[row + j], seen)), o, dv[r]);
    }
  }
  for (var r = 0u; r < TM; r++) { // to TM, not rows: see scores
    if (r < keys) {
      let at = (first + j0 + r) * 3u * p.C / 4u + col;
      dqkv4[at + p.C / 4u] = dk[r];
      dqkv4[at + p.C / 2u] = dv[r];
    }
  }
}
