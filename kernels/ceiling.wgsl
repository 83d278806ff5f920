// Micro-benchmarks of what the adapter can do at best: arithmetic and storage reads, with
// nothing else in the loop. They measure the ceiling kvgpt's kernels are judged against.
//
// fma_peak_A:  each invocation runs `iters` rounds of A independent chains acc = acc·m + c
//              (A = 4, 8, 16 scalars: enough chains to hide the FMA latency, few enough to
//              stay in registers), then writes their sum to out[gid]. 2·A·iters FLOP each.
// read_peak:   each invocation sums `count` vec4s of src, 4 per loop round, at gid + k·stride
//              masked into a power-of-two window of `mask + 1` vec4s (a small window stays in
//              the caches, a large one streams from memory), and writes the sum to out[gid].
// Every loop stays under llvmpipe's 65,535 iterations per invocation.

struct FmaParams {
  iters: u32,
  m: f32,
  c: f32,
  _pad: u32,
}

struct ReadParams {
  rounds: u32, //  loop rounds, 4 reads each
  mask: u32,   //  window of vec4s - 1 (a power of two minus one)
  stride: u32, //  vec4s between one invocation's reads: invocations in all
  _pad: u32,
}

@group(0) @binding(0) var<uniform> f: FmaParams;
@group(0) @binding(1) var<uniform> r: ReadParams;
@group(0) @binding(2) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// A chain's start: distinct per invocation and per chain, small.
fn seed(gid: u32, k: u32) -> f32 {
  return f32((gid * 16u + k) % 1024u) * 1e-4;
}

@compute @workgroup_size(64)
fn fma_peak_4(@builtin(global_invocation_id) gid: vec3<u32>) {
  var a = vec4<f32>(seed(gid.x, 0u), seed(gid.x, 1u), seed(gid.x, 2u), seed(gid.x, 3u));
  let m = vec4<f32>(f.m);
  let c = vec4<f32>(f.c);
  for (var i = 0u; i < f.iters; i++) {
    a = fma(a, m, c);
  }
  out[gid.x] = a.x + a.y + a.z + a.w;
}

@compute @workgroup_size(64)
fn fma_peak_8(@builtin(global_invocation_id) gid: vec3<u32>) {
  var a = vec4<f32>(seed(gid.x, 0u), seed(gid.x, 1u), seed(gid.x, 2u), seed(gid.x, 3u));
  var b = vec4<f32>(seed(gid.x, 4u), seed(gid.x, 5u), seed(gid.x, 6u), seed(gid.x, 7u));
  let m = vec4<f32>(f.m);
  let c = vec4<f32>(f.c);
  for (var i = 0u; i < f.iters; i++) {
    a = fma(a, m, c);
    b = fma(b, m, c);
  }
  let s = a + b;
  out[gid.x] = s.x + s.y + s.z + s.w;
}

@compute @workgroup_size(64)
fn fma_peak_16(@builtin(global_invocation_id) gid: vec3<u32>) {
  var a = vec4<f32>(seed(gid.x, 0u), seed(gid.x, 1u), seed(gid.x, 2u), seed(gid.x, 3u));
  var b = vec4<f32>(seed(gid.x, 4u), seed(gid.x, 5u), seed(gid.x, 6u), seed(gid.x, 7u));
  var d = vec4<f32>(seed(gid.x, 8u), seed(gid.x, 9u), seed(gid.x, 10u), seed(gid.x, 11u));
  var e = vec4<f32>(seed(gid.x, 12u), seed(gid.x, 13u), seed(gid.x, 14u), seed(gid.x, 15u));
  let m = vec4<f32>(f.m);
  let c = vec4<f32>(f.c);
  for (var i = 0u; i < f.iters; i++) {
    a = fma(a, m, c);
    b = fma(b, m, c);
    d = fma(d, m, c);
    e = fma(e, m, c);
  }
  let s = a + b + d + e;
  out[gid.x] = s.x + s.y + s.z + s.w;
}

@compute @workgroup_size(64)
fn read_peak(@builtin(global_invocation_id) gid: vec3<u32>) {
  var s0 = vec4<f32>(0.0);
  var s1 = vec4<f32>(0.0);
  var s2 = vec4<f32>(0.0);
  var s3 = vec4<f32>(0.0);
  var at = gid.x;
  let step = r.stride;
  for (var k = 0u; k < r.rounds; k++) {
    s0 += src[at & r.mask];
    s1 += src[(at + step) & r.mask];
    s2 += src[(at + 2u * step) & r.mask];
    s3 += src[(at + 3u * step) & r.mask];
    at += 4u * step;
  }
  let s = s0 + s1 + s2 + s3;
  out[gid.x] = s.x + s.y + s.z + s.w;
}
