import assert from "node:assert/strict";
import { join } from "node:path";
import {
  GPT2_SIZES,
  type GPT2Config,
  loadConfig,
  parameterCount,
  parseConfig,
} from "../model/config.ts";
import { needs } from "./helpers.ts";

const FIXTURE = new URL("../data/tiny-gpt2/config.json", import.meta.url).pathname;

/** The fixture's config.json, as a fresh mutable object. */
async function fixtureJson(): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(FIXTURE));
}

/** Asserts that parsing `json` throws an Error starting with the source and naming `field`. */
function assertRejects(json: Record<string, unknown>, field: string, extra?: RegExp): void {
  assert.throws(() => parseConfig(json, "some/config.json"), (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.ok(err.message.startsWith("some/config.json: "), err.message);
    assert.ok(err.message.includes(field), `"${field}" not in: ${err.message}`);
    if (extra) assert.match(err.message, extra);
    return true;
  });
}

Deno.test(
  "loadConfig reads the tiny-gpt2 fixture (values from its README)",
  needs("read"),
  async () => {
    const config = await loadConfig(FIXTURE);
    const expected: GPT2Config = {
      vocabSize: 50257,
      nPositions: 128,
      nEmbd: 64,
      nLayer: 2,
      nHead: 4,
      nInner: 256,
      headDim: 16,
      layerNormEpsilon: 1e-5,
      activation: "gelu_new",
      tieWordEmbeddings: true,
      bosTokenId: 50256,
      eosTokenId: 50256,
    };
    assert.deepEqual(config, expected);
  },
);

Deno.test(
  "parseConfig accepts dtype or torch_dtype, with or without n_ctx",
  needs("read"),
  async () => {
    const json = await fixtureJson();
    const reference = parseConfig(json, "a");
    assert.equal("n_ctx" in json, false);
    const legacy: Record<string, unknown> = { ...json, torch_dtype: "float16", n_ctx: 1024 };
    delete legacy.dtype;
    assert.deepEqual(parseConfig(legacy, "b"), reference); // n_positions wins over n_ctx
    assert.deepEqual(parseConfig({ ...json, dtype: "bfloat16" }, "c"), reference);
  },
);

Deno.test("parseConfig applies defaults for optional fields", () => {
  const minimal = { vocab_size: 100, n_positions: 16, n_embd: 8, n_layer: 1, n_head: 2 };
  const config = parseConfig(minimal, "m");
  assert.equal(config.nInner, 32);
  assert.equal(config.headDim, 4);
  assert.equal(config.layerNormEpsilon, 1e-5);
  assert.equal(config.activation, "gelu_new");
  assert.equal(config.tieWordEmbeddings, true);
  assert.equal(config.bosTokenId, 50256);
  assert.equal(config.eosTokenId, 50256);
  const custom = parseConfig(
    {
      ...minimal,
      n_inner: 24,
      layer_norm_epsilon: 1e-6,
      activation_function: "gelu_pytorch_tanh",
      tie_word_embeddings: false,
      bos_token_id: 1,
      eos_token_id: 2,
    },
    "m",
  );
  assert.equal(custom.nInner, 24);
  assert.equal(custom.layerNormEpsilon, 1e-6);
  assert.equal(custom.activation, "gelu_new");
  assert.equal(custom.tieWordEmbeddings, false);
  assert.equal(custom.bosTokenId, 1);
  assert.equal(custom.eosTokenId, 2);
});

Deno.test(
  "parseConfig rejects missing or non-positive sizes, naming the field",
  needs("read"),
  async () => {
    const json = await fixtureJson();
    for (const field of ["n_embd", "n_layer", "n_head", "n_positions", "vocab_size"]) {
      const missing = { ...json };
      delete missing[field];
      assertRejects(missing, field, /missing/);
      for (const bad of [0, -4, 2.5, "64", null]) assertRejects({ ...json, [field]: bad }, field);
    }
    assertRejects({ ...json, n_inner: 0 }, "n_inner");
  },
);

Deno.test(
  "parseConfig rejects unsupported architectures, naming the field",
  needs("read"),
  async () => {
    const json = await fixtureJson();
    assertRejects({ ...json, n_head: 3 }, "n_head", /divisible/);
    assertRejects({ ...json, n_embd: 18, n_head: 3 }, "n_embd", /vec4/);
    assertRejects({ ...json, model_type: "gpt_neo" }, "model_type");
    assertRejects({ ...json, scale_attn_weights: false }, "scale_attn_weights");
    assertRejects(
      { ...json, scale_attn_by_inverse_layer_idx: true },
      "scale_attn_by_inverse_layer_idx",
    );
    assertRejects({ ...json, activation_function: "gelu" }, "activation_function");
    assertRejects({ ...json, activation_function: "relu" }, "activation_function");
    for (const bad of [0, -1e-5, "1e-5", Infinity]) {
      assertRejects({ ...json, layer_norm_epsilon: bad }, "layer_norm_epsilon");
    }
    assertRejects({ ...json, tie_word_embeddings: "yes" }, "tie_word_embeddings");
    assert.throws(() => parseConfig([1, 2], "x.json"), /^Error: x\.json: /);
  },
);

Deno.test(
  "loadConfig names the path for a missing file or bad JSON",
  needs("read", "write"),
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const missing = join(dir, "nope.json");
      await assert.rejects(loadConfig(missing), (err: Error) => err.message.startsWith(missing));
      const broken = join(dir, "broken.json");
      await Deno.writeTextFile(broken, "{ not json");
      await assert.rejects(loadConfig(broken), (err: Error) => {
        assert.ok(err.message.startsWith(broken), err.message);
        assert.match(err.message, /JSON/);
        return true;
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("GPT2_SIZES match the hub configs and parameterCount matches known totals", () => {
  const shapes = Object.fromEntries(
    Object.entries(GPT2_SIZES).map(([name, c]) => [name, [c.nLayer, c.nEmbd, c.nHead]]),
  );
  assert.deepEqual(shapes, {
    "gpt2": [12, 768, 12],
    "gpt2-medium": [24, 1024, 16],
    "gpt2-large": [36, 1280, 20],
    "gpt2-xl": [48, 1600, 25],
    "distilgpt2": [6, 768, 12],
  });
  for (const c of Object.values(GPT2_SIZES)) {
    assert.equal(c.vocabSize, 50257);
    assert.equal(c.nPositions, 1024);
    assert.equal(c.nInner, 4 * c.nEmbd);
    assert.equal(c.headDim * c.nHead, c.nEmbd);
  }
  // Totals of the HF models (tied lm_head counted once).
  assert.equal(parameterCount(GPT2_SIZES["gpt2"]), 124_439_808);
  assert.equal(parameterCount(GPT2_SIZES["gpt2-medium"]), 354_823_168);
  assert.equal(parameterCount(GPT2_SIZES["gpt2-large"]), 774_030_080);
  assert.equal(parameterCount(GPT2_SIZES["gpt2-xl"]), 1_557_611_200);
  assert.equal(parameterCount(GPT2_SIZES["distilgpt2"]), 81_912_576);
  const untied = { ...GPT2_SIZES["gpt2"], tieWordEmbeddings: false };
  assert.equal(parameterCount(untied), 124_439_808 + 50257 * 768);
});

Deno.test(
  "parameterCount of the fixture matches the sum of its tensor sizes",
  needs("read"),
  async () => {
    const config = await loadConfig(FIXTURE);
    // From the README's table: 28 tensors of model.safetensors.
    const perBlock = 192 + 64 * 192 + 64 + 64 * 64 + 4 * 64 + 256 + 64 * 256 + 64 + 256 * 64;
    assert.equal(parameterCount(config), 50257 * 64 + 128 * 64 + 2 * perBlock + 2 * 64);
  },
);
