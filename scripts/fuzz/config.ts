/**
 * The config cases: a config with fields replaced, through the API or a config.json file.
 *
 * @module
 */
import { join } from "node:path";
import { CONFIG_LIMITS, type GPT2Config, loadConfig, parseConfig } from "../../model/config.ts";
import { randomWeights } from "../../model/weights.ts";
import { Draw, type FuzzContext, jsonText, judge, materialize, oddValue } from "./case.ts";
import { forwardCheck, MAX_RUN_PARAMETERS } from "./checkpoint.ts";
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
export async function configCase(ctx: FuzzContext, d: Draw, index: number, mutations: string[]) {
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
