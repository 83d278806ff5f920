// Greedy decoding on the GPU: the index of the largest logit (the first one on ties, as
// torch.argmax) becomes the next step's input token, so decode steps can follow each other
// without waiting for the CPU. One workgroup scans the logits row.

struct Params { n: u32 } // vocabulary size

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;       // [n]
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;    // ids[0]: next input token
@group(0) @binding(3) var<storage, read_write> start: array<u32>;   // [pos0, tokens chosen]
@group(0) @binding(4) var<storage, read_write> tokens: array<u32>; // every token chosen

override WG: u32 = 256u; // invocations, a power of two (argmax.ts's PICK_WG)
var<workgroup> bestValue: array<f32, WG>;
var<workgroup> bestIndex: array<u32, WG>;

@compute @workgroup_size(WG)
fn argmax(@builtin(local_invocation_index) tid: u32) {
  var v = -3.4e38;
  var i = 0xffffffffu;
  for (var j = tid; j < p.n; j += WG) { // j grows, so '>' keeps the first maximum
    if (logits[j] > v) {
      v = logits[j];
      i = j;
    }
  }
  bestValue[tid] = v;
  bestIndex[tid] = i;
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (tid < s) {
      let ov = bestValue[tid + s];
      let oi = bestIndex[tid + s];
      if (ov > bestValue[tid] || (ov == bestValue[tid] && oi < bestIndex[tid])) {
        bestValue[tid] = ov;
        bestIndex[tid] = oi;
      }
    }
  }
  workgroupBarrier();
  if (tid == 0u) {
    let token = bestIndex[0];
    ids[0] = token;
    tokens[start[1]] = token;
    start[0] += 1u; // the next step writes the cache one row further
    start[1] += 1u;
  }
}
