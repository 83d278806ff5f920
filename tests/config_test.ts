import assert from "node:assert/strict";
import { join } from "node:path";
import {
  checkConfigFits,
  CONFIG_LIMITS,
  GPT2_SIZES,
  type GPT2Config,
  loadConfig,
  MAX_CONFIG_BYTES,
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
  const minimal = { vocab_size: 50257, n_positions: 16, n_embd: 8, n_layer: 1, n_head: 2 };
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
    assertRejects(
      { ...json, n_embd: 18, n_head: 3 },
      "n_embd",
      /head_dim .* 6 must be a multiple of 4/,
    );
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
    assert.throws(() => parseConfig([1, 2], "x.json"), /^TypeError: x\.json: config must be/);
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

Deno.test(
  "no upper bounds on the config: every size is bounded",
  needs("read", "write", "run"),
  async () => {
    const json = await fixtureJson();
    // The issue's values, each accepted before.
    assertRejects({ ...json, n_embd: 1e12, n_head: 1 }, "n_embd", /1\.\.8192, got 1000000000000/);
    assertRejects({ ...json, n_positions: 1e12 }, "n_positions", /1\.\.21841/);
    // Past 21,841 positions attention's softmax would loop past llvmpipe's 65,535 iterations
    // (found by the fuzzer: n_positions 50256 loaded, then its first prefill threw).
    assertRejects({ ...json, n_positions: 21842 }, "n_positions", /1\.\.21841, got 21842/);
    assertRejects({ ...json, vocab_size: 2 ** 53 - 1 }, "vocab_size", /1\.\.1048576/);
    assertRejects({ ...json, n_layer: 1e9 }, "n_layer", /1\.\.1024/);
    assertRejects({ ...json, n_inner: 2 ** 20 }, "n_inner", /1\.\.65536/);
    assertRejects({ ...json, layer_norm_epsilon: 1e300 }, "layer_norm_epsilon", /normal f32/);
    assertRejects({ ...json, layer_norm_epsilon: 5e-324 }, "layer_norm_epsilon", /normal f32/);
    assertRejects({ ...json, layer_norm_epsilon: NaN }, "layer_norm_epsilon");
    assertRejects({ ...json, n_head: 128 }, "n_head", /1\.\.64/);
    // Sizes within every bound whose matrices would not fit a 2 GiB buffer.
    assertRejects({ ...json, n_embd: 8192, n_head: 16, n_inner: 65536 }, "n_inner", /2 GiB/);
    // The bounds themselves are accepted.
    const edge = parseConfig({
      ...json,
      vocab_size: CONFIG_LIMITS.vocabSize,
      n_layer: CONFIG_LIMITS.nLayer,
      layer_norm_epsilon: CONFIG_LIMITS.epsilon[0],
    }, "edge");
    assert.equal(edge.vocabSize, 2 ** 20);
    assert.equal(parseConfig({ ...json, layer_norm_epsilon: 1 }, "one").layerNormEpsilon, 1);
  },
);

Deno.test(
  "bos/eos ids must lie in the vocabulary, including the default 50256 on a small one",
  needs("read", "write", "run"),
  async () => {
    const json = await fixtureJson();
    const small: Record<string, unknown> = { ...json, vocab_size: 2000 };
    delete small.bos_token_id;
    delete small.eos_token_id;
    assertRejects(small, "bos_token_id", /absent, and its default 50256 is outside the vocabulary/);
    assertRejects({ ...small, bos_token_id: 1999 }, "eos_token_id", /default 50256/);
    assertRejects(
      { ...small, bos_token_id: 1999, eos_token_id: 2000 },
      "eos_token_id",
      /0\.\.1999/,
    );
    assertRejects({ ...json, eos_token_id: 50257 }, "eos_token_id", /0\.\.50256/);
    assertRejects({ ...json, bos_token_id: -1 }, "bos_token_id");
    const ok = parseConfig(
      { ...small, bos_token_id: 0, eos_token_id: null, vocab_size: 60000 },
      "ok",
    );
    // null is HF's None: no such token (a char vocabulary has no end of text).
    assert.deepEqual([ok.bosTokenId, ok.eosTokenId], [0, null]);
  },
);

Deno.test(
  "head_dim (and n_inner) not a multiple of 4 is rejected at parse time, naming the file and fields",
  needs("read", "write", "run"),
  async () => {
    const json = await fixtureJson();
    // The issue's case: n_embd 48, n_head 8 (head_dim 6) passed parseConfig before.
    assert.throws(
      () => parseConfig({ ...json, n_embd: 48, n_head: 8 }, "dir/config.json"),
      /^Error: dir\/config\.json: head_dim = "n_embd" \/ "n_head" = 48 \/ 8 = 6 must be a multiple of 4/,
    );
    assert.equal(parseConfig({ ...json, n_embd: 48, n_head: 12 }, "ok").headDim, 4);
    // Found by the fuzzer: n_inner 63 passed, then the MLP's c_proj failed at the first forward.
    assertRejects({ ...json, n_inner: 63 }, "n_inner", /63\) must be a multiple of 4/);
    assert.equal(parseConfig({ ...json, n_inner: 68 }, "ok").nInner, 68);
  },
);

Deno.test(
  "API-only inputs: a BigInt or a circular config gives a clear TypeError",
  needs("read", "write", "run"),
  async () => {
    const json = await fixtureJson();
    assert.throws(
      () => parseConfig({ ...json, n_embd: 64n }, "api"),
      /^TypeError: api: "n_embd" must be a number, got a BigInt \(64n\)/,
    );
    assert.throws(
      () => parseConfig({ ...json, bos_token_id: 1n }, "api"),
      /^TypeError: api: "bos_token_id" must be a number or null, got a BigInt/,
    );
    const circular: Record<string, unknown> = { ...json };
    circular.n_layer = circular;
    const tight = { n_layer: { n_layer: null } as Record<string, unknown> };
    tight.n_layer.n_layer = tight.n_layer;
    assert.throws(
      () => parseConfig({ ...json, ...tight }, "api"),
      /got an object \{"n_layer":\[circular\]\}/,
    );
    assert.throws(
      () => parseConfig(circular, "api"),
      (err: unknown) => {
        assert.ok(err instanceof TypeError);
        assert.match(err.message, /^api: "n_layer" must be a number, got an object \{/);
        assert.ok(err.message.length <= 300, err.message);
        return true;
      },
    );
    // A circular object elsewhere (an ignored field) does not matter.
    const ignored: Record<string, unknown> = { ...json };
    ignored.extra = ignored;
    assert.equal(parseConfig(ignored, "api").nEmbd, 64);
    for (const bad of [null, 42, "config", [json], Symbol("s"), 1n]) {
      assert.throws(() => parseConfig(bad, "api"), /^TypeError: api: config must be a JSON object/);
    }
  },
);

Deno.test(
  "config values in messages are cut to ~80 characters",
  needs("read", "write", "run"),
  async () => {
    const json = await fixtureJson();
    let nested: unknown = 1;
    for (let i = 0; i < 1e5; i++) nested = [nested];
    for (
      const [field, value] of [
        ["n_embd", nested],
        ["n_embd", "6".repeat(1e6)],
        ["vocab_size", new Array(2e5).fill(7)],
        ["model_type", "x".repeat(1e5)],
        ["activation_function", "y".repeat(1e5)],
        ["layer_norm_epsilon", { deep: nested }],
        ["tie_word_embeddings", "z".repeat(1e5)],
      ] as const
    ) {
      assert.throws(() => parseConfig({ ...json, [field]: value }, "c.json"), (err: Error) => {
        assert.ok(err.message.startsWith(`c.json: "${field}"`), err.message.slice(0, 300));
        assert.ok(err.message.length <= 300, `${field}: ${err.message.length} chars`);
        return true;
      });
    }
  },
);

Deno.test(
  "config.json is read only up to 1 MiB: /dev/zero and a big file fail fast",
  needs("read", "write", "run"),
  async () => {
    const t0 = performance.now();
    await assert.rejects(
      loadConfig("/dev/zero"),
      /^Error: \/dev\/zero: cannot read config: not a regular file/,
    );
    const dir = await Deno.makeTempDir();
    try {
      const big = join(dir, "config.json");
      {
        using file = await Deno.open(big, { write: true, create: true });
        await file.truncate(5 * 2 ** 30); // sparse: 5 GiB of zeros
      }
      await assert.rejects(loadConfig(big), /5368709120 bytes, more than the 1048576/);
      const justOver = join(dir, "over.json");
      await Deno.writeTextFile(justOver, " ".repeat(MAX_CONFIG_BYTES) + "{}");
      await assert.rejects(loadConfig(justOver), /more than the 1048576/);
      // A config at the limit (padding included) still loads.
      const padded = join(dir, "padded.json");
      const text = await Deno.readTextFile(FIXTURE);
      await Deno.writeTextFile(padded, text + " ".repeat(MAX_CONFIG_BYTES - text.length));
      assert.equal((await loadConfig(padded)).nEmbd, 64);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    assert.ok(performance.now() - t0 < 1000);
  },
);

Deno.test("checkConfigFits names the fields of a buffer over the adapter's binding", () => {
  const xl = GPT2_SIZES["gpt2-xl"];
  checkConfigFits(xl, 128 * 2 ** 20, "xl"); // 41 MB c_fc fits llvmpipe's 128 MiB
  assert.throws(
    () => checkConfigFits(xl, 32 * 2 ** 20, "xl"),
    /^Error: xl: c_fc \("n_embd" × "n_inner" = 1600 × 6400\) f32 values \(39\.1 MiB\) exceed this adapter's largest binding \(32 MiB\)/,
  );
  assert.throws(
    () => checkConfigFits({ ...xl, nPositions: 65536 }, 128 * 2 ** 20, "long"),
    /"n_positions" × "n_embd" = 65536 × 1600/,
  );
});
