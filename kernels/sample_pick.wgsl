// Sampled decoding on the GPU for the general decode path, as argmax.wgsl is for greedy: one
// workgroup draws the next token from the last step's logits (sampler.wgsl's sample_token,
// which the wrapper puts after this file), makes it the next step's input and appends it to
// the tokens chosen, so sampled steps follow each other without waiting for the CPU.

override WG: u32 = 256u;   // invocations: each holds a block of ceil(V / WG) logits
override MAXK: u32 = 256u; // most candidates sorted: top-k, or the vocabulary for top-p
override BINS: u32 = 256u; // the radix select's bins

struct Params {
  V: u32,           // vocabulary size
  temperature: f32, // > 0
  topK: u32,        // keep the topK best tokens, 0 all
  topP: f32,        // keep the nucleus of mass topP, 1 all
}

// Words of `state`: argmax.wgsl's start ([pos0, tokens chosen]), then the generator.
const POS = 0u;    // the cache row the next step writes
const CHOSEN = 1u; // tokens chosen so far
const RNG = 4u;    // 4 words: xoshiro128**'s state

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;       // [V]
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;    // ids[0]: next input token
@group(0) @binding(3) var<storage, read_write> state: array<u32>;  // [8]
@group(0) @binding(4) var<storage, read_write> tokens: array<u32>; // every token chosen

@compute @workgroup_size(WG)
fn sample_pick(@builtin(local_invocation_index) li: u32) {
  let token = sample_token(li); // every invocation takes part; the token is invocation 0's
  if (li == 0u) {
    ids[0] = token;
    tokens[state[CHOSEN]] = token;
    state[POS] += 1u; // the next step writes the cache one row further
    state[CHOSEN] += 1u;
  }
}
