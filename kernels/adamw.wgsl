// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias-corrected moments),
// with torch.nn.utils.clip_grad_norm_'s global-norm clipping applied as the gradient is read,
// over all parameters at once: the parameters, gradients and moments each lie in one buffer
// of the same layout (kernels/arena.ts), bound in chunks that fit a binding.
//
// grad_sumsq: partials[part0 + w] = the sum of squares of workgroup w's share of one chunk of
//             the gradients (PARTS workgroups, each a fixed order: deterministic).
//             Grid: (PARTS).
// adamw:      one step of one chunk, ELEMS elements per invocation. Every workgroup first sums
//             all the partials of every chunk (the same order in each: the same bits), the
//             global norm = sqrt of that; workgroup 0 of the chunk marked `first` writes it to
//             norm[0]. Then, in torch's order, for each element:
//   coef = min(1, gradClip / (norm + 1e-6));  g = grad * coef
//   p *= 1 - lr * weightDecay                       (param.mul_, elements before decayEnd)
//   m = m + (1 - beta1) * (g - m)                   (exp_avg.lerp_(g, 1 - beta1))
//   v = v * beta2 + (1 - beta2) * g * g             (exp_avg_sq.mul_(beta2).addcmul_(g, g))
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   p = p + (-(lr / (1 - beta1^t)) * m) / denom     (param.addcdiv_(m, denom, -step_size))
// Workgroup barriers stay in uniform control flow.

const WG = 256u;
const PARTS = 64u;
const AWG = 64u;
const ELEMS = 16u;

struct SumSqParams {
  n: u32,       // elements of this chunk
  part0: u32,   // its first slot in partials
}

struct AdamParams {
  n: u32,              // elements of this chunk
  beta1: f32,
  beta2: f32,
  oneMinusBeta1: f32,  // 1 - beta1, rounded once from double as torch does
  oneMinusBeta2: f32,
  eps: f32,
  weightDecay: f32,
  gradClip: f32,       // max global norm; <= 0 disables clipping
  decayEnd: u32,       // elements [0, decayEnd) of this chunk are decayed
  parts: u32,          // partials of all chunks
  first: u32,          // 1: this chunk writes the norm
}

@group(0) @binding(0) var<uniform> sq: SumSqParams;
@group(0) @binding(2) var<uniform> a: AdamParams;
@group(0) @binding(3) var<storage, read> grad: array<f32>;          // [n]
@group(0) @binding(4) var<storage, read_write> partials: array<f32>; // [chunks * PARTS]
@group(0) @binding(5) var<storage, read_write> norm: array<f32>;     // [1]
@group(0) @binding(6) var<storage, read_write> param: array<f32>;    // [n]
@group(0) @binding(7) var<storage, read_write> m: array<f32>;        // [n] first moment
@group(0) @binding(8) var<storage, read_write> v: array<f32>;        // [n] second moment
@group(0) @binding(9) var<storage, read> stepInfo: array<f32>; // [lr, 1 - beta1^t, 1 - beta2^t, 0]
@group(0) @binding(10) var<storage, read> sums: array<f32>;    // partials, read by adamw

var<workgroup> lanes: array<f32, WG>;

// Each invocation reads every WG-th element of its workgroup's span (coalesced) and sums them
// in blocks of 64 before adding each block to its total, so that no f32 sum runs over more
// than a few hundred terms.
@compute @workgroup_size(WG)
fn grad_sumsq(
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wg: vec3<u32>,
) {
  let span = (sq.n + PARTS - 1u) / PARTS;
  let end = min(sq.n, (wg.x + 1u) * span);
  var sum = 0.0;
  var i = wg.x * span + li;
  while (i < end) {
    var block = 0.0;
    for (var k = 0u; k < 64u && i < end; k++) {
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
  if (li == 0u) { partials[sq.part0 + wg.x] = lanes[0]; }
}

@compute @workgroup_size(AWG)
fn adamw(
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wg: vec3<u32>,
) {
  var s = 0.0;
  for (var j = li; j < a.parts; j += AWG) { s += sums[j]; }
  lanes[li] = s;
  workgroupBarrier();
  for (var half = AWG / 2u; half > 0u; half /= 2u) {
    if (li < half) { lanes[li] += lanes[li + half]; }
    workgroupBarrier();
  }
  let total = sqrt(lanes[0]);
  let group = wg.y * 65535u + wg.x;
  if (group == 0u && li == 0u && a.first == 1u) { norm[0] = total; }
  let lr = stepInfo[0];
  var coef = 1.0;
  if (a.gradClip > 0.0) { coef = min(1.0, a.gradClip / (total + 1e-6)); }
  let stepSize = lr / stepInfo[1];
  let root2 = sqrt(stepInfo[2]);
  for (var k = 0u; k < ELEMS; k++) {
    let i = group * AWG * ELEMS + k * AWG + li;
    if (i < a.n) {
      let g = grad[i] * coef;
      var p = param[i];
      if (i < a.decayEnd) { p *= 1.0 - lr * a.weightDecay; }
      let mi = fma(a.oneMinusBeta1, g - m[i], m[i]);
      let vi = v[i] * a.beta2 + a.oneMinusBeta2 * g * g;
      m[i] = mi;
      v[i] = vi;
      let denom = sqrt(vi) / root2 + a.eps;
      param[i] = p + (-stepSize * mi) / denom;
    }
  }
}
