/**
 * The cases of the input fuzzer: seeded mutations of a safetensors checkpoint, a config, a
 * KV-cache snapshot and tokenizer input, each run through the real loader and judged.
 *
 * A case ends in one outcome. Clean: `loaded` (the input was accepted, and what came out is
 * right: finite weights give finite logits, a config obeys every bound, a snapshot restores
 * exactly the file's K/V, text round-trips) or `refused` (an Error whose message starts with
 * the name of the input, is at most {@link MAX_MESSAGE} characters, and is not an engine
 * error such as a stack overflow). Unclean: `raw-error` (any other error), `long-message`,
 * `non-finite` (an accepted input whose forward gives NaN or ±Infinity), `wrong` (accepted
 * but not what the input says), `slow` (over {@link SLOW_MS}), `leak` (GPU bytes not back to
 * their start). The campaign driver (scripts/fuzz.ts) adds `crash` and `hang`.
 *
 * Case i of seed s is the same on every run: `deno task fuzz --seed s --case i` replays it.
 *
 * @module
 */
import { join } from "node:path";
import { Gpu } from "../kernels/gpu.ts";
import { CONFIG_LIMITS, type GPT2Config, loadConfig, parseConfig } from "../model/config.ts";
import { GPT2 } from "../model/gpt2.ts";
import type { KVCache } from "../model/kv_cache.ts";
import { type GPT2Weights, loadCheckpoint, randomWeights } from "../model/weights.ts";
import { encodeSafetensors, SafetensorsFile, type TensorData } from "../io/safetensors.ts";
import { loadSnapshot, saveSnapshot } from "../model/snapshot.ts";
import { Rng } from "../base/rng.ts";
import { gpt2Tokenizer } from "../tokenizers/gpt2.ts";
import { TextStream, TooManyTokensError } from "../tokenizers/tokenizer.ts";

/** Longest error message a clean refusal may have. */
export const MAX_MESSAGE = 300;

/** A case that takes longer than this many milliseconds is `slow`. */
export const SLOW_MS = 2000;

/** What a case is about. */
export type CaseKind = "checkpoint" | "config" | "snapshot" | "tokenizer";

/** How a case ended; see the module comment. */
export type Outcome =
  | "loaded"
  | "refused"
  | "raw-error"
  | "long-message"
  | "non-finite"
  | "wrong"
  | "slow"
  | "leak"
  | "crash"
  | "hang";

/** The outcomes that are fine. */
export const CLEAN_OUTCOMES: readonly Outcome[] = ["loaded", "refused"];

/** One judged case. */
export interface CaseResult {
  /** Case number within its seed. */
  index: number;
  kind: CaseKind;
  /** The mutations applied, e.g. `prefix-1` or `field n_embd=1e12`. */
  mutation: string;
  outcome: Outcome;
  /** The error message (cut) or what was wrong. */
  detail: string;
  ms: number;
}

/** What every case of one process shares: the device, the base inputs, a scratch folder. */
export interface FuzzContext {
  gpu: Gpu;
  dir: string;
  /** The small base checkpoint: its config.json text and its safetensors bytes. */
  base: { configText: string; weights: Uint8Array };
  /** A real fixture checkpoint (data/shapes/l1-h2-e96). */
  fixture: { configText: string; weights: Uint8Array };
  /** The base model on the GPU, and a snapshot of 5 tokens of it. */
  model: GPT2;
  snapshot: Uint8Array;
  /** `gpu.bytesAllocated` between cases. */
  bytesAtRest: number;
}

/** The base checkpoint: 1 layer, 2 heads of 8, 16 positions, 64 tokens, untied head. */
const BASE_CONFIG = {
  model_type: "gpt2",
  n_layer: 1,
  n_head: 2,
  n_embd: 16,
  n_positions: 16,
  vocab_size: 64,
  bos_token_id: 63,
  eos_token_id: 63,
  n_inner: null,
  layer_norm_epsilon: 1e-5,
  activation_function: "gelu_new",
  tie_word_embeddings: false,
};

/** The tensors of a GPT2LMHeadModel checkpoint as `save_pretrained` names them. */
function checkpointTensors(w: GPT2Weights, c: GPT2Config): Record<string, TensorData> {
  const out: Record<string, TensorData> = {};
  const put = (name: string, shape: number[], data: Float32Array) => {
    out[name] = { dtype: "F32", shape, data };
  };
  const C = c.nEmbd;
  put("transformer.wte.weight", [c.vocabSize, C], w.wte);
  put("transformer.wpe.weight", [c.nPositions, C], w.wpe);
  w.blocks.forEach((b, i) => {
    const h = `transformer.h.${i}.`;
    put(`${h}ln_1.weight`, [C], b.ln1.weight);
    put(`${h}ln_1.bias`, [C], b.ln1.bias);
    put(`${h}ln_2.weight`, [C], b.ln2.weight);
    put(`${h}ln_2.bias`, [C], b.ln2.bias);
    for (
      const [key, l] of [
        ["attn.c_attn", b.attn.cAttn],
        ["attn.c_proj", b.attn.cProj],
        ["mlp.c_fc", b.mlp.cFc],
        ["mlp.c_proj", b.mlp.cProj],
      ] as const
    ) {
      put(`${h}${key}.weight`, [l.inFeatures, l.outFeatures], l.weight);
      put(`${h}${key}.bias`, [l.outFeatures], l.bias);
    }
  });
  put("transformer.ln_f.weight", [C], w.lnF.weight);
  put("transformer.ln_f.bias", [C], w.lnF.bias);
  if (w.lmHead) put("lm_head.weight", [c.vocabSize, C], w.lmHead);
  return out;
}

/** Opens the device and builds the base inputs, in a fresh temporary folder. */
export async function makeContext(): Promise<FuzzContext> {
  const gpu = await Gpu.open();
  const dir = await Deno.makeTempDir({ prefix: "kvgpt-fuzz-" });
  const config = parseConfig(BASE_CONFIG, "base");
  const weights = randomWeights(config, 14);
  const base = {
    configText: JSON.stringify(BASE_CONFIG, null, 2),
    weights: encodeSafetensors(checkpointTensors(weights, config), { format: "pt" }),
  };
  const fixtureDir = new URL("../data/shapes/l1-h2-e96/", import.meta.url);
  const fixture = {
    configText: await Deno.readTextFile(new URL("config.json", fixtureDir)),
    weights: await Deno.readFile(new URL("model.safetensors", fixtureDir)),
  };
  const model = new GPT2(gpu, config, weights);
  const cache = model.newCache();
  const ids = [1, 2, 3, 4, 5];
  await model.forward(ids, cache);
  const path = join(dir, "base-snapshot.safetensors");
  await saveSnapshot(path, cache, ids, model);
  cache.destroy();
  const snapshot = await Deno.readFile(path);
  await gpu.sync();
  return { gpu, dir, base, fixture, model, snapshot, bytesAtRest: gpu.bytesAllocated };
}

/** Frees the context's model and folder. */
export async function closeContext(ctx: FuzzContext): Promise<void> {
  ctx.model.destroy();
  await Deno.remove(ctx.dir, { recursive: true });
}

/** The seeded generator of case `index` of `seed`. */
function caseRng(seed: number, index: number): Rng {
  return new Rng(seed * 1_000_003 + index);
}

/** Small helpers over an Rng. */
class Draw {
  constructor(readonly rng: Rng) {}
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.rng.next() * n);
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.rng.next() < p;
  }
  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

/** `value` nested in `depth` arrays, built without recursion. */
function nested(value: unknown, depth: number): unknown {
  let out = value;
  for (let i = 0; i < depth; i++) out = [out];
  return out;
}

/**
 * Stands for `[[[…1…]]]` nested `depth` deep in a value written as JSON text: JSON.stringify
 * itself overflows the stack on such a value, so {@link jsonText} writes it out.
 */
class Deep {
  constructor(readonly depth: number) {}
}

/** JSON text of `value`, with every {@link Deep} written out in full. */
function jsonText(value: unknown): string {
  const deep: Deep[] = [];
  const text = JSON.stringify(value, (_, v) => {
    if (!(v instanceof Deep)) return v;
    deep.push(v);
    return `@@deep${deep.length - 1}@@`;
  });
  return text.replace(
    /"@@deep(\d+)@@"/g,
    (_, i) => "[".repeat(deep[Number(i)].depth) + "1" + "]".repeat(deep[Number(i)].depth),
  );
}

/** `value` with every {@link Deep} made a real nested array (for the API). */
function materialize(value: unknown): unknown {
  return value instanceof Deep ? nested(1, value.depth) : value;
}

/** Values a field may be set to in a header entry or a config. */
function oddValue(d: Draw, api: boolean): [string, unknown] {
  const json: [string, unknown][] = [
    ["0", 0],
    ["-1", -1],
    ["1", 1],
    ["2", 2],
    ["3", 3],
    ["4", 4],
    ["6", 6],
    ["8", 8],
    ["12", 12],
    ["15", 15],
    ["16", 16],
    ["17", 17],
    ["63", 63],
    ["64", 64],
    ["65", 65],
    ["1024", 1024],
    ["50256", 50256],
    ["1e12", 1e12],
    ["2^31", 2 ** 31],
    ["2^53-1", 2 ** 53 - 1],
    ["1.5", 1.5],
    ["1e300", 1e300],
    ["5e-324", 5e-324],
    ["1e-5", 1e-5],
    ["-0", -0],
    ['"64"', "64"],
    ['""', ""],
    ["null", null],
    ["true", true],
    ["false", false],
    ["[]", []],
    ["[64]", [64]],
    ["{}", {}],
    ["nested 1e5", new Deep(1e5)],
    ["long string", "x".repeat(1e5)],
    ["long array", new Array(2e4).fill(1)],
  ];
  const apiOnly: [string, unknown][] = [
    ["NaN", NaN],
    ["Infinity", Infinity],
    ["BigInt", 64n],
    ["Symbol", Symbol("s")],
    ["function", () => 64],
    ["undefined", undefined],
  ];
  return d.pick(api && d.chance(0.3) ? apiOnly : json);
}

/** Runs `body`, timing it, and turns what it returned or threw into an outcome. */
async function judge(
  prefix: string,
  body: () => Promise<{ outcome: Outcome; detail: string }>,
): Promise<{ outcome: Outcome; detail: string; ms: number }> {
  const t0 = performance.now();
  let result: { outcome: Outcome; detail: string };
  try {
    result = await body();
  } catch (err) {
    result = classifyError(err, prefix);
  }
  const ms = performance.now() - t0;
  if (CLEAN_OUTCOMES.includes(result.outcome) && ms > SLOW_MS) {
    return { outcome: "slow", detail: `${ms.toFixed(0)} ms; ${result.detail}`, ms };
  }
  return { ...result, ms };
}

/** Names of the errors a loader may throw on purpose. */
const ERROR_NAMES = [
  "Error",
  "TypeError",
  "RangeError",
  "SafetensorsError",
  "SnapshotError",
  "TooManyTokensError",
];

/** A clean refusal, or why not. */
export function classifyError(err: unknown, prefix: string): { outcome: Outcome; detail: string } {
  if (!(err instanceof Error)) return { outcome: "raw-error", detail: `threw ${String(err)}` };
  const message = err.message;
  const detail = `${err.name}: ${message.slice(0, 200)}`;
  if (!ERROR_NAMES.includes(err.name) || !message.startsWith(prefix)) {
    return { outcome: "raw-error", detail };
  }
  if (/Maximum call stack|out of memory|Invalid (string|array) length/i.test(message)) {
    return { outcome: "raw-error", detail };
  }
  if (message.length > MAX_MESSAGE) {
    return { outcome: "long-message", detail: `${message.length} chars: ${detail}` };
  }
  return { outcome: "refused", detail };
}

/** Runs case `index` of `seed` and judges it. */
export async function runCase(ctx: FuzzContext, seed: number, index: number): Promise<CaseResult> {
  const d = new Draw(caseRng(seed, index));
  const kinds: CaseKind[] = ["checkpoint", "checkpoint", "config", "snapshot", "tokenizer"];
  const kind = kinds[index % kinds.length];
  const run = {
    checkpoint: checkpointCase,
    config: configCase,
    snapshot: snapshotCase,
    tokenizer: tokenizerCase,
  }[kind];
  const mutations: string[] = [];
  const judged = await run(ctx, d, index, mutations);
  let { outcome, detail } = judged;
  try {
    await ctx.gpu.sync();
  } catch (err) {
    outcome = "raw-error";
    detail = `a WebGPU error after the case: ${(err as Error).message.slice(0, 200)}; ${detail}`;
  }
  if (ctx.gpu.bytesAllocated !== ctx.bytesAtRest && CLEAN_OUTCOMES.includes(outcome)) {
    outcome = "leak";
    detail = `${ctx.gpu.bytesAllocated - ctx.bytesAtRest} GPU bytes not freed; ${detail}`;
    ctx.bytesAtRest = ctx.gpu.bytesAllocated; // report a leak once
  }
  return { index, kind, mutation: mutations.join("; "), outcome, detail, ms: judged.ms };
}

// ---------------------------------------------------------------------------------------------
// Safetensors bytes

/** The header of safetensors bytes as an object, and where the data starts. */
function splitFile(bytes: Uint8Array): { header: Record<string, unknown>; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return { header, data: bytes.subarray(8 + n) };
}

/** Safetensors bytes from header text and data, the header padded with spaces to 8 bytes. */
function joinFile(headerText: string, data: Uint8Array, pad = true): Uint8Array {
  const json = new TextEncoder().encode(headerText);
  const length = pad ? Math.ceil(json.length / 8) * 8 : json.length;
  const out = new Uint8Array(8 + length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(length), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + length);
  out.set(data, 8 + length);
  return out;
}

const DTYPES = ["F32", "F16", "BF16", "I32", "I64", "U8", "BOOL", "F64", "Q4", "f32", ""];

/**
 * Applies one random mutation to safetensors bytes; `tensorNames` are the tensors whose F32
 * values the data mutations may touch. Returns the new bytes and the mutation's name.
 */
function mutateSafetensors(d: Draw, bytes: Uint8Array): [Uint8Array, string] {
  const { header, data } = splitFile(bytes);
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const name = d.pick(names);
  const entry = header[name] as { dtype: string; shape: number[]; data_offsets: number[] };
  const out = bytes.slice();
  const view = new DataView(out.buffer);
  const reheader = (h: unknown, pad = true) => joinFile(jsonText(h), data, pad);
  switch (d.int(16)) {
    case 0: { // the 8-byte prefix off by a little
      const delta = d.pick([-8, -4, -3, -2, -1, 1, 2, 3, 4, 8]);
      view.setBigUint64(0, view.getBigUint64(0, true) + BigInt(delta), true);
      return [out, `prefix${delta > 0 ? "+" : ""}${delta}`];
    }
    case 1: { // the prefix set to something absurd
      const value = d.pick([0n, 2n ** 63n, 2n ** 64n - 1n, BigInt(out.length), 1n << 30n]);
      view.setBigUint64(0, value, true);
      return [out, `prefix=${value}`];
    }
    case 2: { // truncated, or extended
      if (d.chance(0.5)) {
        const at = d.int(out.length);
        return [out.subarray(0, at), `truncate at ${at}`];
      }
      const extra = new Uint8Array(1 + d.int(64)).map(() => d.int(256));
      const longer = new Uint8Array(out.length + extra.length);
      longer.set(out);
      longer.set(extra, out.length);
      return [longer, `append ${extra.length} bytes`];
    }
    case 3: { // one byte of the header changed
      const n = Number(view.getBigUint64(0, true));
      const at = 8 + d.int(n);
      out[at] = d.chance(0.5)
        ? d.int(256)
        : d.pick([0x22, 0x2c, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x30]);
      return [out, `header byte ${at}=${out[at]}`];
    }
    case 4: { // a data value of one tensor made NaN or infinite
      const [b, e] = Array.isArray(entry?.data_offsets) ? entry.data_offsets : [0, data.length];
      const values = new Float32Array(data.slice(0, data.length & ~3).buffer);
      const begin = Math.floor(b / 4);
      const count = Math.max(1, Math.floor((e - b) / 4));
      const at = Math.min(values.length - 1, begin + d.int(count));
      const value = d.pick([NaN, Infinity, -Infinity]);
      values[at] = value;
      out.set(new Uint8Array(values.buffer), 8 + Number(view.getBigUint64(0, true)));
      return [out, `${name}[${at - begin}]=${value}`];
    }
    case 5: { // a data value nudged: low mantissa bits, sign, or a small random value
      const words = new Uint32Array(data.slice(0, data.length & ~3).buffer);
      const at = d.int(words.length);
      const how = d.int(3);
      if (how === 0) words[at] ^= 1 << d.int(16);
      else if (how === 1) words[at] ^= 0x80000000;
      else new Float32Array(words.buffer)[at] = 8 * d.rng.next() - 4;
      out.set(new Uint8Array(words.buffer), 8 + Number(view.getBigUint64(0, true)));
      return [out, `data word ${at} nudged (${["mantissa", "sign", "random"][how]})`];
    }
    case 6: { // dtype
      const dtype = d.pick(DTYPES);
      header[name] = { ...entry, dtype };
      return [reheader(header), `${name}.dtype=${dtype}`];
    }
    case 7: { // shape
      const [label, value] = d.chance(0.5) ? oddValue(d, false) : [
        "dim±1",
        entry.shape.map((x, i) => (i === entry.shape.length - 1 ? x + d.pick([-1, 1]) : x)),
      ];
      header[name] = {
        ...entry,
        shape: label === "dim±1" ? value : d.chance(0.5) ? value : [value],
      };
      return [reheader(header), `${name}.shape=${label}`];
    }
    case 8: { // data_offsets
      const [b, e] = entry.data_offsets;
      const options: [string, unknown][] = [
        ["+1", [b + 1, e + 1]],
        ["-1 end", [b, e - 1]],
        ["+4", [b + 4, e + 4]],
        ["swap", [e, b]],
        ["3 items", [b, e, e]],
        ["huge", [b, 2 ** 53]],
        ["negative", [-4, e]],
        ["float", [b + 0.5, e]],
        ["strings", [String(b), String(e)]],
        ["nested 1e5", new Deep(1e5)],
      ];
      const [label, value] = d.chance(0.7) ? d.pick(options) : oddValue(d, false);
      header[name] = { ...entry, data_offsets: value };
      return [reheader(header), `${name}.data_offsets=${label}`];
    }
    case 9: { // two tensors' offsets swapped, or one tensor moved onto another
      const other = d.pick(names);
      const o = header[other] as typeof entry;
      if (d.chance(0.5)) {
        header[name] = { ...entry, data_offsets: o.data_offsets };
        header[other] = { ...o, data_offsets: entry.data_offsets };
        return [reheader(header), `swap offsets ${name} ${other}`];
      }
      header[name] = { ...entry, data_offsets: o.data_offsets };
      return [reheader(header), `${name} onto ${other}`];
    }
    case 10: { // a field deleted, or the entry replaced
      if (d.chance(0.5)) {
        const field = d.pick(["dtype", "shape", "data_offsets"]);
        const copy: Record<string, unknown> = { ...entry };
        delete copy[field];
        header[name] = copy;
        return [reheader(header), `${name} without ${field}`];
      }
      const [label, value] = oddValue(d, false);
      header[name] = value;
      return [reheader(header), `${name}=${label}`];
    }
    case 11: { // a key renamed, deleted or added
      const how = d.int(3);
      if (how === 0) {
        delete header[name];
        return [reheader(header), `delete ${name}`];
      }
      if (how === 1) {
        const renamed = d.pick(["", "x".repeat(1e5), `${name} `, name.toUpperCase(), "\u0000"]);
        delete header[name];
        header[renamed] = entry;
        return [reheader(header), `rename ${name}`];
      }
      // An extra tensor of 4 bytes appended at the end of the data.
      header["extra.weight"] = {
        dtype: "F32",
        shape: [1],
        data_offsets: [data.length, data.length + 4],
      };
      const more = new Uint8Array(data.length + 4);
      more.set(data);
      return [joinFile(JSON.stringify(header), more), "extra tensor"];
    }
    case 12: { // a duplicate key, the earlier entry invalid or equal
      const text = JSON.stringify(header);
      const first = d.chance(0.5)
        ? JSON.stringify({ dtype: "Q4", shape: [1], data_offsets: [0, 1] })
        : JSON.stringify(entry);
      return [
        joinFile(`{${JSON.stringify(name)}:${first},${text.slice(1)}`, data),
        `duplicate ${name}`,
      ];
    }
    case 13: { // metadata
      const [label, value] = oddValue(d, false);
      if (d.chance(0.5)) header.__metadata__ = value;
      else header.__metadata__ = { format: "pt", [d.pick(["k", "x".repeat(1e4)])]: value };
      return [reheader(header), `metadata ${label}`];
    }
    case 14: { // padding: none, more, or made of other characters
      const text = JSON.stringify(header);
      const how = d.int(3);
      if (how === 0) return [joinFile(text, data, false), "unpadded header"];
      if (how === 1) {
        return [joinFile(text + " ".repeat(d.int(64)) + "\n\t", data), "extra padding"];
      }
      const padded = joinFile(text, data);
      const n = Number(new DataView(padded.buffer).getBigUint64(0, true));
      padded.fill(d.pick([0x00, 0x2c, 0x7d]), 8 + new TextEncoder().encode(text).length, 8 + n);
      return [padded, "bad padding"];
    }
    default: { // many entries, or deep nesting
      if (d.chance(0.5)) {
        for (let i = 0; i < 20_000; i++) {
          header[`empty.${i}`] = { dtype: "F32", shape: [0], data_offsets: [0, 0] };
        }
        return [reheader(header), "20000 empty entries"];
      }
      const text = JSON.stringify(header);
      const depth = d.pick([8, 1000, 1e5]);
      return [
        joinFile(`{"deep":${"[".repeat(depth)}${"]".repeat(depth)},${text.slice(1)}`, data),
        `nesting ${depth}`,
      ];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

/** Largest model (parameters, and cache values) an accepted config is run as. */
const MAX_RUN_PARAMETERS = 2_000_000;

/** Runs a prefill of up to 3 tokens and a decode step; describes a non-finite logit, or "". */
async function forwardCheck(gpu: Gpu, config: GPT2Config, weights: GPT2Weights): Promise<string> {
  using run = new ModelAndCache(gpu, config, weights);
  const ids = Array.from(
    { length: Math.min(3, config.nPositions) },
    (_, i) => i % config.vocabSize,
  );
  const { logits } = await run.model.forward(ids, run.cache);
  const bad = logits.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) return `logit ${bad} of ${logits.length} is ${logits[bad]}`;
  if (config.nPositions > ids.length) {
    const step = await run.model.forward([0], run.cache);
    const bad1 = step.logits.findIndex((x) => !Number.isFinite(x));
    if (bad1 >= 0) return `decode logit ${bad1} is ${step.logits[bad1]}`;
  }
  return "";
}

/** A model and a cache, freed together. */
class ModelAndCache {
  readonly model: GPT2;
  readonly cache: KVCache;
  constructor(gpu: Gpu, config: GPT2Config, weights: GPT2Weights) {
    this.model = new GPT2(gpu, config, weights);
    this.cache = this.model.newCache();
  }
  [Symbol.dispose]() {
    this.cache.destroy();
    this.model.destroy();
  }
}

/** A checkpoint folder with a mutated weights file (and sometimes a mutated config). */
async function checkpointCase(ctx: FuzzContext, d: Draw, index: number, mutations: string[]) {
  const source = d.chance(0.1) ? ctx.fixture : ctx.base;
  if (source === ctx.fixture) mutations.push("fixture l1-h2-e96");
  const dir = join(ctx.dir, `case-${index}`);
  await Deno.mkdir(dir, { recursive: true });
  try {
    let bytes = source.weights;
    for (let i = 1 + (d.chance(0.2) ? 1 : 0); i > 0; i--) {
      let mutated: Uint8Array, mutation: string;
      try {
        [mutated, mutation] = mutateSafetensors(d, bytes);
      } catch {
        break; // a second mutation that does not apply to what the first one left
      }
      mutations.push(mutation);
      bytes = mutated;
      if (mutated.length < 8 || !isParsable(mutated)) break; // no second mutation on junk
    }
    await Deno.writeFile(join(dir, "model.safetensors"), bytes);
    await Deno.writeTextFile(join(dir, "config.json"), source.configText);
    return await judge(dir, async () => {
      const { config, weights } = await loadCheckpoint(dir);
      const bad = await forwardCheck(ctx.gpu, config, weights);
      return bad ? { outcome: "non-finite", detail: bad } : { outcome: "loaded", detail: "" };
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** True when the bytes have a header that JSON-parses (so another mutation can be applied). */
function isParsable(bytes: Uint8Array): boolean {
  try {
    const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
    if (n > BigInt(bytes.length - 8)) return false;
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + Number(n))));
    return typeof header === "object" && header !== null &&
      Object.values(header).some((e) =>
        Array.isArray((e as { data_offsets?: unknown })?.data_offsets)
      );
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Configs

const CONFIG_FIELDS = [
  "n_embd",
  "n_head",
  "n_layer",
  "n_positions",
  "vocab_size",
  "n_inner",
  "layer_norm_epsilon",
  "bos_token_id",
  "eos_token_id",
  "activation_function",
  "tie_word_embeddings",
  "model_type",
  "scale_attn_weights",
  "scale_attn_by_inverse_layer_idx",
  "add_cross_attention",
  "unknown_field",
];

/** Values near the edges of what a field allows, so that some mutated configs are accepted. */
const PLAUSIBLE: Record<string, readonly number[]> = {
  n_embd: [4, 8, 12, 16, 20, 24, 32, 48, 64, 96],
  n_head: [1, 2, 3, 4, 5, 6, 8, 12],
  n_layer: [1, 2, 3],
  n_positions: [1, 2, 3, 4, 16, 17, 100],
  vocab_size: [1, 2, 63, 64, 65, 1000],
  n_inner: [4, 8, 12, 60, 64, 100],
  layer_norm_epsilon: [1e-12, 1e-6, 1e-5, 0.5, 1, 1.17549435e-38],
  bos_token_id: [0, 1, 62, 63, 64],
  eos_token_id: [0, 1, 62, 63, 64],
};

/** Throws unless an accepted config obeys every documented bound. */
function checkConfig(c: GPT2Config): string {
  const L = CONFIG_LIMITS;
  const ints: [string, number, number][] = [
    ["vocabSize", c.vocabSize, L.vocabSize],
    ["nPositions", c.nPositions, L.nPositions],
    ["nEmbd", c.nEmbd, L.nEmbd],
    ["nLayer", c.nLayer, L.nLayer],
    ["nInner", c.nInner, L.nInner],
    ["nHead", c.nHead, c.nEmbd],
  ];
  for (const [name, value, max] of ints) {
    if (!Number.isInteger(value) || value < 1 || value > max) return `${name} ${value}`;
  }
  if (c.headDim * c.nHead !== c.nEmbd || c.headDim % 4 !== 0) return `headDim ${c.headDim}`;
  for (const id of [c.bosTokenId, c.eosTokenId]) {
    if (id === null) continue; // none, as HF's None
    if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) return `token id ${id}`;
  }
  const eps = c.layerNormEpsilon;
  if (!(eps >= L.epsilon[0] && eps <= L.epsilon[1])) return `epsilon ${eps}`;
  for (const values of [3 * c.nEmbd * c.nEmbd, c.nEmbd * c.nInner, c.nPositions * c.nEmbd]) {
    if (values * 4 > L.matrixBytes) return `a matrix of ${values} values`;
  }
  return "";
}

/** A config with random fields replaced, through the API or a config.json file. */
async function configCase(ctx: FuzzContext, d: Draw, index: number, mutations: string[]) {
  const viaFile = d.chance(0.5);
  const json: Record<string, unknown> = JSON.parse(ctx.base.configText);
  for (let i = 1 + d.int(3); i > 0; i--) {
    const field = d.pick(CONFIG_FIELDS);
    if (d.chance(0.15)) {
      delete json[field];
      mutations.push(`delete ${field}`);
      continue;
    }
    const plausible = PLAUSIBLE[field];
    const [label, value] = plausible && d.chance(0.5)
      ? [String(d.pick(plausible)), d.pick(plausible)]
      : oddValue(d, !viaFile);
    json[field] = value;
    mutations.push(`${field}=${label}`);
  }
  if (!viaFile) {
    if (d.chance(0.05)) {
      json.self = json; // circular
      mutations.push("circular");
    }
    const source = `api-${index}`;
    return await judge(source, async () => {
      for (const [k, v] of Object.entries(json)) json[k] = materialize(v);
      const config = parseConfig(d.chance(0.03) ? d.pick([null, 42, "x", [json]]) : json, source);
      return await acceptedConfig(ctx, config, d);
    });
  }
  const path = join(ctx.dir, `config-${index}.json`);
  let text = jsonText(json);
  const textual = d.int(10);
  if (textual === 0) {
    text = text.slice(0, d.int(text.length));
    mutations.push("truncated");
  } else if (textual === 1) {
    text = "\ufeff" + text;
    mutations.push("BOM");
  } else if (textual === 2) {
    text = text + " ".repeat(2 ** 20);
    mutations.push("over 1 MiB");
  }
  await Deno.writeTextFile(path, text);
  try {
    return await judge(path, async () => {
      return await acceptedConfig(ctx, await loadConfig(path), d);
    });
  } finally {
    await Deno.remove(path);
  }
}

/** Judges an accepted config: its bounds, and for a small one a forward on random weights. */
async function acceptedConfig(ctx: FuzzContext, config: GPT2Config, d: Draw) {
  const wrong = checkConfig(config);
  if (wrong) return { outcome: "wrong" as const, detail: `accepted: ${wrong}` };
  const params = config.vocabSize * config.nEmbd * 2 + config.nPositions * config.nEmbd +
    config.nLayer * (4 * config.nEmbd * config.nEmbd + 2 * config.nEmbd * config.nInner);
  const cacheValues = 2 * config.nLayer * config.nPositions * config.nEmbd;
  if (params <= MAX_RUN_PARAMETERS && cacheValues <= MAX_RUN_PARAMETERS && d.chance(0.5)) {
    const bad = await forwardCheck(ctx.gpu, config, randomWeights(config, 1));
    if (bad) return { outcome: "non-finite" as const, detail: bad };
  }
  return { outcome: "loaded" as const, detail: "" };
}

// ---------------------------------------------------------------------------------------------
// Snapshots

/** A snapshot of the base model, mutated in its bytes, metadata or values. */
async function snapshotCase(ctx: FuzzContext, d: Draw, index: number, mutations: string[]) {
  const path = join(ctx.dir, `snapshot-${index}.safetensors`);
  let bytes = ctx.snapshot;
  const how = d.int(3);
  if (how === 0) {
    const [mutated, mutation] = mutateSafetensors(d, bytes);
    bytes = mutated;
    mutations.push(mutation);
  } else {
    const file = SafetensorsFile.parse(bytes, "snapshot");
    const tensors: Record<string, TensorData> = {};
    for (const [name, info] of file.tensors) {
      const data = info.dtype === "I32" ? file.i32(name).slice() : file.f32(name).slice();
      tensors[name] = { dtype: info.dtype, shape: [...info.shape], data };
    }
    const meta = { ...file.metadata };
    if (how === 1) {
      const key = d.pick([...Object.keys(meta), "extra"]);
      const value = d.pick([
        "",
        "0",
        "1",
        "5",
        "16",
        "17",
        "-1",
        "1e2",
        "x".repeat(1e4),
        "sha256:00",
        meta[key] ?? "1",
      ]);
      if (d.chance(0.2)) delete meta[key];
      else meta[key] = value;
      mutations.push(`metadata ${key}=${value.slice(0, 12)}`);
    } else {
      const names = Object.keys(tensors);
      const name = d.pick(names);
      const data = tensors[name].data;
      const at = d.int(Math.max(1, data.length));
      const value = name === "token_ids"
        ? d.pick([-1, 64, 65, 2 ** 31 - 1, 7])
        : d.pick([NaN, Infinity, -Infinity, 0.5, 1e30]);
      if (data.length > 0) (data as Float32Array | Int32Array)[at] = value;
      mutations.push(`${name}[${at}]=${value}`);
      if (d.chance(0.7)) {
        meta.data_sha256 = await snapshotChecksum(tensors);
        mutations.push("checksum resealed");
      }
    }
    bytes = encodeSafetensors(tensors, meta);
  }
  await Deno.writeFile(path, bytes);
  try {
    return await judge(path, async () => {
      const restored = await loadSnapshot(path, ctx.model);
      try {
        const file = SafetensorsFile.parse(bytes, "restored");
        const layers = await restored.cache.read();
        for (let i = 0; i < layers.length; i++) {
          for (const [kind, got] of [["key", layers[i].k], ["value", layers[i].v]] as const) {
            const want = file.f32(`layer.${i}.${kind}`);
            if (got.length !== want.length || got.some((x, j) => !Object.is(x, want[j]))) {
              return { outcome: "wrong", detail: `layer.${i}.${kind} restored differently` };
            }
            if (got.some((x) => !Number.isFinite(x))) {
              return { outcome: "non-finite", detail: `layer.${i}.${kind} holds non-finite K/V` };
            }
          }
        }
        return { outcome: "loaded", detail: "" };
      } finally {
        restored.cache.destroy();
      }
    });
  } finally {
    await Deno.remove(path);
  }
}

/** The documented checksum of a snapshot's tensors (see model/snapshot.ts). */
async function snapshotChecksum(tensors: Record<string, TensorData>): Promise<string> {
  const names = ["token_ids"];
  for (let i = 0; `layer.${i}.key` in tensors; i++) {
    names.push(`layer.${i}.key`, `layer.${i}.value`);
  }
  const digests = await Promise.all(
    names.map((n) => crypto.subtle.digest("SHA-256", tensors[n].data as Uint8Array<ArrayBuffer>)),
  );
  const all = new Uint8Array(32 * digests.length);
  digests.forEach((digest, i) => all.set(new Uint8Array(digest), 32 * i));
  const hex = Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", all)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  return `sha256:${hex}`;
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

const FRAGMENTS = [
  "the",
  " cache",
  "'s",
  " don't",
  "Ünïcödé",
  " 漢字",
  "😀",
  "👩‍👩‍👧",
  "123",
  ".",
  " ",
  "  ",
  "\n",
  "\t",
  "\r\n",
  "\ufeff",
  "\u00a0",
  "\u2028",
  "\ud800",
  "\udfff",
  "<|endoftext|>",
  "<|endof",
  "text|>",
  "\u0000",
  "\u0301",
];

/** Random text (sometimes with a long run) through encode, decode and TextStream. */
function tokenizerCase(_ctx: FuzzContext, d: Draw, _index: number, mutations: string[]) {
  const tok = gpt2Tokenizer();
  if (d.chance(0.2)) { // decode of odd ids
    const pool: [string, unknown][] = [
      ["0", 0],
      ["50256", 50256],
      ["50257", 50257],
      ["-1", -1],
      ["1.5", 1.5],
      ["NaN", NaN],
      ['"1"', "1"],
      ["null", null],
      ["1n", 1n],
      ["Symbol", Symbol("s")],
      ["{}", {}],
    ];
    const picked = Array.from({ length: 1 + d.int(4) }, () => d.pick(pool));
    const ids: unknown = d.chance(0.1)
      ? d.pick([null, 42, "ids", { length: 1 }])
      : picked.map((p) => p[1]);
    mutations.push(
      `decode ${Array.isArray(ids) ? picked.map((p) => p[0]).join(",") : String(ids)}`,
    );
    return judge("decode:", () => {
      const text = tok.decode(ids as number[]);
      return Promise.resolve({ outcome: "loaded" as const, detail: `${text.length} chars` });
    });
  }
  let text = "";
  const parts = 1 + d.int(40);
  for (let i = 0; i < parts; i++) {
    const fragment = d.pick(FRAGMENTS);
    text += d.chance(0.05) ? fragment.repeat(1 + d.int(20_000)) : fragment;
  }
  const maxTokens = d.chance(0.3) ? d.int(200) : undefined;
  mutations.push(
    `text of ${text.length} chars${maxTokens === undefined ? "" : `, maxTokens ${maxTokens}`}`,
  );
  return judge("encode:", () => {
    let ids: number[];
    try {
      ids = tok.encode(text, { maxTokens });
    } catch (err) {
      if (!(err instanceof TooManyTokensError) || maxTokens === undefined) throw err;
      const count = tok.encode(text).length;
      if (count <= maxTokens) {
        return Promise.resolve({ outcome: "wrong" as const, detail: `${count} tokens refused` });
      }
      throw err;
    }
    if (maxTokens !== undefined && ids.length > maxTokens) {
      return Promise.resolve({ outcome: "wrong" as const, detail: `${ids.length} > maxTokens` });
    }
    const want = text.toWellFormed();
    if (tok.decode(ids) !== want) {
      return Promise.resolve({ outcome: "wrong" as const, detail: "decode(encode(text)) differs" });
    }
    const stream = new TextStream(tok);
    const streamed = ids.map((id) => stream.push(id)).join("") + stream.flush();
    if (streamed !== want) {
      return Promise.resolve({ outcome: "wrong" as const, detail: "TextStream differs" });
    }
    return Promise.resolve({ outcome: "loaded" as const, detail: `${ids.length} tokens` });
  });
}
