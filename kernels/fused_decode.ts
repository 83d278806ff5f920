/**
 * Typed wrappers for the fused decode step of small models (`fused_decode.wgsl`,
 * `fused_decode_head.wgsl`): a step is two dispatches, {@link fusedDecodeStep} (one workgroup runs every
 * block on one token, the activations in workgroup memory, and writes its K/V into the
 * model's own cache) and {@link fusedDecodeHead} (the lm_head over the vocabulary, with each
 * workgroup's largest logit for the next step's argmax). Steps chain on the GPU: the next
 * fusedDecodeStep takes its token from the last one's logits, greedily or sampled.
 *
 * @module
 */
import { type CacheDType, type CacheScales, cacheWords } from "./attention.ts";
import {
  type Copy,
  type Dispatch,
  f32bits,
  type Gpu,
  groups,
  MAX_LOOP_TRIPS,
  numel,
  type Tensor,
} from "./gpu.ts";
import type { RowChunks, Weight, WeightFormat } from "./matmul.ts";
import {
  checkSampling,
  type GpuSampling,
  MAX_SAMPLE_CANDIDATES,
  SAMPLE_BINS,
  SAMPLER_CODE,
  samplerLoopIterations,
  samplerWorkgroupWords,
} from "./sample.ts";

import formula from "./gelu_formula.wgsl" with { type: "text" };
import normRow from "./layernorm_row.wgsl" with { type: "text" };
import matmulRow from "./matmul_row.wgsl" with { type: "text" };
import codec from "./kv_codec.wgsl" with { type: "text" };
import stepKernel from "./fused_decode.wgsl" with { type: "text" };
import headKernel from "./fused_decode_head.wgsl" with { type: "text" };

/** The shape of a model, as its config names it (a `GPT2Config` is one). */
export interface DecodeShape {
  readonly nLayer: number;
  readonly nHead: number;
  readonly nEmbd: number;
  readonly nInner: number;
  readonly nPositions: number;
  readonly vocabSize: number;
  readonly layerNormEpsilon: number;
}

/** A LayerNorm's parameters. */
export interface NormTensors {
  readonly weight: Tensor; // [C]
  readonly bias: Tensor; //   [C]
}

/** A Linear's parameters: y = x @ weight^T + bias. */
export interface LinearTensors {
  readonly weight: Weight; // [out, in]
  readonly bias: Tensor; //   [out]
}

/** One block's parameters, as model/gpt2.ts holds them. */
export interface BlockTensors {
  readonly ln1: NormTensors;
  readonly cAttn: LinearTensors; // [3C, C]
  readonly cProj: LinearTensors; // [C, C]
  readonly ln2: NormTensors;
  readonly cFc: LinearTensors; //   [nInner, C]
  readonly mlpProj: LinearTensors; // [C, nInner]
}

/** One layer's cache buffers, as model/kv_cache.ts allocates them. */
export interface CacheLayer {
  readonly k: Tensor; // [nHead, capacity, words]
  readonly v: Tensor; // [nHead, capacity, words]
  readonly scales?: CacheScales; // [nHead, capacity] each, int8 only
}

/**
 * Every block's parameters packed for {@link fusedDecodeStep}, which cannot bind a buffer per
 * tensor: the matrices one after another in `mats` (in their own format), the LayerNorms and
 * biases in `vecs` (f32), each in the layout of the model's tensor. The step reads the
 * matrices from `matrices`, a texture holding mats' bytes (see {@link WeightTexture}).
 * Before the first steps, and again whenever the model's tensors change in place (by
 * training), run `copies` (which fill mats and vecs from them on the GPU) and then
 * {@link fillTexture} of `matrices`.
 */
export interface PackedBlocks {
  /** [nLayer · (4C² + 2·nInner·C) (+ V·C with the lm_head)] f32, or half as many f16 pairs. */
  readonly mats: Tensor;
  readonly vecs: Tensor; // [nLayer · (9C + nInner) + 2C] f32
  readonly format: WeightFormat;
  /** Whether the lm_head follows the blocks' matrices (see {@link stepHasHead}). */
  readonly lmHead: boolean;
  readonly copies: readonly Copy[];
  /** The matrices as the step reads them: `mats` copied into a texture. */
  readonly matrices: WeightTexture;
}

/**
 * A weight tensor's bytes in a texture, read as a flat array of vec4 texels (4 f32 or 8 f16
 * weights each), `texelsPerRow` to a texture row: on llvmpipe a texture read is ~1.4x as
 * fast as a storage read, which loads one invocation at a time. {@link fillTexture} copies
 * `source` into it.
 */
export interface WeightTexture {
  readonly source: Tensor;
  readonly format: WeightFormat;
  readonly texture: GPUTexture; // rgba32float (f32) or rgba32uint (f16 pairs)
  readonly texelsPerRow: number;
}

/** Where a step's token comes from: the caller, the last step's best logit, or a draw. */
export type TokenSource = "input" | "best" | "sample";

/** The buffers one model's steps share. */
export interface StepBuffers {
  /** [8 + nPositions] u32: pos, tokens chosen, input token, -, rng state ×4, tokens. */
  readonly state: Tensor;
  readonly wte: RowChunks; //  [V, C], one chunk
  readonly wpe: Tensor; //     [nPositions, C]
  readonly hidden: Tensor; //  [C] ln_f of the step's last hidden state
  readonly best: Tensor; //    [headWorkgroups, 2] u32: each head workgroup's largest logit, id
  readonly logits: Tensor; //  [1, ldy], ldy >= V
}

/** Words of the state buffer before the tokens chosen (fused_decode.wgsl's TOKENS). */
export const STATE_HEADER = 8;

/** Word of the state buffer where the sampler's 4 words of xoshiro128** state start. */
export const STATE_RNG = 4;

/**
 * Most lm_head weights {@link fusedDecodeStep} multiplies itself: below this a dispatch of its own
 * costs more than the product (on llvmpipe ~70 µs, ~25 thousand vec4 reads of one core).
 */
const STEP_HEAD_MAX = 65536;

/**
 * Whether fusedDecodeStep runs the lm_head itself (a small vocabulary, e.g. 65 characters), one
 * dispatch per token, or leaves it to {@link fusedDecodeHead}'s wide dispatch.
 */
export function stepHasHead(s: DecodeShape): boolean {
  return s.vocabSize * s.nEmbd <= STEP_HEAD_MAX;
}

/** Storage bindings of fusedDecodeStep besides the caches. */
const STEP_STORAGE = 8;

/** Texels per row of the matrices' texture (at most the adapter's width, a multiple of 16). */
function texelsPerRow(gpu: Gpu): number {
  return Math.min(4096, gpu.limits.maxTextureDimension2D);
}

/** A texture for the bytes of `source` (a multiple of 16), not filled yet. */
export function weightTexture(
  gpu: Gpu,
  source: Tensor,
  format: WeightFormat,
  label: string,
): WeightTexture {
  const width = texelsPerRow(gpu);
  const texels = numel(source) / 4;
  if (!Number.isInteger(texels)) throw new Error(`${label}: ${numel(source)} words, not vec4s`);
  const height = Math.ceil(texels / width);
  const texture = gpu.texture(
    width,
    height,
    format === "f16" ? "rgba32uint" : "rgba32float",
    label,
  );
  return { source, format, texture, texelsPerRow: width };
}

/**
 * Copies a weight texture's source into it (after what filled the source, on the same
 * queue): one submission, whole texture rows and then the last part.
 */
export function fillTexture(gpu: Gpu, t: WeightTexture): void {
  gpu.copyToTexture(t.source, t.texture, numel(t.source) / 4);
}

/** Frees a weight texture (not its source). */
export function destroyTexture(gpu: Gpu, t: WeightTexture): void {
  gpu.destroyTexture(t.texture);
}

/** WGSL for reading a weight texture bound at `binding` as matmul_row.wgsl's dot_w4/dot_w8. */
function textureReads(binding: number, t: WeightTexture): string {
  const f16 = t.format === "f16";
  const texel = `vec2(i % ${t.texelsPerRow}u, i / ${t.texelsPerRow}u)`;
  return [
    `@group(0) @binding(${binding}) var weights: texture_2d<${f16 ? "u32" : "f32"}>;`,
    "fn dot_w4(i: u32) -> vec4<f32> {",
    f16 ? "  return vec4(0.0);" : `  return textureLoad(weights, ${texel}, 0);`,
    "}",
    "fn dot_w8(i: u32) -> vec4<u32> {",
    f16 ? `  return textureLoad(weights, ${texel}, 0);` : "  return vec4(0u);",
    "}",
  ].join("\n");
}

/** Texels (16 bytes each) of the packed matrices of a shape. */
function matrixTexels(s: DecodeShape, format: WeightFormat): number {
  const head = stepHasHead(s) ? s.vocabSize * s.nEmbd : 0;
  return Math.ceil((s.nLayer * layerMatrixElements(s) + head) * (format === "f16" ? 2 : 4) / 16);
}

/** Binding number of the first cache buffer (fused_decode.wgsl's own end before 16). */
const FIRST_CACHE_BINDING = 16;

/** Invocations of fusedDecodeStep's workgroup, per kernel design. */
const STEP_WG = { cpu: 64, gpu: 256 };

/** Invocations per workgroup of fusedDecodeHead, per kernel design. */
const HEAD_WG = { cpu: 16, gpu: 64 };

/** Bytes of fusedDecodeStep's workgroup memory for a shape (fused_decode.wgsl's var<workgroup>s). */
function workgroupBytes(s: DecodeShape, wg: number): number {
  const C = s.nEmbd;
  const floats = C + (2 * C + s.nInner) + 3 * C + s.nHead * s.nPositions;
  return 4 * (floats + samplerWorkgroupWords(wg)) + 32;
}

/**
 * The loop iterations a step may estimate for one invocation: {@link MAX_LOOP_TRIPS} (past
 * it llvmpipe silently ends the loops) less a tenth, as {@link stepLoopIterations} counts
 * each loop's iterations but not the exits and lanes that share the count.
 */
const LOOP_BUDGET = Math.floor(0.9 * MAX_LOOP_TRIPS);

/**
 * An upper bound on the loop iterations one invocation of fusedDecodeStep runs (fused_decode.wgsl's
 * loops at the longest context, sampling included), to keep under {@link LOOP_BUDGET}.
 */
function stepLoopIterations(s: DecodeShape, format: WeightFormat, wg: number): number {
  const C = s.nEmbd, NI = s.nInner, n = s.nPositions;
  const perRead = format === "f16" ? 8 : 4;
  const spread = (work: number) => Math.ceil(work / wg); // a loop shared by the workgroup
  const product = (N: number, K: number) => spread(N / 4) * (K / perRead + 1);
  const layerNorm = 2 * (C / 4) + spread(C / 4);
  const attention = spread(s.nHead * n) * (C / s.nHead / 4 + 1) + 3 * n +
    spread(C / 4) * n;
  const layer = 2 * layerNorm + product(3 * C, C) + product(C, C) + product(NI, C) +
    product(C, NI) + spread(2 * C) + attention;
  const head = stepHasHead(s) ? product(s.vocabSize, C) + s.vocabSize : 0;
  return s.nLayer * layer + layerNorm + 2 * spread(C / 4) + head +
    samplerLoopIterations(s.vocabSize, wg);
}

/** Matrix elements per layer: c_attn, attn c_proj, c_fc, mlp c_proj. */
function layerMatrixElements(s: DecodeShape): number {
  return 4 * s.nEmbd * s.nEmbd + 2 * s.nInner * s.nEmbd;
}

/**
 * Why this model cannot take the fused step on this device, or null when it can: its
 * activations must fit one workgroup's memory, its caches (int8: four buffers per layer) and
 * the step's own buffers a dispatch's bindings, its packed matrices and its wte and lm_head
 * one binding each, and f16 matrices need rows of a multiple of 8.
 */
export function fusedDecodeLimit(
  gpu: Gpu,
  s: DecodeShape,
  format: WeightFormat,
  wte: RowChunks,
  lmHead: RowChunks,
): string | null {
  const { limits } = gpu;
  const headDim = s.nEmbd / s.nHead;
  const bytes = workgroupBytes(s, STEP_WG[gpu.design]);
  const loops = stepLoopIterations(s, format, STEP_WG[gpu.design]);
  const bindings = STEP_STORAGE + 4 * s.nLayer;
  const matBytes = s.nLayer * layerMatrixElements(s) * (format === "f16" ? 2 : 4);
  if (!Number.isInteger(headDim) || headDim % 4) {
    return `head_dim ${headDim} is not a multiple of 4`;
  }
  if (format === "f16" && (s.nEmbd % 8 || s.nInner % 8)) {
    return `f16 rows of n_embd ${s.nEmbd} and n_inner ${s.nInner} must be multiples of 8`;
  }
  if (bytes > limits.maxComputeWorkgroupStorageSize) {
    return `its activations take ${bytes} bytes of workgroup memory, more than the ` +
      `${limits.maxComputeWorkgroupStorageSize} a workgroup has`;
  }
  if (loops > LOOP_BUDGET) {
    return `a step would loop ~${loops} times in one invocation, past the ${LOOP_BUDGET} ` +
      "that Mesa's llvmpipe runs before it silently ends a shader's loops";
  }
  if (bindings > limits.maxStorageBuffersPerShaderStage) {
    return `${s.nLayer} layers need ${bindings} storage bindings, more than the ` +
      `${limits.maxStorageBuffersPerShaderStage} a dispatch has`;
  }
  if (matBytes > gpu.maxBinding) return `its matrices (${matBytes} bytes) exceed one binding`;
  const textureRows = Math.ceil(matrixTexels(s, format) / texelsPerRow(gpu));
  if (textureRows > limits.maxTextureDimension2D) {
    return `its matrices need a texture of ${textureRows} rows, more than the adapter's ` +
      `${limits.maxTextureDimension2D}`;
  }
  if (wte.parts.length > 1 || lmHead.parts.length > 1) return "its wte does not fit one binding";
  return null;
}

/** The floats of vecs before layer l's and ln_f's parameters. */
function layerVecs(s: DecodeShape): number {
  return 9 * s.nEmbd + s.nInner;
}

/**
 * Allocates the packed parameters of every block and ln_f (and the lm_head where
 * {@link stepHasHead}) and the copies that fill them from the model's tensors; see
 * {@link PackedBlocks}. lmHead: [V, C] in one chunk.
 */
export function packBlocks(
  gpu: Gpu,
  s: DecodeShape,
  blocks: readonly BlockTensors[],
  lnF: NormTensors,
  lmHead: RowChunks,
  format: WeightFormat,
): PackedBlocks {
  if (blocks.length !== s.nLayer) {
    throw new Error(`packBlocks: ${blocks.length} blocks for n_layer ${s.nLayer}`);
  }
  const perWord = format === "f16" ? 2 : 1;
  const withHead = stepHasHead(s);
  const elements = s.nLayer * layerMatrixElements(s) + (withHead ? s.vocabSize * s.nEmbd : 0);
  const mats = gpu.tensor([elements / perWord], "decode matrices");
  const matrices = weightTexture(gpu, mats, format, "decode matrices");
  const vecs = gpu.tensor([s.nLayer * layerVecs(s) + 2 * s.nEmbd], "decode vectors");
  const copies: Copy[] = [];
  // Appends `from` to `to` at element `at`; returns the element after it.
  const append = (from: Tensor, to: Tensor, at: number): number => {
    const n = numel(from);
    copies.push({ label: "pack decode weights", from, to: { ...to, offset: at * 4, shape: [n] } });
    return at + n;
  };
  let m = 0;
  let v = 0;
  for (const b of blocks) {
    for (const l of [b.cAttn, b.cProj, b.cFc, b.mlpProj]) {
      if (l.weight.format !== format) throw new Error("packBlocks: matrices of mixed formats");
      m = append(l.weight.tensor, mats, m);
    }
    const order = [b.ln1.weight, b.ln1.bias, b.cAttn.bias, b.cProj.bias, b.ln2.weight, b.ln2.bias];
    for (const t of [...order, b.cFc.bias, b.mlpProj.bias]) v = append(t, vecs, v);
  }
  if (withHead) {
    if (lmHead.parts.length !== 1 || lmHead.format !== format) {
      throw new Error("packBlocks: the lm_head must be one chunk in the matrices' format");
    }
    m = append(lmHead.parts[0].tensor, mats, m);
  }
  v = append(lnF.bias, vecs, append(lnF.weight, vecs, v));
  if (m !== numel(mats) || v !== numel(vecs)) {
    throw new Error(`packBlocks: the blocks do not have the shapes of n_embd ${s.nEmbd}`);
  }
  return { mats, vecs, format, lmHead: withHead, copies, matrices };
}

/** Frees what {@link packBlocks} allocated. */
export function destroyPacked(gpu: Gpu, packed: PackedBlocks): void {
  gpu.destroy(packed.mats);
  gpu.destroy(packed.vecs);
  destroyTexture(gpu, packed.matrices);
}

/**
 * What fused_decode.wgsl's code depends on besides its overrides: the matrices' texture and the
 * functions matmul_row.wgsl reads it through (dot_w4 for f32, dot_w8 for f16), the cache
 * bindings of `layers` layers of a `dtype` cache and the functions kv_codec.wgsl reads and
 * writes them through (cache c is layer c / 2's K when even, V when odd), and run_blocks, a
 * call of block() per layer. f32 caches are bound as vec4s, so that a key's 4 values are one
 * read.
 */
function generatedCode(layers: number, dtype: CacheDType, packed: PackedBlocks): string {
  const f32 = dtype === "f32";
  const lines = [textureReads(5, packed.matrices)];
  for (let l = 0; l < layers; l++) {
    const at = FIRST_CACHE_BINDING + 4 * l;
    const type = f32 ? "vec4<f32>" : "u32";
    lines.push(`@group(0) @binding(${at}) var<storage, read_write> k${l}: array<${type}>;`);
    lines.push(`@group(0) @binding(${at + 1}) var<storage, read_write> v${l}: array<${type}>;`);
    if (dtype === "int8") {
      lines.push(`@group(0) @binding(${at + 2}) var<storage, read_write> ks${l}: array<f32>;`);
      lines.push(`@group(0) @binding(${at + 3}) var<storage, read_write> vs${l}: array<f32>;`);
    }
  }
  const name = (c: number, scale = "") => `${c % 2 ? "v" : "k"}${scale}${c >> 1}`;
  // A switch over the 2 · layers caches, `body` of each case naming its buffer.
  const each = (body: (c: number) => string, otherwise: string) =>
    [
      "  switch cache {",
      ...Array.from({ length: 2 * layers }, (_, c) => `    case ${c}u: { ${body(c)} }`),
      `    default: { ${otherwise} }`,
      "  }",
    ].join("\n");
  const fn = (signature: string, body: string) => `fn ${signature} {\n${body}\n}`;
  lines.push(
    fn(
      "kv_vec4(cache: u32, i4: u32) -> vec4<f32>",
      f32 ? each((c) => `return ${name(c)}[i4];`, "return vec4(0.0);") : "  return vec4(0.0);",
    ),
    fn(
      "kv_word(cache: u32, i: u32) -> u32",
      f32 ? "  return 0u;" : each((c) => `return ${name(c)}[i];`, "return 0u;"),
    ),
    fn(
      "kv_scale(cache: u32, row: u32) -> f32",
      dtype === "int8"
        ? each((c) => `return ${name(c, "s")}[row];`, "return 1.0;")
        : "  return 1.0;",
    ),
    fn(
      "kv_put(cache: u32, i: u32, word: u32)",
      f32
        ? each((c) => `${name(c)}[i / 4u][i % 4u] = bitcast<f32>(word);`, "")
        : each((c) => `${name(c)}[i] = word;`, ""),
    ),
    fn(
      "kv_put_scale(cache: u32, row: u32, scale: f32)",
      dtype === "int8" ? each((c) => `${name(c, "s")}[row] = scale;`, "") : "",
    ),
  );
  const calls = Array.from({ length: layers }, (_, l) => `  block(li, ${l}u, pos);`);
  lines.push(fn("run_blocks(li: u32, pos: u32)", calls.join("\n")));
  return lines.join("\n");
}

/** The storage of a cache, from its words per row. */
function cacheDType(layer: CacheLayer, headDim: number): CacheDType {
  const words = layer.k.shape[2];
  const dtype = (["f32", "f16", "int8"] as const).find((d) => cacheWords(d, headDim) === words);
  if (!dtype) {
    throw new Error(`fusedDecodeStep: cache[${layer.k.shape}] is not of head_dim ${headDim}`);
  }
  return dtype;
}

/** The options of one {@link fusedDecodeStep} dispatch. */
export interface StepOptions {
  /** Where the token comes from (see {@link TokenSource}). */
  readonly source: TokenSource;
  /** Run the blocks on it (false: only choose it, the end of a chain). */
  readonly blocks: boolean;
  /** With source "sample": how. */
  readonly sampling?: GpuSampling;
}

/**
 * One dispatch, one workgroup: chooses the step's token (`options.source`), appends it to
 * the chosen tokens in `io.state` unless given, then with `options.blocks` runs every block
 * on it at position state[0] (its K/V into `caches` at that row, f32, f16 or int8 as they
 * are stored), writes ln_f of the result to `io.hidden` (or, where the lm_head is packed,
 * the logits to `io.logits`) and advances state[0].
 * caches: one per layer, [nHead, capacity, words] each.
 */
export function fusedDecodeStep(
  gpu: Gpu,
  s: DecodeShape,
  packed: PackedBlocks,
  io: StepBuffers,
  caches: readonly CacheLayer[],
  options: StepOptions,
): Dispatch {
  const headDim = s.nEmbd / s.nHead;
  if (caches.length !== s.nLayer) {
    throw new Error(`fusedDecodeStep: ${caches.length} cache layers for n_layer ${s.nLayer}`);
  }
  const dtype = cacheDType(caches[0], headDim);
  const capacity = caches[0].k.shape[1];
  const sampling = options.sampling ?? { temperature: 1, topK: 0, topP: 1 };
  if (options.source === "sample") checkSampling(sampling, s.vocabSize, "fusedDecodeStep");
  const source = { input: 0, best: 1, sample: 2 }[options.source];
  const partials = headWorkgroups(gpu, s.vocabSize);
  const params = gpu.uniform([
    capacity,
    s.vocabSize,
    f32bits(s.layerNormEpsilon),
    f32bits(1 / Math.sqrt(headDim)),
    source,
    options.blocks ? 1 : 0,
    partials,
    f32bits(sampling.temperature),
    sampling.topK,
    f32bits(sampling.topP),
    s.nEmbd,
    s.nInner,
  ]);
  const generated = generatedCode(s.nLayer, dtype, packed);
  const code =
    `${formula}\n${normRow}\n${matmulRow}\n${codec}\n${generated}\n${stepKernel}\n${SAMPLER_CODE}`;
  const kernel = gpu.kernel(code, "decode_step", {
    WG: STEP_WG[gpu.design],
    C: s.nEmbd,
    NH: s.nHead,
    NI: s.nInner,
    NL: s.nLayer,
    MAXP: s.nPositions,
    F16: packed.format === "f16" ? 1 : 0,
    HEAD: packed.lmHead ? 1 : 0,
    SAMPLE: options.source === "sample" ? 1 : 0,
    MAXK: options.source === "sample" ? MAX_SAMPLE_CANDIDATES : 1,
    BINS: options.source === "sample" ? SAMPLE_BINS : 1,
    X4: s.nEmbd / 4,
    ACT4: (2 * s.nEmbd + s.nInner) / 4,
    QKV4: 3 * s.nEmbd / 4,
    SCORES: s.nHead * s.nPositions,
    HD: headDim,
    KV: ["f32", "f16", "int8"].indexOf(dtype),
  });
  const cacheBindings: Record<string, Tensor> = {};
  caches.forEach((c, l) => {
    if (c.k.shape[1] !== capacity) {
      throw new Error("fusedDecodeStep: cache layers of unequal capacity");
    }
    cacheBindings[`k${l}`] = c.k;
    cacheBindings[`v${l}`] = c.v;
    if (dtype === "int8") {
      cacheBindings[`ks${l}`] = c.scales!.k;
      cacheBindings[`vs${l}`] = c.scales!.v;
    }
  });
  const wte = io.wte.parts[0].tensor;
  const bindings = {
    p: params,
    state: io.state,
    wte,
    wteh: wte,
    wpe: io.wpe,
    weights: packed.matrices.texture.createView(),
    vecs: packed.vecs,
    hidden: io.hidden,
    best: io.best,
    logits: io.logits,
    ...cacheBindings,
  };
  const what = `${options.source}${options.blocks ? "" : " only"}`;
  return gpu.dispatch(`decode.step ${what} ${s.nLayer}x${s.nEmbd}`, kernel, bindings, [1]);
}

/** Workgroups of {@link fusedDecodeHead} over a vocabulary of `V`: the partial maxima it writes. */
export function headWorkgroups(gpu: Gpu, V: number): number {
  return groups(Math.ceil(V / 4), HEAD_WG[gpu.design]);
}

/**
 * logits = hidden @ lmHead^T over the vocabulary (written to `logits` when `writeLogits`),
 * and for each workgroup its largest logit and id into `best` (the first on ties), reading
 * the lm_head from `texture` (see {@link WeightTexture}; fill it before the dispatch).
 * hidden: [C]; lmHead: [V, C] in one chunk, texture's source; logits: [1, ldy >= V];
 * best: [headWorkgroups(V), 2] u32.
 */
export function fusedDecodeHead(
  gpu: Gpu,
  hidden: Tensor,
  lmHead: RowChunks,
  texture: WeightTexture,
  logits: Tensor,
  best: Tensor,
  writeLogits: boolean,
): Dispatch {
  const { rows: V, cols: C, format } = lmHead;
  const G = headWorkgroups(gpu, V);
  if (lmHead.parts.length !== 1 || numel(hidden) !== C || logits.shape.at(-1)! < V) {
    throw new Error(
      `fusedDecodeHead: hidden[${hidden.shape}], lm_head [${V}, ${C}] in ${lmHead.parts.length} ` +
        `chunks and logits[${logits.shape}] do not fit`,
    );
  }
  if (texture.source !== lmHead.parts[0].tensor || texture.format !== format) {
    throw new Error("fusedDecodeHead: the texture is not the lm_head's");
  }
  if (numel(best) < 2 * G) {
    throw new Error(`fusedDecodeHead: best[${best.shape}] holds < ${G} pairs`);
  }
  const WG = HEAD_WG[gpu.design];
  const code = `${matmulRow}\n${textureReads(2, texture)}\n${headKernel}`;
  const kernel = gpu.kernel(code, "decode_head", { WG, F16: format === "f16" ? 1 : 0 });
  const bindings = {
    p: gpu.uniform([V, C, writeLogits ? 1 : 0]),
    hidden,
    weights: texture.texture.createView(),
    logits,
    best,
  };
  return gpu.dispatch(`decode.head ${C}x${V}`, kernel, bindings, [G]);
}
