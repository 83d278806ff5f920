/**
 * The checkpoint cases: a folder whose weights file (and sometimes config) is mutated, loaded
 * and, when accepted, run.
 *
 * @module
 */
import { join } from "node:path";
import { Gpu } from "../../kernels/gpu.ts";
import { type GPT2Config } from "../../model/config.ts";
import { GPT2 } from "../../model/gpt2.ts";
import { Runner } from "../../run/runner.ts";
import { KVCache } from "../../model/kv_cache.ts";
import { type GPT2Weights, loadCheckpoint } from "../../model/weights.ts";
import { Draw, type FuzzContext, judge } from "./case.ts";
import { mutateSafetensors } from "./safetensors.ts";
/** Largest model (parameters, and cache values) an accepted config is run as. */
export const MAX_RUN_PARAMETERS = 2_000_000;

/** Runs a prefill of up to 3 tokens and a decode step; describes a non-finite logit, or "". */
export async function forwardCheck(
  gpu: Gpu,
  config: GPT2Config,
  weights: GPT2Weights,
): Promise<string> {
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
  readonly model: Runner;
  readonly cache: KVCache;
  constructor(gpu: Gpu, config: GPT2Config, weights: GPT2Weights) {
    this.model = new Runner(new GPT2(gpu, config, weights));
    this.cache = this.model.newCache();
  }
  [Symbol.dispose]() {
    this.cache.destroy();
    this.model.destroy();
  }
}

/** A checkpoint folder with a mutated weights file (and sometimes a mutated config). */
export async function checkpointCase(
  ctx: FuzzContext,
  d: Draw,
  index: number,
  mutations: string[],
) {
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
