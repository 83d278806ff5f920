/**
 * What every case of the input fuzzer shares: seeded mutations of a safetensors checkpoint
 * (checkpoint.ts, with safetensors.ts's byte mutations), a config (config.ts), a KV-cache
 * snapshot (snapshot.ts) and tokenizer input (tokenizer.ts), each run through the real loader
 * and judged here; scripts/fuzz.ts picks a case's kind and runs the campaign.
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
import { Gpu } from "../../kernels/gpu.ts";
import { type GPT2Config, parseConfig } from "../../model/config.ts";
import { GPT2 } from "../../model/gpt2.ts";
import { Runner } from "../../run/runner.ts";
import { type GPT2Weights, randomWeights } from "../../model/weights.ts";
import { encodeSafetensors, type TensorData } from "../../io/safetensors.ts";
import { saveSnapshot } from "../../model/snapshot.ts";
import { Rng } from "../../base/rng.ts";

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
  model: Runner;
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
  const fixtureDir = new URL("../../data/shapes/l1-h2-e96/", import.meta.url);
  const fixture = {
    configText: await Deno.readTextFile(new URL("config.json", fixtureDir)),
    weights: await Deno.readFile(new URL("model.safetensors", fixtureDir)),
  };
  const model = new Runner(new GPT2(gpu, config, weights));
  const cache = model.newCache();
  const ids = [1, 2, 3, 4, 5];
  await model.forward(ids, cache);
  const path = join(dir, "base-snapshot.safetensors");
  await saveSnapshot(path, cache, ids, model.model);
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
export function caseRng(seed: number, index: number): Rng {
  return new Rng(seed * 1_000_003 + index);
}

/** Small helpers over an Rng. */
export class Draw {
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
export class Deep {
  constructor(readonly depth: number) {}
}

/** JSON text of `value`, with every {@link Deep} written out in full. */
export function jsonText(value: unknown): string {
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
export function materialize(value: unknown): unknown {
  return value instanceof Deep ? nested(1, value.depth) : value;
}

/** Values a field may be set to in a header entry or a config. */
export function oddValue(d: Draw, api: boolean): [string, unknown] {
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
export async function judge(
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
