// How the KV cache stores a row of HD values (model/kv_cache.ts's layout, rows
// [head, position] of words): KV 0, one f32 per u32 word; 1, two f16 per word; 2, four int8
// per word with a scale per row, x = snorm8(q) · scale where scale = max |x| of the row.
// No bindings: attention.wgsl and fused_decode.wgsl put this one copy in front of their own code,
// and each defines the functions it reads and writes through (`cache` tells caches apart:
// 0 K and 1 V in attention.wgsl, 2 · layer + 0 or 1 in fused_decode.wgsl):
//   fn kv_src(at: u32) -> f32                     value `at` of the K/V being stored
//   fn kv_vec4(cache: u32, i4: u32) -> vec4<f32>  f32 caches: values 4·i4 .. in one read
//   fn kv_word(cache: u32, i: u32) -> u32         f16 and int8 caches: word i
//   fn kv_scale(cache: u32, row: u32) -> f32      int8 caches: the scale of a row
//   fn kv_put_scale(cache: u32, row: u32, s: f32) int8 caches: stores the scale of a row
// Both writers of the cache (attention.wgsl's store_kv, fused_decode.wgsl's store_kv) store
// each word through kv_store_word.

override HD: u32 = 64u; // head_dim, a multiple of 4
override KV: u32 = 0u;  // how values are stored: 0 f32, 1 f16, 2 int8

// Values per u32 word of the cache.
fn kv_per_word() -> u32 {
  return select(select(4u, 2u, KV == 1u), 1u, KV == 0u);
}

// The int8 scale of the `hd` (= HD) values kv_src(at ..): their largest |x|, 1 for a row of
// zeros (and 1 for the other storages, which have no scale). `hd` is a parameter so that a
// caller can pass a bound the compiler does not see, which keeps the loop rolled.
fn kv_row_scale(at: u32, hd: u32) -> f32 {
  if (KV != 2u) { return 1.0; }
  var m = 0.0;
  for (var d = 0u; d < hd; d++) { m = max(m, abs(kv_src(at + d))); }
  return select(m, 1.0, m == 0.0);
}

// Word w of the stored row of the HD values kv_src(at ..), whose int8 scale is `scale`.
fn kv_encode(at: u32, w: u32, scale: f32) -> u32 {
  if (KV == 0u) { return bitcast<u32>(kv_src(at + w)); }
  if (KV == 1u) { return pack2x16float(vec2(kv_src(at + 2u * w), kv_src(at + 2u * w + 1u))); }
  let a = at + 4u * w;
  return pack4x8snorm(vec4(kv_src(a), kv_src(a + 1u), kv_src(a + 2u), kv_src(a + 3u)) / scale);
}

// Word w of the stored row `row` of cache `cache` for the HD values kv_src(at ..): with int8,
// the invocation of word 0 also stores the row's scale (kv_put_scale). `hd` is HD, passed as
// kv_row_scale's is.
fn kv_store_word(cache: u32, row: u32, at: u32, w: u32, hd: u32) -> u32 {
  let scale = kv_row_scale(at, hd);
  if (KV == 2u && w == 0u) { kv_put_scale(cache, row, scale); }
  return kv_encode(at, w, scale);
}

// Values 4·d4 .. 4·d4+3 of row `row` (= head · rows per head + position) of a cache.
fn kv_load4(cache: u32, row: u32, d4: u32) -> vec4<f32> {
  if (KV == 0u) { return kv_vec4(cache, row * (HD / 4u) + d4); }
  if (KV == 1u) {
    let at = row * (HD / 2u) + 2u * d4;
    return vec4(unpack2x16float(kv_word(cache, at)), unpack2x16float(kv_word(cache, at + 1u)));
  }
  return unpack4x8snorm(kv_word(cache, row * (HD / 4u) + d4)) * kv_scale(cache, row);
}
