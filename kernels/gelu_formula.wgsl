// GPT-2's activation, gelu_new, and its derivative: no bindings, so that the wrappers of
// gelu.wgsl and matmul.wgsl (whose "gelu" epilogue applies it) prepend this one copy.
//   gelu(v)  = 0.5·v·(1 + tanh(u)),  u = √(2/π)·(v + 0.044715·v³)
//   gelu'(v) = 0.5·(1 + tanh(u)) + 0.5·v·sech²(u)·√(2/π)·(1 + 3·0.044715·v²)
// u is clamped to ±10 for tanh, where tanh is 1 to f32 precision: tanh of a larger u is not
// finite on every adapter. sech²(u) is 1 / cosh²(u), not 1 - tanh²(u): where tanh(u) rounds
// to 1 (u > 8.3, v > 4.9) the latter is 0, an error of up to 2e-6 in gelu'; cosh is clamped at
// ±40, where sech² (1e-34) no longer counts and cosh² still fits an f32.

const SQRT_2_OVER_PI = 0.7978845608028654;
const GELU_CUBIC = 0.044715;

fn gelu_u(v: f32) -> f32 {
  return SQRT_2_OVER_PI * (v + GELU_CUBIC * v * v * v);
}

fn gelu_new(v: f32) -> f32 {
  return 0.5 * v * (1.0 + tanh(clamp(gelu_u(v), -10.0, 10.0)));
}

fn gelu_new_grad(v: f32) -> f32 {
  let u = gelu_u(v);
  let cosh_u = cosh(clamp(u, -40.0, 40.0));
  let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * v * v);
  return 0.5 * (1.0 + tanh(clamp(u, -10.0, 10.0))) + 0.5 * v * du / (cosh_u * cosh_u);
}
