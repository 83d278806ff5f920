// Sampling on the GPU, as run/sampling.ts's sampleToken draws with temperature > 0: one
// workgroup draws a token from a row of logits. No entry point: the kernel that includes it
// (fused_decode.wgsl, sample_pick.wgsl) declares what it reads:
//   override WG (invocations), MAXK (most candidates sorted), BINS (the radix select's bins,
//     at least MAXK: they hold the candidates too);
//   p: a uniform with V (vocabulary size), temperature, topK (0 all), topP (1 all);
//   logits: array<f32>, the row, [V];
//   state: array<u32> read_write, the generator's 4 words from state[RNG].
//
// The draw: weights exp((logit - max) / temperature), cut to the topK best tokens (ties: lower
// id first), then to the shortest best-first prefix whose mass reaches topP of theirs; the
// draw walks the kept tokens best first after top-k, else in id order. The uniform comes from
// xoshiro128** (state[RNG ..]), the generator of run/sampling.ts's Rng, one draw per token.
// The sums are f32 here and f64 there: a draw within rounding of the boundary between two
// tokens may pick the other one.
//
// The whole workgroup takes part: invocation li holds the logits of its block, ids
// li·B .. (li+1)·B, B = ceil(V / WG). No invocation loops over the vocabulary alone, which
// matters beyond speed: llvmpipe ends the loops of an invocation after 65,535 iterations in
// all, silently, and the vocabulary of GPT-2 is 50,257 (three passes over it would not fit).

var<workgroup> partial: array<f32, WG>;    // a value per invocation: its block's max or sum
var<workgroup> counts: array<u32, WG>;     // per block: its logits tied at the threshold
var<workgroup> bins: array<atomic<u32>, BINS>; // radix select: the keys in each 8-bit bin;
                                               // then the candidates in the order gathered
var<workgroup> gathered: atomic<u32>;      // candidates gathered so far
var<workgroup> maxLogit: f32;
var<workgroup> threshold: u32;             // the key of the k-th best logit
var<workgroup> tiesKept: u32;              // of the logits at the threshold, how many are in
var<workgroup> candId: array<u32, MAXK>;   // the sampler's candidates, best first

fn rotl(x: u32, k: u32) -> u32 {
  return (x << k) | (x >> (32u - k));
}

// The next 32 bits of the xoshiro128** sequence, as Rng.nextUint32.
fn rng_next() -> u32 {
  var s0 = state[RNG];
  var s1 = state[RNG + 1u];
  var s2 = state[RNG + 2u];
  var s3 = state[RNG + 3u];
  let result = rotl(s1 * 5u, 7u) * 9u;
  let t = s1 << 9u;
  s2 ^= s0;
  s3 ^= s1;
  s1 ^= s2;
  s0 ^= s3;
  s2 ^= t;
  s3 = rotl(s3, 11u);
  state[RNG] = s0;
  state[RNG + 1u] = s1;
  state[RNG + 2u] = s2;
  state[RNG + 3u] = s3;
  return result;
}

// Uniform in [0, 1): the draw's top 24 bits (all an f32 holds).
fn rng_uniform() -> f32 {
  return f32(rng_next() >> 8u) / 16777216.0;
}

fn weight_of(logit: f32, max: f32) -> f32 {
  return exp((logit - max) / p.temperature);
}

// A key that orders as the logit does (-0 as +0): a larger logit has a larger key.
fn key_of(logit: f32) -> u32 {
  let b = select(bitcast<u32>(logit), 0u, bitcast<u32>(logit) == 0x80000000u);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// The ids of invocation li's block.
fn block_start(li: u32) -> u32 {
  return min(li * ((p.V + WG - 1u) / WG), p.V);
}

// maxLogit = the largest logit.
fn find_max(li: u32) {
  var m = -3.4e38;
  for (var i = block_start(li); i < block_start(li + 1u); i++) { m = max(m, logits[i]); }
  partial[li] = m;
  workgroupBarrier();
  if (li == 0u) {
    for (var i = 1u; i < WG; i++) { m = max(m, partial[i]); }
    maxLogit = m;
  }
  workgroupBarrier();
}

// The whole vocabulary, drawn in id order (no top-k, no top-p): each block's mass, then the
// block the draw falls in, then the token in it. Valid in invocation 0.
fn sample_all(li: u32) -> u32 {
  let m = maxLogit;
  var mass = 0.0;
  for (var i = block_start(li); i < block_start(li + 1u); i++) { mass += weight_of(logits[i], m); }
  partial[li] = mass;
  workgroupBarrier();
  if (li != 0u) { return 0u; }
  var total = 0.0;
  for (var g = 0u; g < WG; g++) { total += partial[g]; }
  var r = rng_uniform() * total;
  var block = 0u;
  var lastBlock = 0u;
  for (; block < WG; block++) {
    if (partial[block] <= 0.0) { continue; }
    lastBlock = block;
    if (r < partial[block]) { break; }
    r -= partial[block];
  }
  if (block == WG) { block = lastBlock; } // rounding left a sliver past the last block
  var last = 0u;
  for (var i = block_start(block); i < block_start(block + 1u); i++) {
    let w = weight_of(logits[i], m);
    if (w <= 0.0) { continue; }
    last = i;
    r -= w;
    if (r < 0.0) { return i; }
  }
  return last;
}

// threshold, tiesKept = the key of the k-th best logit and how many logits at it are among
// the k best: a radix select, 8 bits of the key a pass, most significant first.
fn select_threshold(li: u32, k: u32) {
  var prefix = 0u;
  var mask = 0u;
  var want = k; // of the keys under prefix, the rank (from the top) of the one sought
  for (var round = 0u; round < 4u; round++) {
    let shift = 24u - 8u * round;
    for (var b = li; b < BINS; b += WG) { atomicStore(&bins[b], 0u); }
    workgroupBarrier();
    for (var i = block_start(li); i < block_start(li + 1u); i++) {
      let key = key_of(logits[i]);
      if ((key & mask) == prefix) { atomicAdd(&bins[(key >> shift) & 255u], 1u); }
    }
    workgroupBarrier();
    if (li == 0u) {
      var b = 255u;
      loop {
        let n = atomicLoad(&bins[b]);
        if (want <= n || b == 0u) { break; }
        want -= n;
        b--;
      }
      threshold = prefix | (b << shift);
      tiesKept = want;
    }
    workgroupBarrier();
    prefix = threshold;
    mask |= 255u << shift;
  }
}

// candId = the ids of the k best logits, best first, ties by lower id: gathered by the
// workgroup (every logit above the threshold, and the tiesKept lowest ids at it) into bins,
// which the radix select no longer needs (BINS >= MAXK), then each put in place by counting
// the candidates that rank above it. Every workgroup array costs the OpenGL backend compile
// time (Mesa's GLSL compiler: ~7 s for this sampler with 3 more arrays of MAXK), hence the
// reuse.
fn sort_candidates(li: u32, k: u32) {
  select_threshold(li, k);
  let t = threshold;
  var ties = 0u;
  for (var i = block_start(li); i < block_start(li + 1u); i++) {
    ties += select(0u, 1u, key_of(logits[i]) == t);
  }
  counts[li] = ties;
  if (li == 0u) { atomicStore(&gathered, 0u); }
  workgroupBarrier();
  var tiesBefore = 0u; // ties in the blocks before this one: lower ids
  for (var g = 0u; g < li; g++) { tiesBefore += counts[g]; }
  for (var i = block_start(li); i < block_start(li + 1u); i++) {
    let key = key_of(logits[i]);
    var keep = key > t;
    if (key == t) {
      keep = tiesBefore < tiesKept;
      tiesBefore++;
    }
    if (keep) { atomicStore(&bins[atomicAdd(&gathered, 1u)], i); }
  }
  workgroupBarrier();
  for (var c = li; c < k; c += WG) {
    let id = atomicLoad(&bins[c]);
    let l = logits[id];
    var rank = 0u;
    for (var d = 0u; d < k; d++) {
      let other = atomicLoad(&bins[d]);
      let o = logits[other];
      rank += select(0u, 1u, o > l || (o == l && other < id));
    }
    candId[rank] = id;
  }
  workgroupBarrier();
}

// The logit of the i-th best candidate, and its weight: read and computed again where needed,
// not kept in workgroup arrays (see sort_candidates).
fn cand_logit(i: u32) -> f32 {
  return logits[candId[i]];
}

fn cand_weight(i: u32, m: f32) -> f32 {
  return weight_of(cand_logit(i), m);
}

// A token drawn as sampleToken draws it; valid in invocation 0. Every invocation calls it.
fn sample_token(li: u32) -> u32 {
  let topK = p.topK > 0u && p.topK < p.V;
  find_max(li);
  if (!topK && p.topP >= 1.0) { return sample_all(li); }
  let k = select(p.V, p.topK, topK); // at most MAXK: the wrapper checks
  sort_candidates(li, k);
  if (li != 0u) { return 0u; }
  let m = cand_logit(0u);
  var total = 0.0;
  for (var i = 0u; i < k; i++) { total += cand_weight(i, m); }
  var kept = k;
  var mass = 0.0;
  if (p.topP < 1.0) {
    for (var i = 0u; i < k; i++) {
      mass += cand_weight(i, m);
      if (mass >= p.topP * total) {
        kept = i + 1u;
        break;
      }
    }
  }
  var sum = 0.0;
  for (var i = 0u; i < kept; i++) { sum += cand_weight(i, m); }
  var r = rng_uniform() * sum;
  var last = 0u;
  if (topK) { // best first
    for (var i = 0u; i < kept; i++) {
      let w = cand_weight(i, m);
      if (w <= 0.0) { continue; }
      last = i;
      r -= w;
      if (r < 0.0) { return candId[i]; }
    }
    return candId[last];
  }
  // The nucleus of the whole vocabulary (V <= MAXK here), in id order: every logit above the
  // last kept one, and of those equal to it as many as the prefix holds (the lowest ids).
  let cut = cand_logit(kept - 1u);
  var ties = 0u;
  for (var i = 0u; i < kept; i++) { ties += select(0u, 1u, cand_logit(i) == cut); }
  for (var i = 0u; i < p.V; i++) {
    let l = logits[i];
    if (l < cut || (l == cut && ties == 0u)) { continue; }
    if (l == cut) { ties--; }
    let w = weight_of(l, m);
    if (w <= 0.0) { continue; }
    last = i;
    r -= w;
    if (r < 0.0) { return i; }
  }
  return last;
}
