// GPT-2's GELU (HF "gelu_new"), in place:
// x = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))

struct Params { n4: u32 } // number of vec4s

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<vec4<f32>>;

const SQRT_2_OVER_PI = 0.7978845608028654;

@compute @workgroup_size(64)
fn gelu(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * 65535u * 64u + gid.x;
  if (i >= p.n4) { return; }
  let v = x[i];
  // tanh is exactly +-1 in f32 beyond |u| = 10; clamping avoids exp overflow in some drivers.
  let u = clamp(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v), vec4(-10.0), vec4(10.0));
  x[i] = 0.5 * v * (1.0 + tanh(u));
}
