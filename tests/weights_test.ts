import assert from "node:assert/strict";
import { join } from "node:path";
import { type GPT2Config, loadConfig, parameterCount } from "../model/config.ts";
import {
  encodeSafetensors,
  SafetensorsFile,
  type TensorData,
  writeSafetensors,
} from "../io/safetensors.ts";
import {
  type GPT2Weights,
  loadCheckpoint,
  randomWeights,
  weightsFromSafetensors,
} from "../model/weights.ts";
import { needs } from "./helpers.ts";

const FIXTURE_DIR = new URL("../data/tiny-gpt2", import.meta.url).pathname;
const FIXTURE = join(FIXTURE_DIR, "model.safetensors");

/** Every tensor of a file as F32 TensorData, renamed by `rename` (null drops it). */
function copyTensors(
  file: SafetensorsFile,
  rename: (name: string) => string | null = (name) => name,
): Record<string, TensorData> {
  const out: Record<string, TensorData> = {};
  for (const [name, info] of file.tensors) {
    const renamed = rename(name);
    if (renamed !== null) out[renamed] = { dtype: "F32", shape: info.shape, data: file.f32(name) };
  }
  return out;
}

/** Writes `tensors` and the fixture config into a fresh checkpoint directory. */
async function writeCheckpoint(
  dir: string,
  tensors: Record<string, TensorData>,
  fileName = "model.safetensors",
  config?: Record<string, unknown>,
): Promise<string> {
  const json = config ?? JSON.parse(await Deno.readTextFile(join(FIXTURE_DIR, "config.json")));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(json));
  const path = join(dir, fileName);
  await writeSafetensors(path, tensors, { format: "pt" });
  return path;
}

/** Flattens weights into named arrays, in a fixed order, for comparisons. */
function flatten(w: GPT2Weights): [string, Float32Array | null][] {
  const out: [string, Float32Array | null][] = [["wte", w.wte], ["wpe", w.wpe]];
  w.blocks.forEach((b, i) => {
    out.push(
      [`${i}.ln1.w`, b.ln1.weight],
      [`${i}.ln1.b`, b.ln1.bias],
      [`${i}.cAttn.w`, b.attn.cAttn.weight],
      [`${i}.cAttn.b`, b.attn.cAttn.bias],
      [`${i}.attnProj.w`, b.attn.cProj.weight],
      [`${i}.attnProj.b`, b.attn.cProj.bias],
      [`${i}.ln2.w`, b.ln2.weight],
      [`${i}.ln2.b`, b.ln2.bias],
      [`${i}.cFc.w`, b.mlp.cFc.weight],
      [`${i}.cFc.b`, b.mlp.cFc.bias],
      [`${i}.mlpProj.w`, b.mlp.cProj.weight],
      [`${i}.mlpProj.b`, b.mlp.cProj.bias],
    );
  });
  out.push(["lnF.w", w.lnF.weight], ["lnF.b", w.lnF.bias], ["lmHead", w.lmHead]);
  return out;
}

/** Asserts that `weights` has the sizes `config` calls for. */
function assertSizes(w: GPT2Weights, c: GPT2Config): void {
  const C = c.nEmbd;
  assert.equal(w.wte.length, c.vocabSize * C);
  assert.equal(w.wpe.length, c.nPositions * C);
  assert.equal(w.blocks.length, c.nLayer);
  for (const b of w.blocks) {
    for (const ln of [b.ln1, b.ln2]) assert.deepEqual([ln.weight.length, ln.bias.length], [C, C]);
    const layers = [
      [b.attn.cAttn, C, 3 * C],
      [b.attn.cProj, C, C],
      [b.mlp.cFc, C, c.nInner],
      [b.mlp.cProj, c.nInner, C],
    ] as const;
    for (const [linear, inF, outF] of layers) {
      assert.deepEqual([linear.inFeatures, linear.outFeatures], [inF, outF]);
      assert.equal(linear.weight.length, inF * outF);
      assert.equal(linear.bias.length, outF);
    }
  }
  assert.deepEqual([w.lnF.weight.length, w.lnF.bias.length], [C, C]);
  const total = flatten(w).reduce((n, [, a]) => n + (a?.length ?? 0), 0);
  assert.equal(total, parameterCount(c));
}

/** Runs `body` with a temporary directory that is removed afterwards. */
async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("loadCheckpoint loads the tiny-gpt2 fixture", needs("read"), async () => {
  const { config, weights, source } = await loadCheckpoint(FIXTURE_DIR);
  assert.equal(source, FIXTURE);
  assert.equal(weights.blocks.length, 2);
  assert.equal(weights.lmHead, null);
  assertSizes(weights, config);
  const file = await SafetensorsFile.open(FIXTURE);
  assert.deepEqual(weights.wte.subarray(0, 64), file.f32("transformer.wte.weight").subarray(0, 64));
  assert.deepEqual(weights.wpe, file.f32("transformer.wpe.weight"));
  const b1 = weights.blocks[1];
  assert.deepEqual(b1.attn.cAttn.weight, file.f32("transformer.h.1.attn.c_attn.weight"));
  assert.deepEqual(b1.mlp.cProj.bias, file.f32("transformer.h.1.mlp.c_proj.bias"));
  assert.deepEqual(weights.lnF.weight, file.f32("transformer.ln_f.weight"));
  // Not swapped: ln_2 weights are near 1 and differ from ln_1's.
  assert.notDeepEqual(b1.ln1.weight, b1.ln2.weight);
  assert.ok(b1.ln2.weight.every((x) => Math.abs(x - 1) <= 0.3));
});

Deno.test(
  "the hub's bare key layout with attention buffers loads identically",
  needs("read"),
  async () => {
    const file = await SafetensorsFile.open(FIXTURE);
    const config = await loadConfig(join(FIXTURE_DIR, "config.json"));
    const reference = weightsFromSafetensors(file, config);
    const tensors = copyTensors(file, (name) => name.replace(/^transformer\./, ""));
    const P = config.nPositions;
    for (const i of [0, 1]) {
      tensors[`h.${i}.attn.bias`] = {
        dtype: "U8",
        shape: [1, 1, P, P],
        data: new Uint8Array(P * P),
      };
      tensors[`h.${i}.attn.masked_bias`] = {
        dtype: "F32",
        shape: [],
        data: new Float32Array([-1e4]),
      };
    }
    assert.ok("h.0.mlp.c_fc.weight" in tensors && "wte.weight" in tensors);
    await withTempDir(async (dir) => {
      await writeCheckpoint(dir, tensors, "pytorch_model.safetensors");
      const loaded = await loadCheckpoint(dir);
      assert.equal(loaded.source, join(dir, "pytorch_model.safetensors"));
      assert.deepEqual(flatten(loaded.weights), flatten(reference));
    });
  },
);

Deno.test(
  "a missing or misshapen tensor is an error naming the file and the key",
  needs("read"),
  async () => {
    const file = await SafetensorsFile.open(FIXTURE);
    const config = await loadConfig(join(FIXTURE_DIR, "config.json"));
    const missingKey = "transformer.h.1.mlp.c_fc.bias";
    const missing = SafetensorsFile.parse(
      encodeSafetensors(copyTensors(file, (name) => name === missingKey ? null : name)),
      "missing.safetensors",
    );
    assert.throws(
      () => weightsFromSafetensors(missing, config),
      /^Error: missing\.safetensors: missing tensor "transformer\.h\.1\.mlp\.c_fc\.bias".*\[256\]/,
    );
    await withTempDir(async (dir) => {
      const tensors = copyTensors(file);
      const key = "transformer.h.0.attn.c_attn.weight";
      tensors[key] = { dtype: "F32", shape: [192, 64], data: tensors[key].data }; // transposed
      const path = await writeCheckpoint(dir, tensors);
      await assert.rejects(loadCheckpoint(dir), (err: Error) => {
        assert.ok(err.message.startsWith(path), err.message);
        assert.match(err.message, /"transformer\.h\.0\.attn\.c_attn\.weight"/);
        assert.match(err.message, /\[192,64\].*expected \[64,192\]/);
        return true;
      });
    });
  },
);

Deno.test("unknown tensors are rejected by name", needs("read"), async () => {
  const file = await SafetensorsFile.open(FIXTURE);
  const config = await loadConfig(join(FIXTURE_DIR, "config.json"));
  const tensors = copyTensors(file);
  tensors["transformer.h.2.ln_1.weight"] = tensors["transformer.h.1.ln_1.weight"];
  const extra = SafetensorsFile.parse(encodeSafetensors(tensors), "extra.safetensors");
  assert.throws(
    () => weightsFromSafetensors(extra, config),
    /^Error: extra\.safetensors: unexpected tensors "transformer\.h\.2\.ln_1\.weight"/,
  );
  // A config with fewer layers than the file is caught the same way.
  assert.throws(
    () => weightsFromSafetensors(file, { ...config, nLayer: 1 }),
    /unexpected tensors "transformer\.h\.1\./,
  );
});

Deno.test(
  "lm_head.weight is used only when the config unties it, as in HF",
  needs("read"),
  async () => {
    const file = await SafetensorsFile.open(FIXTURE);
    const config = await loadConfig(join(FIXTURE_DIR, "config.json"));
    const wte = file.f32("transformer.wte.weight");
    const withHead = (head: Float32Array) => {
      const tensors = copyTensors(file);
      tensors["lm_head.weight"] = { dtype: "F32", shape: [50257, 64], data: head };
      return SafetensorsFile.parse(encodeSafetensors(tensors), "head.safetensors");
    };
    // Tied config: the head is wte, whatever lm_head.weight holds (HF ties after loading).
    const different = wte.map((x) => -x);
    assert.equal(weightsFromSafetensors(withHead(wte.slice()), config).lmHead, null);
    assert.equal(weightsFromSafetensors(withHead(different), config).lmHead, null);
    // Untied config: the stored head is used, even when it equals wte.
    const untied = { ...config, tieWordEmbeddings: false };
    const kept = weightsFromSafetensors(withHead(wte.slice()), untied).lmHead;
    assert.ok(kept !== null && sameValues(kept, wte));
    const own = weightsFromSafetensors(withHead(different), untied).lmHead;
    assert.ok(own !== null && sameValues(own, different));
    // Untied without a head is an error naming the tensor.
    assert.throws(
      () => weightsFromSafetensors(file, untied),
      /tie_word_embeddings is false.*lm_head/,
    );
    // A misshapen head is an error naming it.
    const tensors = copyTensors(file);
    tensors["lm_head.weight"] = { dtype: "F32", shape: [64, 50257], data: wte };
    const bad = SafetensorsFile.parse(encodeSafetensors(tensors), "bad-head.safetensors");
    assert.throws(() => weightsFromSafetensors(bad, config), /"lm_head\.weight" has shape/);
  },
);

Deno.test("F16 checkpoints are converted to float32", needs("read"), async () => {
  const file = await SafetensorsFile.open(FIXTURE);
  const config = await loadConfig(join(FIXTURE_DIR, "config.json"));
  const tensors: Record<string, TensorData> = {};
  for (const [name, info] of file.tensors) {
    const values = new Float16Array(file.f32(name));
    tensors[name] = { dtype: "F16", shape: info.shape, data: new Uint16Array(values.buffer) };
  }
  const half = SafetensorsFile.parse(encodeSafetensors(tensors), "half.safetensors");
  const weights = weightsFromSafetensors(half, config);
  const expected = Float32Array.from(new Float16Array(file.f32("transformer.h.0.ln_1.bias")));
  assert.deepEqual(weights.blocks[0].ln1.bias, expected);
  assertSizes(weights, config);
});

Deno.test(
  "loadCheckpoint errors name the directory when no weights file exists",
  needs("read", "write"),
  async () => {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(join(dir, "config.json"), "{}");
      await assert.rejects(loadCheckpoint(dir), (err: Error) => err.message.startsWith(dir));
      const json = JSON.parse(await Deno.readTextFile(join(FIXTURE_DIR, "config.json")));
      await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(json));
      await Deno.writeFile(join(dir, "reference.safetensors"), new Uint8Array(16));
      await assert.rejects(loadCheckpoint(dir), (err: Error) => {
        assert.ok(err.message.startsWith(`${dir}: no .safetensors`), err.message);
        return true;
      });
    });
  },
);

Deno.test("randomWeights is deterministic by seed and sized by the config", () => {
  const config: GPT2Config = {
    vocabSize: 1000,
    nPositions: 32,
    nEmbd: 48,
    nLayer: 3,
    nHead: 4,
    nInner: 96,
    headDim: 12,
    layerNormEpsilon: 1e-5,
    activation: "gelu_new",
    tieWordEmbeddings: true,
    bosTokenId: 0,
    eosTokenId: 0,
  };
  const a = randomWeights(config, 7);
  const b = randomWeights(config, 7);
  const c = randomWeights(config, 8);
  assertSizes(a, config);
  assert.equal(a.lmHead, null);
  assert.deepEqual(flatten(a), flatten(b));
  for (const [[name, x], [, y]] of flatten(a).map((e, i) => [e, flatten(c)[i]] as const)) {
    if (x !== null && y !== null) assert.notDeepEqual(x, y, `${name} same for seeds 7 and 8`);
  }
  // Magnitudes follow the documented scheme.
  const std = (x: Float32Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
  assert.ok(Math.abs(std(a.wte) * Math.sqrt(48) - 1) < 0.03, `wte std ${std(a.wte)}`);
  assert.ok(Math.abs(std(a.blocks[0].mlp.cProj.weight) * Math.sqrt(96) - 1) < 0.05);
  for (const block of a.blocks) {
    assert.ok(block.ln1.weight.every((x) => x >= 0.9 && x <= 1.1));
    assert.ok(block.attn.cAttn.bias.every((x) => Math.abs(x) >= 0.02 && Math.abs(x) <= 0.1));
  }
  const untied = randomWeights({ ...config, tieWordEmbeddings: false }, 7);
  assert.equal(untied.lmHead?.length, 1000 * 48);
  assertSizes(untied, { ...config, tieWordEmbeddings: false });
});

// Compares large arrays without building a diff of millions of elements.
function sameValues(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

Deno.test(
  "NaN/Inf in a weight loads silently: refused at load, naming the tensor and index",
  needs("read", "write", "run"),
  async () => {
    const file = await SafetensorsFile.open(FIXTURE);
    const config = await loadConfig(join(FIXTURE_DIR, "config.json"));
    for (
      const [name, index, value, where] of [
        ["transformer.h.1.mlp.c_fc.weight", 300, NaN, "element 300 \\(\\[1,44\\]\\) is NaN"],
        [
          "transformer.wte.weight",
          64 * 50256 + 3,
          Infinity,
          "element 3216387 \\(\\[50256,3\\]\\) is Infinity",
        ],
        ["transformer.ln_f.bias", 5, -Infinity, "element 5 is -Infinity"],
      ] as const
    ) {
      const tensors = copyTensors(file);
      const data = (tensors[name].data as Float32Array).slice();
      data[index] = value;
      data[index + 1] = NaN; // only the first bad index is named
      tensors[name] = { ...tensors[name], data };
      const bad = SafetensorsFile.parse(encodeSafetensors(tensors), "bad.safetensors");
      assert.throws(
        () => weightsFromSafetensors(bad, config),
        new RegExp(`^SafetensorsError: bad\\.safetensors: tensor "${name}": ${where}`),
      );
    }
    // A non-finite lm_head that a tied config ignores (as HF does) is not read.
    const tensors = copyTensors(file);
    tensors["lm_head.weight"] = {
      dtype: "F32",
      shape: [50257, 64],
      data: new Float32Array(50257 * 64).fill(NaN),
    };
    const tied = SafetensorsFile.parse(encodeSafetensors(tensors), "tied.safetensors");
    assert.equal(weightsFromSafetensors(tied, config).lmHead, null);
  },
);

Deno.test(
  "a symlinked weights file is found: a folder laid out like the HF hub cache",
  needs("read", "write", "run"),
  async () => {
    await withTempDir(async (hub) => {
      // models--gpt2/snapshots/<rev>/model.safetensors -> ../../blobs/<sha256>, as huggingface_hub
      // lays it out; config.json likewise.
      const repo = join(hub, "models--gpt2");
      const rev = "607a30d783dfa663caf39e06633721c8d4cfcd7e";
      const snapshot = join(repo, "snapshots", rev);
      await Deno.mkdir(join(repo, "blobs"), { recursive: true });
      await Deno.mkdir(snapshot, { recursive: true });
      for (const name of ["model.safetensors", "config.json"]) {
        const bytes = await Deno.readFile(join(FIXTURE_DIR, name));
        const sha = Array.from(
          new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
          (b) => b.toString(16).padStart(2, "0"),
        ).join("");
        await Deno.writeFile(join(repo, "blobs", sha), bytes);
        await Deno.symlink(join("..", "..", "blobs", sha), join(snapshot, name));
      }
      const { weights, source } = await loadCheckpoint(snapshot);
      assert.equal(source, join(snapshot, "model.safetensors"));
      assert.equal(weights.blocks.length, 2);
      // A dangling link is not a weights file.
      const dangling = join(hub, "dangling");
      await Deno.mkdir(dangling);
      await Deno.copyFile(join(FIXTURE_DIR, "config.json"), join(dangling, "config.json"));
      await Deno.symlink(join(hub, "nowhere"), join(dangling, "model.safetensors"));
      await assert.rejects(loadCheckpoint(dangling), /no \.safetensors weights file/);
    });
  },
);

Deno.test(
  "weights or config pointing at /dev/zero fail fast",
  needs("read", "write", "run"),
  async () => {
    await withTempDir(async (dir) => {
      await Deno.symlink("/dev/zero", join(dir, "config.json"));
      await assert.rejects(
        loadCheckpoint(dir),
        /config\.json: cannot read config: not a regular file/,
      );
      await Deno.remove(join(dir, "config.json"));
      await Deno.copyFile(join(FIXTURE_DIR, "config.json"), join(dir, "config.json"));
      await Deno.symlink("/dev/zero", join(dir, "model.safetensors"));
      // A link to a device is not a regular file: no weights file is found at all.
      await assert.rejects(loadCheckpoint(dir), /no \.safetensors weights file/);
      await assert.rejects(
        SafetensorsFile.open(join(dir, "model.safetensors")),
        /model\.safetensors: not a regular file/,
      );
    });
  },
);
