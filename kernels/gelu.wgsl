// GPT-2's MLP activation as a kernel of its own, for training, which keeps the value before
// the activation for the backward pass: y = gelu_new(x) and dx = dy · gelu_new'(x).
// gelu_new and gelu_new_grad come from gelu_formula.wgsl, which the wrapper puts in front.
// One vec4 per invocation: the element count must be a multiple of 4.

struct Params {
  n4: u32, // elements / 4
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;        // [M, N]
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;  // [M, N]
@group(0) @binding(3) var<storage, read> dy: array<vec4<f32>>;       // [M, N]
@group(0) @binding(4) var<storage, read_write> dx: array<vec4<f32>>; // [M, N]

// The grid is workgrid(n4, 64)'s: x up to 65535 workgroups, then rows of y.
fn item(gid: vec3<u32>) -> u32 {
  return gid.y * 65535u * 64u + gid.x;
}

@compute @workgroup_size(64)
fn gelu(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = item(gid);
  if (i >= p.n4) { return; }
  let v = x[i];
  y[i] = vec4(gelu_new(v.x), gelu_new(v.y), gelu_new(v.z), gelu_new(v.w));
}

@compute @workgroup_size(64)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = item(gid);
  if (i >= p.n4) { return; }
  let v = x[i];
  dx[i] = dy[i] * vec4(gelu_new_grad(v.x), gelu_new_grad(v.y), gelu_new_grad(v.z), gelu_new_grad(v.w));
}
