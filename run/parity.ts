/**
 * Parity against HuggingFace: runs the model through the WGSL kernels on the prompts of a
 * reference folder (config.json, weights, reference.safetensors, reference.json) and
 * compares every tensor HF recorded: no-cache logits, hidden states, block outputs, the
 * K/V cache after prefill, cached decode steps and their cache, and greedy generation.
 *
 * @module
 */
import { maxAbsDiff } from "../base/max_abs_diff.ts";
import type { Gpu } from "../kernels/gpu.ts";
import type { WeightFormat } from "../kernels/matmul.ts";
import type { KVCache } from "../model/kv_cache.ts";
import { type DecodePath, Runner, type RunnerOptions } from "./runner.ts";
import { generate, greedyOptions } from "./generate.ts";
import { SafetensorsFile } from "../io/safetensors.ts";

/** Parity tolerance: max abs diff per tensor. */
export const TOLERANCE = 1e-5;

/** One compared tensor. */
export interface ParityRow {
  tensor: string;
  shape: number[];
  /** Max abs diff for floats; number of differing ids for token ids. */
  maxAbsDiff: number;
  /** Largest |reference| value, to read the diff against. */
  maxAbsRef: number;
  kind: "float" | "ids";
  pass: boolean;
}

/** The parity result of one reference folder. */
export interface ParityReport {
  model: string;
  adapter: string;
  /** How the model's matrices were stored: the 1e-5 bound holds for f32 weights. */
  weights: WeightFormat;
  /** The decode path the model's steps took (see run/runner.ts). */
  decodePath: DecodePath;
  /** Why this model cannot take the fused decode step on this adapter, or null. */
  fusedLimit: string | null;
  rows: ParityRow[];
  /** Max abs diff over all float tensors. */
  maxAbsDiff: number;
  pass: boolean;
}

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const v of a) m = Math.max(m, Math.abs(v));
  return m;
}

/**
 * Runs the full parity check on a reference folder. With f16 weights the diffs are
 * computed the same way but only reported: each weight is rounded to f16 first.
 */
export async function runParity(
  gpu: Gpu,
  dir: string,
  options: RunnerOptions = {},
): Promise<ParityReport> {
  const model = await Runner.load(gpu, dir, options);
  const ref = await SafetensorsFile.open(`${dir}/reference.safetensors`);
  const prompts = [...ref.tensors.keys()]
    .filter((k) => k.endsWith(".input_ids"))
    .map((k) => k.slice(0, -".input_ids".length))
    .sort();
  if (prompts.length === 0) {
    throw new Error(`${dir}/reference.safetensors: no <prompt>.input_ids tensors`);
  }
  const rows: ParityRow[] = [];
  const floats = (name: string, got: Float32Array) => {
    const want = ref.f32(name);
    const d = maxAbsDiff(got, want);
    rows.push({
      tensor: name,
      shape: ref.info(name).shape,
      maxAbsDiff: d,
      maxAbsRef: maxAbs(want),
      kind: "float",
      pass: d <= TOLERANCE,
    });
  };
  const cache = model.newCache();
  try {
    for (const p of prompts) await comparePrompt(model, cache, ref, p, floats, rows);
  } finally {
    cache.destroy();
    model.destroy();
  }
  const maxDiff = Math.max(0, ...rows.filter((r) => r.kind === "float").map((r) => r.maxAbsDiff));
  return {
    model: dir,
    adapter: gpu.description,
    weights: model.weightFormat,
    decodePath: model.decodePath,
    fusedLimit: model.fusedLimit,
    rows,
    maxAbsDiff: maxDiff,
    pass: rows.every((r) => r.pass),
  };
}

async function comparePrompt(
  model: Runner,
  cache: KVCache,
  ref: SafetensorsFile,
  p: string,
  floats: (name: string, got: Float32Array) => void,
  rows: ParityRow[],
): Promise<void> {
  const { nLayer: L, nEmbd: C } = model.config;
  const ids = [...ref.i32(`${p}.input_ids`)];
  const T = ids.length;

  // One forward over the whole prompt from an empty cache: HF's use_cache=False forward.
  cache.reset();
  const full = await model.forward(ids, cache, { logits: "all", hidden: true });
  floats(`${p}.logits`, full.logits);
  const hidden = full.hidden!; // [L + 2, T, C]
  const layer = (i: number) => hidden.subarray(i * T * C, (i + 1) * T * C);
  // HF hidden_states: embeddings, blocks 0..L-2, then ln_f(last block) in place of block L-1.
  floats(`${p}.hidden_states`, concat([...range(L).map(layer), layer(L + 1)]));
  floats(`${p}.block_outputs`, concat(range(L).map((i) => layer(i + 1))));
  const present = await cache.read();
  present.forEach((kv, i) => {
    floats(`${p}.layer.${i}.present_key`, kv.k);
    floats(`${p}.layer.${i}.present_value`, kv.v);
  });

  // Cached decode: one token at a time after the prompt.
  const decodeIds = [...ref.i32(`${p}.decode_input_ids`)];
  const decodeLogits: Float32Array[] = [];
  for (const id of decodeIds) decodeLogits.push((await model.forward([id], cache)).logits);
  floats(`${p}.decode_logits`, concat(decodeLogits));
  const decoded = await cache.read();
  decoded.forEach((kv, i) => {
    floats(`${p}.layer.${i}.decode_key`, kv.k);
    floats(`${p}.layer.${i}.decode_value`, kv.v);
  });

  // Greedy generation, through the cache and by recomputing everything, must both
  // reproduce HF's generate() exactly.
  const want = [...ref.i32(`${p}.generated_ids`)];
  for (const useCache of [true, false]) {
    const got = [...ids, ...(await greedy(model, cache, ids, want.length - T, useCache))];
    const wrong = want.filter((id, i) => got[i] !== id).length;
    rows.push({
      tensor: `${p}.generated_ids${useCache ? "" : " (no cache)"}`,
      shape: [want.length],
      maxAbsDiff: wrong,
      maxAbsRef: 0,
      kind: "ids",
      pass: wrong === 0 && got.length === want.length,
    });
  }
}

async function greedy(
  model: Runner,
  cache: KVCache,
  ids: number[],
  n: number,
  useCache: boolean,
): Promise<number[]> {
  return (await generate(model, cache, ids, { ...greedyOptions(n), useCache })).ids;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
