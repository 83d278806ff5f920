// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias-corrected moments),
// with torch.nn.utils.clip_grad_norm_'s global-norm clipping applied as the gradient is read.
//
// grad_sumsq: partials[index] = sqrt(sum of g^2) over one gradient tensor (torch's
//             per-tensor norm), one workgroup summing in a fixed order, a dispatch per slice
//             of at most 2^23 elements (32,768 per invocation: llvmpipe ends an invocation's
//             loops silently past 65,535 iterations in all). A slice after the first adds
//             onto the sum its predecessors left in partials[index]; the last takes the root.
//             Grid: (1).
// grad_norm:  norm[0] = sqrt(sum over tensors of partials[i]^2) (torch: the norm of the
//             stacked per-tensor norms). Grid: (1).
// adamw:      one step of one parameter tensor, an invocation per element, in torch's order:
//   coef = min(1, gradClip / (norm + 1e-6));  g = grad * coef
//   p *= 1 - lr * weightDecay                       (param.mul_, only when decay)
//   m = m + (1 - beta1) * (g - m)                   (exp_avg.lerp_(g, 1 - beta1))
//   v = v * beta2 + (1 - beta2) * g * g             (exp_avg_sq.mul_(beta2).addcmul_(g, g))
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   p = p + (-(lr / (1 - beta1^t)) * m) / denom     (param.addcdiv_(m, denom, -step_size))

const WG = 256u;

struct SumSqParams {
  n: u32,       // elements of this gradient
  index: u32,   // its slot in partials
  start: u32,   // first element of this dispatch's slice
  end: u32,     // one past its last
}

struct NormParams {
  count: u32,   // gradient tensors
}

struct AdamParams {
  n: u32,              // elements of the parameter
  beta1: f32,
  beta2: f32,
  oneMinusBeta1: f32,  // 1 - beta1, rounded once from double as torch does
  oneMinusBeta2: f32,
  eps: f32,
  weightDecay: f32,
  gradClip: f32,       // max global norm; <= 0 disables clipping
  decay: u32,          // 1: apply weight decay to this tensor
}

@group(0) @binding(0) var<uniform> sq: SumSqParams;
@group(0) @binding(1) var<uniform> total: NormParams;
@group(0) @binding(2) var<uniform> a: AdamParams;
@group(0) @binding(3) var<storage, read> grad: array<f32>;          // [n]
@group(0) @binding(4) var<storage, read_write> partials: array<f32>; // [>= count]
@group(0) @binding(5) var<storage, read_write> norm: array<f32>;     // [1]
@group(0) @binding(6) var<storage, read_write> param: array<f32>;    // [n]
@group(0) @binding(7) var<storage, read_write> m: array<f32>;        // [n] first moment
@group(0) @binding(8) var<storage, read_write> v: array<f32>;        // [n] second moment
@group(0) @binding(9) var<storage, read> stepInfo: array<f32>; // [lr, 1 - beta1^t, 1 - beta2^t, 0]

var<workgroup> lanes: array<f32, WG>;

// Each invocation reads every WG-th element (coalesced) and sums them in blocks of 64 before
// adding each block to its total, so that no f32 sum runs over more than a few hundred terms.
@compute @workgroup_size(WG)
fn grad_sumsq(@builtin(local_invocation_index) li: u32) {
  var sum = 0.0;
  var i = sq.start + li;
  while (i < sq.end) {
    var block = 0.0;
    for (var k = 0u; k < 64u && i < sq.end; k++) {
      block = fma(grad[i], grad[i], block);
      i += WG;
    }
    sum += block;
  }
  lanes[li] = sum;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half /= 2u) {
    if (li < half) { lanes[li] += lanes[li + half]; }
    workgroupBarrier();
  }
  if (li == 0u) {
    var total = lanes[0];
    if (sq.start > 0u) { total = partials[sq.index] + total; }
    partials[sq.index] = select(total, sqrt(total), sq.end == sq.n);
  }
}

@compute @workgroup_size(1)
fn grad_norm() {
  var sum = 0.0;
  for (var i = 0u; i < total.count; i++) { sum = fma(partials[i], partials[i], sum); }
  norm[0] = sqrt(sum);
}

@compute @workgroup_size(64)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * 65535u * 64u + gid.x;
  if (i >= a.n) { return; }
  let lr = stepInfo[0];
  var coef = 1.0;
  if (a.gradClip > 0.0) { coef = min(1.0, a.gradClip / (norm[0] + 1e-6)); }
  let g = grad[i] * coef;
  var p = param[i];
  if (a.decay == 1u) { p *= 1.0 - lr * a.weightDecay; }
  let mi = fma(a.oneMinusBeta1, g - m[i], m[i]);
  let vi = v[i] * a.beta2 + a.oneMinusBeta2 * g * g;
  m[i] = mi;
  v[i] = vi;
  let stepSize = lr / stepInfo[1];
  let denom = sqrt(vi) / sqrt(stepInfo[2]) + a.eps;
  param[i] = p + (-stepSize * mi) / denom;
}
