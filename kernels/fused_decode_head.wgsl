// The wide half of a fused decode step: logits = lm_head(hidden), hidden being ln_f(x) from
// decode_step, over as many workgroups as the vocabulary needs. Each invocation takes 4 logits
// (matmul_row.wgsl's row function, which the wrapper puts in front, with the lm_head [V, K]
// bound as a texture of vec4 texels, `weights`, and the dot_w4/dot_w8 that read it), writes
// them when asked, and each workgroup writes the largest of its logits and its id (the first
// on ties) to `best`, which the next decode_step reduces: the argmax of greedy decoding in two
// halves, with no dispatch of its own.

override WG: u32 = 16u;     // invocations per workgroup
override F16: bool = false; // lm_head stored as f16 pairs

struct Params {
  V: u32,      // vocabulary size: rows of w
  K: u32,      // n_embd
  logits: u32, // 1: write the logits
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> hidden: array<vec4<f32>>;  // [K]
@group(0) @binding(4) var<storage, read_write> logits: array<f32>;  // [V]
@group(0) @binding(5) var<storage, read_write> best: array<u32>;    // [workgroups, 2] value, id

var<workgroup> bestValue: array<f32, WG>;
var<workgroup> bestId: array<u32, WG>;

fn dot_x4(i: u32) -> vec4<f32> {
  return hidden[i];
}

// Grid: (V / 4 / WG).
@compute @workgroup_size(WG)
fn decode_head(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wg: vec3<u32>,
) {
  let n = 4u * gid.x;
  var value = -3.4e38;
  var id = 0xffffffffu;
  if (n < p.V) {
    let rows = min(n + vec4(0u, 1u, 2u, 3u), vec4(p.V - 1u));
    var v: vec4<f32>;
    if (F16) { v = dot_row4_f16(0u, rows * (p.K / 8u), p.K / 8u); } else {
      v = dot_row4(0u, rows * (p.K / 4u), p.K / 4u);
    }
    for (var j = 0u; j < 4u; j++) {
      if (n + j < p.V) {
        if (p.logits == 1u) { logits[n + j] = v[j]; }
        if (v[j] > value) { // ids grow, so '>' keeps the first maximum
          value = v[j];
          id = n + j;
        }
      }
    }
  }
  bestValue[li] = value;
  bestId[li] = id;
  workgroupBarrier();
  if (li == 0u) {
    for (var i = 1u; i < WG; i++) {
      if (bestValue[i] > value) {
        value = bestValue[i];
        id = bestId[i];
      }
    }
    best[2u * wg.x] = bitcast<u32>(value);
    best[2u * wg.x + 1u] = id;
  }
}
