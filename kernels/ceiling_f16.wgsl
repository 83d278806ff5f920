// ceiling.wgsl's FMA and read micro-benchmarks in f16 (shader-f16), to say whether half
// precision arithmetic or half-size reads beat f32 on an adapter: the same 16 chains of
// acc = acc·m + c per invocation (four vec4<f16>), and the same vec4 reads of a window, each
// vec4<f16> 8 bytes instead of 16. Bindings as ceiling.wgsl's.
enable f16;

struct FmaParams {
  iters: u32,
  m: f32,
  c: f32,
  _pad: u32,
}

struct ReadParams {
  rounds: u32,
  mask: u32,
  stride: u32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> f: FmaParams;
@group(0) @binding(1) var<uniform> r: ReadParams;
@group(0) @binding(2) var<storage, read> src: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn seed(gid: u32, k: u32) -> f16 {
  return f16(f32((gid * 16u + k) % 1024u) * 1e-4);
}

fn seed4(gid: u32, k: u32) -> vec4<f16> {
  return vec4<f16>(seed(gid, k), seed(gid, k + 1u), seed(gid, k + 2u), seed(gid, k + 3u));
}

@compute @workgroup_size(64)
fn fma_peak_f16_16(@builtin(global_invocation_id) gid: vec3<u32>) {
  var a = seed4(gid.x, 0u);
  var b = seed4(gid.x, 4u);
  var d = seed4(gid.x, 8u);
  var e = seed4(gid.x, 12u);
  let m = vec4<f16>(f16(f.m));
  let c = vec4<f16>(f16(f.c));
  for (var i = 0u; i < f.iters; i++) {
    a = fma(a, m, c);
    b = fma(b, m, c);
    d = fma(d, m, c);
    e = fma(e, m, c);
  }
  let s = vec4<f32>(a + b + d + e);
  out[gid.x] = s.x + s.y + s.z + s.w;
}

@compute @workgroup_size(64)
fn read_peak_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
  var s0 = vec4<f32>(0.0);
  var s1 = vec4<f32>(0.0);
  var s2 = vec4<f32>(0.0);
  var s3 = vec4<f32>(0.0);
  var at = gid.x;
  let step = r.stride;
  for (var k = 0u; k < r.rounds; k++) {
    s0 += vec4<f32>(src[at & r.mask]);
    s1 += vec4<f32>(src[(at + step) & r.mask]);
    s2 += vec4<f32>(src[(at + 2u * step) & r.mask]);
    s3 += vec4<f32>(src[(at + 3u * step) & r.mask]);
    at += 4u * step;
  }
  let s = s0 + s1 + s2 + s3;
  out[gid.x] = s.x + s.y + s.z + s.w;
}
