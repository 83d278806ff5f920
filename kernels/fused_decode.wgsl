// The fused decode step of a small GPT-2: ONE workgroup runs every block for one token with
// the activations in workgroup memory, so a step is this dispatch and decode_head's.
//   choose the token: given (state), the best logit of the last step (decode_head's partial
//     maxima), or sampled from its logits as run/sampling.ts samples (sampler.wgsl's
//     sample_token, which the wrapper puts after this file);
//   x = wte[token] + wpe[pos];
//   every block: x += c_proj(attention(c_attn(ln_1(x)))), its K/V stored in the cache at pos;
//                x += c_proj(gelu(c_fc(ln_2(x))));
//   hidden = ln_f(x), which decode_head turns into logits.
// The wrapper puts in front: gelu_formula.wgsl (gelu_new), layernorm_row.wgsl (the LayerNorm
// of a row), matmul_row.wgsl (one row times four weight rows), kv_codec.wgsl (the cache's
// encoding, HD and KV) and what it writes for the model: the matrices' texture (binding 5)
// with dot_w4 and dot_w8, the cache bindings of every layer, the functions the codec reads
// and writes them through (kv_vec4, kv_word, kv_scale, kv_put, kv_put_scale), and
// run_blocks, which calls block() once per layer with the layer as a constant.
// On llvmpipe a barrier inside a loop costs far more than one in straight-line code
// (workgroups run as coroutines): a loop over the layers made the char model's step ~40 %
// slower. The price is compile time, which grows with the layers (~1.3 s for 2 layers,
// ~3.4 s for 4; Mesa's shader cache keeps it, so once per machine). Inner loops take their
// bounds from the uniform (p.C, p.NI), so that the compiler does not unroll them: unrolled,
// a small model's step took up to a minute to compile.
// With HEAD (a small vocabulary) the step ends with the lm_head itself: one dispatch a token.
// The matrices of every block (and with HEAD the lm_head) come packed one after another, the
// same [out, in] rows as the model's tensors (f32, or f16 pairs), in a texture read as a
// flat array of vec4 texels (`weights`, which the wrapper declares with dot_w4, dot_w8): on
// llvmpipe a texture read is ~1.4x as fast as a storage read, which reads one invocation at
// a time. The LayerNorms and biases come packed in a buffer (vecs). fused_decode.ts packs them,
// because a dispatch binds at most a few dozen buffers.
// Each product gives an invocation 4 outputs at a time; LayerNorm statistics, the softmax of
// each head and the choice of the token are one invocation's work.

override WG: u32 = 64u;     // invocations of the workgroup
override C: u32 = 64u;      // n_embd = n_head · HD
override NH: u32 = 4u;      // n_head
override NI: u32 = 256u;    // n_inner
override NL: u32 = 2u;      // n_layer
override MAXP: u32 = 128u;  // n_positions: most keys a head attends to
override F16: bool = false; // matrices and wte stored as f16 pairs
override HEAD: bool = false; // the lm_head here too (a small vocabulary): logits, no hidden
override SAMPLE: bool = false; // a pipeline that draws its tokens (source 2) and sorts
override MAXK: u32 = 256u;     // at most MAXK candidates (top-k, or the vocabulary); without
                               // SAMPLE the sampler is not compiled and MAXK is 1
override BINS: u32 = 256u;     // the radix select's bins: 256, or 1 without SAMPLE
// Sizes of the workgroup arrays, from the wrapper: naga 29 panics on some override
// expressions as array sizes (C / 4u, for one).
override X4: u32 = 16u;     // C / 4
override ACT4: u32 = 96u;   // (2C + NI) / 4
override QKV4: u32 = 48u;   // 3C / 4
override SCORES: u32 = 512u; // NH · MAXP

struct Params {
  P: u32,           // rows per head of the cache buffers (their capacity)
  V: u32,           // vocabulary size
  eps: f32,         // LayerNorm epsilon
  scale: f32,       // head_dim^-0.5
  source: u32,      // the step's token: 0 state[INPUT]; 1 the best logit; 2 sampled
  blocks: u32,      // 1 run the blocks on the token; 0 only choose it (a chain's last)
  partials: u32,    // partial maxima decode_head wrote (one per workgroup)
  temperature: f32, // sampling: softmax temperature (> 0)
  topK: u32,        // sampling: keep the topK best tokens, 0 all
  topP: f32,        // sampling: keep the nucleus of mass topP, 1 all
  C: u32,           // n_embd and n_inner again, as the bounds of the inner loops: bounds
  NI: u32,          // the compiler cannot see keep it from unrolling them, which made the
}                   // compile of a small model's step take minutes on llvmpipe

// Words of `state`.
const POS = 0u;     // position of the token fed: its K/V go to this cache row
const CHOSEN = 1u;  // tokens chosen so far
const INPUT = 2u;   // the token fed when source is 0
const RNG = 4u;     // 4 words: the sampler's xoshiro128** state
const TOKENS = 8u;  // the tokens chosen, in order

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;   // [8 + n_positions]
@group(0) @binding(2) var<storage, read> wte: array<vec4<f32>>;     // [V, C] f32
@group(0) @binding(3) var<storage, read> wteh: array<vec2<u32>>;    // [V, C] as f16 pairs
@group(0) @binding(4) var<storage, read> wpe: array<vec4<f32>>;     // [n_positions, C]
@group(0) @binding(7) var<storage, read> vecs: array<vec4<f32>>;    // LayerNorms and biases
@group(0) @binding(8) var<storage, read_write> hidden: array<vec4<f32>>; // [C] ln_f(x)
@group(0) @binding(9) var<storage, read> best: array<u32>;          // [partials, 2] value, id
@group(0) @binding(10) var<storage, read_write> logits: array<f32>; // [V] of the last step

// Offsets in `vecs` (vec4s): per layer ln_1 weight, bias; c_attn bias; attn c_proj bias;
// ln_2 weight, bias; c_fc bias; mlp c_proj bias; after the layers ln_f weight, bias.
const LN1_W = 0u;
fn ln1_b() -> u32 { return C / 4u; }
fn attn_b() -> u32 { return C / 2u; }
fn proj_b() -> u32 { return 5u * C / 4u; }
fn ln2_w() -> u32 { return 3u * C / 2u; }
fn ln2_b() -> u32 { return 7u * C / 4u; }
fn fc_b() -> u32 { return 2u * C; }
fn mproj_b() -> u32 { return 2u * C + NI / 4u; }
fn layer_vecs() -> u32 { return (9u * C + NI) / 4u; }

// Weights per texel of the matrices' texture (4 f32 or 8 f16); offsets in texels: per layer
// c_attn [3C, C], attn c_proj [C, C], c_fc [NI, C], mlp c_proj [C, NI]; then (HEAD) lm_head.
fn per_read() -> u32 { return select(4u, 8u, F16); }
const ATTN_W = 0u;
fn proj_w() -> u32 { return 3u * C * C / per_read(); }
fn fc_w() -> u32 { return 4u * C * C / per_read(); }
fn mproj_w() -> u32 { return (4u * C * C + NI * C) / per_read(); }
fn layer_mats() -> u32 { return (4u * C * C + 2u * NI * C) / per_read(); }

// Workgroup memory: the residual stream, the inputs of the products (LayerNorm output |
// attention output | MLP hidden), q | k | v, and each head's scores.
var<workgroup> xs: array<vec4<f32>, X4>;
var<workgroup> act: array<vec4<f32>, ACT4>;
var<workgroup> qkv: array<vec4<f32>, QKV4>;
var<workgroup> scores: array<f32, SCORES>;
var<workgroup> lnStats: vec2<f32>;
var<workgroup> token: u32;

const LN_AT = 0u; // act offsets, vec4s
fn att_at() -> u32 { return C / 4u; }
fn fc_at() -> u32 { return C / 2u; }

// What the shared row functions read: LayerNorm's row is x, products read act (and the
// matrices, through dot_w4 and dot_w8, which the wrapper writes with their binding).
fn ln_x4(row: u32, i: u32) -> vec4<f32> {
  return xs[row + i];
}

fn dot_x4(i: u32) -> vec4<f32> {
  return act[i];
}

fn kv_src(at: u32) -> f32 {
  return qkv[at / 4u][at % 4u];
}

// act[LN_AT ..] = LayerNorm(x) with the weight and bias at vecs[w ..], vecs[b ..].
fn layer_norm(li: u32, w: u32, b: u32) {
  if (li == 0u) { lnStats = ln_row_stats(0u, p.C / 4u, p.eps); }
  workgroupBarrier();
  let s = lnStats;
  for (var i = li; i < C / 4u; i += WG) {
    act[LN_AT + i] = ln_apply(xs[i], s, vecs[w + i], vecs[b + i]);
  }
  workgroupBarrier();
}

// What a product's value v = x · W^T + b becomes.
const TO_QKV = 0u;      // qkv = v
const ADD_TO_X = 1u;    // x += v (the residual)
const GELU_TO_FC = 2u;  // act[fc] = gelu_new(v)

// v[N] = act[x0 ..][K] · W^T + b for the matrix at mats[w ..] and the bias at vecs[b ..].
fn product(li: u32, w: u32, b: u32, N: u32, K: u32, x0: u32, to: u32) {
  let reads = K / per_read(); // per weight row
  for (var t = li; t < N / 4u; t += WG) {
    let rows = w + (4u * t + vec4(0u, 1u, 2u, 3u)) * reads;
    var v: vec4<f32>;
    if (F16) { v = dot_row4_f16(x0, rows, reads); } else { v = dot_row4(x0, rows, reads); }
    v += vecs[b + t];
    if (to == TO_QKV) {
      qkv[t] = v;
    } else if (to == ADD_TO_X) {
      xs[t] = xs[t] + v;
    } else {
      act[fc_at() + t] = vec4(gelu_new(v.x), gelu_new(v.y), gelu_new(v.z), gelu_new(v.w));
    }
  }
  workgroupBarrier();
}

// This token's K and V (qkv's second and third thirds) into layer l's cache at row pos.
fn store_kv(li: u32, l: u32, pos: u32) {
  let words = HD / kv_per_word();
  for (var i = li; i < 2u * NH * words; i += WG) {
    let w = i % words;
    let h = (i / words) % NH;
    let isV = i / (words * NH);
    let at = (1u + isV) * C + h * HD;
    let row = h * p.P + pos;
    kv_put(2u * l + isV, row * words + w, kv_store_word(2u * l + isV, row, at, w, p.C / NH));
  }
  storageBarrier();
  workgroupBarrier();
}

// act[att ..] = softmax(q · K^T · scale) · V of every head over layer l's keys 0 .. pos.
fn attention(li: u32, l: u32, pos: u32) {
  let n = pos + 1u;
  let HD4 = p.C / (4u * NH);
  for (var i = li; i < NH * n; i += WG) { // scores: an invocation per (head, key)
    let h = i / n;
    let j = i % n;
    var acc = vec4(0.0);
    for (var d = 0u; d < HD4; d++) {
      acc = fma(qkv[h * HD4 + d], kv_load4(2u * l, h * p.P + j, d), acc);
    }
    scores[h * MAXP + j] = (acc.x + acc.y + acc.z + acc.w) * p.scale;
  }
  workgroupBarrier();
  if (li < NH) { // the softmax of head li
    let row = li * MAXP;
    var m = -3.0e38;
    for (var j = 0u; j < n; j++) { m = max(m, scores[row + j]); }
    var sum = 0.0;
    for (var j = 0u; j < n; j++) {
      let e = exp(scores[row + j] - m);
      scores[row + j] = e;
      sum += e;
    }
    for (var j = 0u; j < n; j++) { scores[row + j] = scores[row + j] / sum; }
  }
  workgroupBarrier();
  for (var i = li; i < NH * HD4; i += WG) { // values: an invocation per vec4 of the output
    let h = i / HD4;
    let d = i % HD4;
    var acc = vec4(0.0);
    for (var j = 0u; j < n; j++) {
      acc = fma(vec4(scores[h * MAXP + j]), kv_load4(2u * l + 1u, h * p.P + j, d), acc);
    }
    act[att_at() + i] = acc;
  }
  workgroupBarrier();
}

// With HEAD: logits = act[LN ..] · lm_head^T, 4 rows per invocation (the last clamped); the
// lm_head is packed after the blocks' matrices.
fn lm_head(li: u32) {
  let reads = p.C / per_read();
  for (var t = li; t < (p.V + 3u) / 4u; t += WG) {
    let n = 4u * t;
    let rows = NL * layer_mats() + min(n + vec4(0u, 1u, 2u, 3u), vec4(p.V - 1u)) * reads;
    var v: vec4<f32>;
    if (F16) { v = dot_row4_f16(LN_AT, rows, reads); } else { v = dot_row4(LN_AT, rows, reads); }
    for (var j = 0u; j < 4u; j++) {
      if (n + j < p.V) { logits[n + j] = v[j]; }
    }
  }
}

// Block l on the token at position pos: x += attn(ln_1(x)); x += mlp(ln_2(x)).
fn block(li: u32, l: u32, pos: u32) {
  let v = l * layer_vecs();
  let m = l * layer_mats();
  layer_norm(li, v + LN1_W, v + ln1_b());
  product(li, m + ATTN_W, v + attn_b(), 3u * C, p.C, LN_AT, TO_QKV);
  store_kv(li, l, pos);
  attention(li, l, pos);
  product(li, m + proj_w(), v + proj_b(), C, p.C, att_at(), ADD_TO_X);
  layer_norm(li, v + ln2_w(), v + ln2_b());
  product(li, m + fc_w(), v + fc_b(), NI, p.C, LN_AT, GELU_TO_FC);
  product(li, m + mproj_w(), v + mproj_b(), C, p.NI, fc_at(), ADD_TO_X);
}

// The largest logit of the last step, the first on ties (as torch.argmax): with HEAD from
// the logits, else from decode_head's partial maxima, which come in the order of the logits
// they cover.
fn best_logit() -> u32 {
  if (HEAD) {
    var top = 0u;
    for (var i = 1u; i < p.V; i++) {
      if (logits[i] > logits[top]) { top = i; }
    }
    return top;
  }
  var value = bitcast<f32>(best[0]);
  var id = best[1];
  for (var g = 1u; g < p.partials; g++) {
    let v = bitcast<f32>(best[2u * g]);
    if (v > value) {
      value = v;
      id = best[2u * g + 1u];
    }
  }
  return id;
}

// token = the token of this step (every invocation calls this); a chosen one is appended to
// the tokens in `state`.
fn choose_token(li: u32) {
  if (p.source == 0u) {
    if (li == 0u) { token = state[INPUT]; }
    return;
  }
  var t = 0u;
  if (SAMPLE) { t = sample_token(li); } else if (li == 0u) { t = best_logit(); }
  if (li == 0u) {
    let n = state[CHOSEN];
    state[TOKENS + n] = t;
    state[CHOSEN] = n + 1u;
    token = t;
  }
}

fn wte4(t: u32, i: u32) -> vec4<f32> {
  if (F16) {
    let h = wteh[t * (C / 4u) + i];
    return vec4(unpack2x16float(h.x), unpack2x16float(h.y));
  }
  return wte[t * (C / 4u) + i];
}

@compute @workgroup_size(WG)
fn decode_step(@builtin(local_invocation_index) li: u32) {
  choose_token(li);
  workgroupBarrier();
  if (p.blocks == 0u) { return; }
  let t = token;
  let pos = state[POS];
  for (var i = li; i < C / 4u; i += WG) { xs[i] = wte4(t, i) + wpe[pos * (C / 4u) + i]; }
  workgroupBarrier();
  run_blocks(li, pos); // block(li, l, pos) for each layer l, written out by the wrapper
  let f = NL * layer_vecs();
  layer_norm(li, f, f + C / 4u);
  if (HEAD) {
    lm_head(li);
  } else {
    for (var i = li; i < C / 4u; i += WG) { hidden[i] = act[LN_AT + i]; }
  }
  if (li == 0u) { state[POS] = pos + 1u; }
}
