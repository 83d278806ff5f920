/**
 * Cache snapshots on the tiny fixture: a saved cache restores bit-identical K/V into a fresh
 * preallocated or growing cache, the continuation after a restore gives bit-identical logits
 * and the same greedy tokens as without the round trip, and a snapshot of another config,
 * another model's weights, a corrupt file or wrong metadata is refused with a clear error;
 * no temporary file is left and no GPU memory leaks.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { join } from "node:path";

import { GPT2 } from "../model/gpt2.ts";
import { Runner } from "../run/runner.ts";
import { KVCache } from "../model/kv_cache.ts";
import { argmax } from "../run/sampling.ts";
import {
  SafetensorsError,
  SafetensorsFile,
  type TensorData,
  writeSafetensors,
} from "../io/safetensors.ts";
import {
  loadSnapshot,
  modelFingerprint,
  saveSnapshot,
  SNAPSHOT_FORMAT,
  snapshotChecksum,
  SnapshotError,
} from "../model/snapshot.ts";
import { randomWeights } from "../model/weights.ts";
import { granted, needs } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();
// Every test here needs the fixture: without read access (plain `deno test`) they are ignored.
const readable = granted("read");
const model = readable ? await Runner.load(gpu, "data/tiny-gpt2") : undefined!;
const reference = readable
  ? await SafetensorsFile.open("data/tiny-gpt2/reference.safetensors")
  : undefined!;
const prompt = readable ? [...reference.i32("p2.input_ids")] : []; // 108 tokens
const followUp = readable ? [...reference.i32("p2.decode_input_ids")].slice(0, 4) : [];

/** Runs `fn` with a fresh temporary folder, removed afterwards. */
async function inTempDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "kvgpt-snapshot-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Names in a folder, sorted. */
async function list(dir: string): Promise<string[]> {
  const names = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/** A cache of `model` holding the prompt, and its snapshot at `path`. */
async function prefilled(path: string): Promise<KVCache> {
  const cache = model.newCache();
  await model.forward(prompt, cache);
  await saveSnapshot(path, cache, prompt, model.model);
  return cache;
}

/** Copies a snapshot with its tensors and metadata edited. */
async function rewrite(
  from: string,
  to: string,
  edit: (tensors: Record<string, TensorData>, meta: Record<string, string>) => void,
) {
  const file = await SafetensorsFile.open(from);
  const tensors: Record<string, TensorData> = {};
  for (const [name, info] of file.tensors) {
    const data = info.dtype === "I32" ? file.i32(name).slice() : file.f32(name).slice();
    tensors[name] = { dtype: info.dtype, shape: [...info.shape], data };
  }
  const meta = { ...file.metadata };
  edit(tensors, meta);
  await writeSafetensors(to, tensors, meta);
}

/** Continues a cache: the follow-up tokens one by one (logits), then 8 greedy tokens. */
async function continueFrom(cache: KVCache) {
  const logits: Float32Array[] = [];
  for (const id of followUp) logits.push((await model.forward([id], cache)).logits);
  const greedy = await model.decodeGreedy(argmax(logits.at(-1)!), cache, 8);
  return { logits, greedy };
}

Deno.test(
  "snapshot: the file holds K/V, token ids, length and the model",
  needs("read", "write"),
  async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "s.safetensors");
      const cache = await prefilled(path);
      assert.deepEqual(await list(dir), ["s.safetensors"], "no temporary file left");
      const file = await SafetensorsFile.open(path);
      const { nLayer, nHead, headDim, nEmbd } = model.config;
      assert.deepEqual(file.metadata, {
        format: SNAPSHOT_FORMAT,
        version: "1",
        length: "108",
        n_layer: "2",
        n_head: "4",
        n_embd: "64",
        n_positions: "128",
        vocab_size: "50257",
        weights_fingerprint: await modelFingerprint(model.model),
        data_sha256: file.metadata.data_sha256,
      });
      assert.match(file.metadata.weights_fingerprint, /^sha256:[0-9a-f]{64}$/);
      assert.match(file.metadata.data_sha256, /^sha256:[0-9a-f]{64}$/);
      assert.deepEqual([...file.i32("token_ids")], prompt);
      const kv = await cache.read();
      for (let i = 0; i < nLayer; i++) {
        assert.deepEqual(file.info(`layer.${i}.key`).shape, [nHead, 108, headDim]);
        assert.deepEqual(file.f32(`layer.${i}.key`), kv[i].k);
        assert.deepEqual(file.f32(`layer.${i}.value`), kv[i].v);
      }
      assert.equal(file.tensors.size, 2 * nLayer + 1);
      const header = Number(new DataView((await Deno.readFile(path)).buffer).getBigUint64(0, true));
      assert.equal(
        (await Deno.stat(path)).size,
        8 + header + 2 * nLayer * 108 * nEmbd * 4 + 4 * 108,
      );
      cache.destroy();
    });
  },
);

Deno.test(
  "snapshot: restored K/V are bit-identical, and so is the continuation",
  needs("read", "write"),
  async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "s.safetensors");
      // The model keeps a workspace per input length, and the fused decode path its packed
      // weights: make those of this test first.
      const warm = model.newCache();
      for (const ids of [prompt, prompt.slice(0, 50), [1]]) {
        warm.reset();
        await model.forward(ids, warm);
      }
      warm.destroy();
      await model.warmup();
      const before = gpu.bytesAllocated;
      const original = await prefilled(path);
      const kv = await original.read();

      // Into a fresh preallocated cache, a growing one, and a used one.
      const fresh = await loadSnapshot(path, model.model);
      assert.deepEqual(fresh.tokenIds, prompt);
      assert.equal(fresh.metadata.length, "108");
      const grow = model.newCache({ policy: "grow", initialCapacity: 4 });
      const used = model.newCache({ policy: "grow", initialCapacity: 1, growthFactor: 1 });
      await model.forward(prompt.slice(0, 50), used);
      const caches = [
        fresh.cache,
        (await loadSnapshot(path, model.model, grow)).cache,
        (await loadSnapshot(path, model.model, used)).cache,
      ];
      assert.equal(caches[1], grow, "restores into the cache it is given");
      assert.equal(grow.capacity, 108);
      assert.equal(used.capacity, 108);
      for (const c of caches) {
        assert.equal(c.length, 108);
        assert.deepEqual(await c.read(), kv);
      }

      const want = await continueFrom(original);
      for (const c of caches) {
        const got = await continueFrom(c);
        got.logits.forEach((l, i) => assert.deepEqual(l, want.logits[i], `logits of step ${i}`));
        assert.deepEqual(got.greedy, want.greedy);
        assert.deepEqual(await c.read(), await original.read());
      }
      assert.equal(original.length, 108 + 4 + 8);
      for (const c of [original, ...caches]) c.destroy();
      assert.equal(gpu.bytesAllocated, before, "GPU bytes leaked");
    });
  },
);

Deno.test(
  "snapshot: an empty cache and a cache that ran greedy decoding round-trip",
  needs("read", "write"),
  async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "s.safetensors");
      const cache = model.newCache();
      await saveSnapshot(path, cache, [], model.model);
      const empty = await loadSnapshot(path, model.model);
      assert.equal(empty.cache.length, 0);
      assert.deepEqual(empty.tokenIds, []);
      empty.cache.destroy();

      const first = argmax((await model.forward([464, 509, 53], cache)).logits);
      const ids = [464, 509, 53, first, ...await model.decodeGreedy(first, cache, 5)].slice(0, 8);
      await saveSnapshot(path, cache, ids, model.model);
      const restored = await loadSnapshot(path, model.model);
      assert.deepEqual(restored.tokenIds, ids);
      assert.deepEqual(await restored.cache.read(), await cache.read());
      cache.destroy();
      restored.cache.destroy();
    });
  },
);

Deno.test(
  "snapshot: save refuses ids that do not match the cache",
  needs("read", "write"),
  async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "s.safetensors");
      const cache = model.newCache();
      await model.forward([1, 2, 3], cache);
      await assert.rejects(
        saveSnapshot(path, cache, [1, 2], model.model),
        (e: Error) =>
          e instanceof SnapshotError && /s\.safetensors: cannot save: 2 token ids/.test(e.message),
      );
      await assert.rejects(saveSnapshot(path, cache, [1, 2, 60000], model.model), /token id 60000/);
      const other = new GPT2(
        gpu,
        { ...model.config, nLayer: 1 },
        randomWeights({ ...model.config, nLayer: 1 }, 3),
      );
      await assert.rejects(saveSnapshot(path, cache, [1, 2, 3], other), /another model config/);
      // Atomic: a rename onto a non-empty folder fails and the temporary file is removed.
      const blocked = join(dir, "blocked");
      await Deno.mkdir(join(blocked, "inside"), { recursive: true });
      await assert.rejects(saveSnapshot(blocked, cache, [1, 2, 3], model.model));
      assert.deepEqual(await list(dir), ["blocked"]);
      cache.destroy();
      other.destroy();
    });
  },
);

Deno.test(
  "snapshot: refused for another config, other weights, corrupt files, bad metadata",
  needs("read", "write"),
  async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "s.safetensors");
      (await prefilled(path)).destroy();
      const before = gpu.bytesAllocated;
      const refused = async (file: string, message: RegExp, into: Runner = model) => {
        await assert.rejects(loadSnapshot(file, into.model), (e: Error) => {
          assert.ok(e.message.startsWith(`${file}: `), `names the file: ${e.message}`);
          assert.match(e.message, message);
          return true;
        });
        assert.equal(gpu.bytesAllocated, before, `nothing allocated for ${message}`);
      };

      // Another config: a shapes fixture (3 layers, 3 heads, n_embd 48, vocab 1000).
      const shapes = await Runner.load(gpu, "data/shapes/hub-l3-h3-e48");
      const shapesBytes = gpu.bytesAllocated;
      await assert.rejects(
        loadSnapshot(path, shapes.model),
        /another config: n_layer 2 \(this model: 3\), n_head 4 \(this model: 3\), n_embd 64 \(this model: 48\), n_positions 128 \(this model: 64\), vocab_size 50257 \(this model: 1000\)/,
      );
      assert.equal(gpu.bytesAllocated, shapesBytes);
      shapes.destroy();

      // The same config with other weights.
      const other = new Runner(new GPT2(gpu, model.config, randomWeights(model.config, 1)));
      await assert.rejects(
        loadSnapshot(path, other.model),
        (e: Error) =>
          e instanceof SnapshotError && e.message.startsWith(`${path}: `) &&
          /made with another model's weights/.test(e.message),
      );
      other.destroy();
      assert.equal(gpu.bytesAllocated, before);

      // A cache of another model to restore into.
      const small = { ...model.config, nLayer: 1 };
      const wrongCache = new KVCache(gpu, small);
      await assert.rejects(loadSnapshot(path, model.model, wrongCache), /cache to restore into/);
      wrongCache.destroy();

      // Corrupt files: the safetensors reader's error, naming the file.
      const bytes = await Deno.readFile(path);
      const truncated = join(dir, "truncated.safetensors");
      await Deno.writeFile(truncated, bytes.subarray(0, bytes.length - 100));
      await assert.rejects(loadSnapshot(truncated, model.model), SafetensorsError);
      await refused(truncated, /outside the \d+-byte data section/);
      const garbage = join(dir, "garbage.safetensors");
      await Deno.writeFile(garbage, new TextEncoder().encode("not a safetensors file at all"));
      await refused(garbage, /header length/);
      await refused(join(dir, "missing.safetensors"), /cannot read file/);
      // A flipped bit in the K/V data: the checksum catches it.
      const flipped = join(dir, "flipped.safetensors");
      const copy = bytes.slice();
      copy[copy.length - 1000] ^= 1;
      await Deno.writeFile(flipped, copy);
      await refused(flipped, /does not match its checksum.*the file is corrupt/);

      // Wrong metadata or tensors.
      const edited = join(dir, "edited.safetensors");
      const cases: [(t: Record<string, TensorData>, m: Record<string, string>) => void, RegExp][] =
        [
          [(_, m) => delete m.format, /not a kvgpt KV-cache snapshot \(metadata has no format/],
          [(_, m) => (m.format = "pt"), /not a kvgpt KV-cache snapshot \(metadata has format "pt"/],
          [(_, m) => (m.version = "2"), /snapshot version "2" is not supported/],
          [(_, m) => delete m.n_head, /metadata "n_head" is missing/],
          [(_, m) => (m.n_embd = "65"), /another config: n_embd 65 \(this model: 64\)$/],
          [(_, m) => (m.weights_fingerprint = "sha256:00"), /another model's weights/],
          [(_, m) => (m.length = "1e2"), /"length" must be a non-negative integer/],
          [
            (_, m) => (m.length = "129"),
            /length 129 exceeds the model's context \(n_positions 128\)/,
          ],
          [(_, m) => (m.length = "100"), /tensor "token_ids" is I32 \[108\], expected I32 \[100\]/],
          [(t) => delete t["layer.1.value"], /tensor "layer.1.value" is missing/],
          [
            (t) => (t["layer.0.key"] = { ...t["layer.0.key"], shape: [4, 54, 32] }),
            /tensor "layer.0.key" is F32 \[4, 54, 32\], expected F32 \[4, 108, 16\]/,
          ],
          [
            (t) => (t["layer.0.key"] = { ...t["layer.0.key"], dtype: "I32" }),
            /tensor "layer.0.key" is I32/,
          ],
          [(t) => (t.extra = t.token_ids), /unexpected tensor "extra"/],
          [
            (t) => (t.token_ids.data as Int32Array)[5] = 50257,
            /token id 50257 at position 5 is outside the vocabulary \(0..50256\)/,
          ],
          [(t) => (t.token_ids.data as Int32Array)[5] = 7, /does not match its checksum/],
          [(t) => (t["layer.1.value"].data as Float32Array)[0] += 1, /does not match its checksum/],
          [(_, m) => delete m.data_sha256, /checksum \(data_sha256 missing\)/],
        ];
      for (const [edit, message] of cases) {
        await rewrite(path, edited, edit);
        await refused(edited, message);
      }
      // A shape padded with 100,000 trailing 1s (the same values): a short message all the same.
      await rewrite(path, edited, (t) => {
        t["layer.0.key"] = { ...t["layer.0.key"], shape: [4, 108, 16, ...Array(100_000).fill(1)] };
      });
      await assert.rejects(loadSnapshot(edited, model.model), (e: Error) => {
        assert.match(e.message, /tensor "layer.0.key" is F32 \[4, 108, 16, 1, 1, .*…\], expected/);
        assert.ok(e.message.length < 300, `${e.message.length} characters`);
        return true;
      });
      // The untouched file still loads.
      await rewrite(path, edited, () => {});
      (await loadSnapshot(edited, model.model)).cache.destroy();
      // Another safetensors file: the model's own weights.
      await refused("data/tiny-gpt2/model.safetensors", /not a kvgpt KV-cache snapshot/);
      assert.equal(gpu.bytesAllocated, before);
    });
  },
);

/** Frees every buffer a model allocated (weights; its workspaces are freed on replacement). */

/** The tensors and metadata of a snapshot file, as copies to edit. */
async function readTensors(path: string) {
  const file = await SafetensorsFile.open(path);
  const tensors: Record<string, TensorData> = {};
  for (const [name, info] of file.tensors) {
    const data = info.dtype === "I32" ? file.i32(name).slice() : file.f32(name).slice();
    tensors[name] = { dtype: info.dtype, shape: [...info.shape], data };
  }
  return { tensors, meta: { ...file.metadata } };
}

Deno.test(
  "snapshot: NaN/Inf K/V is refused even with a valid checksum",
  needs("read", "write", "run"),
  async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "s.safetensors");
      (await prefilled(path)).destroy();
      const before = gpu.bytesAllocated;
      const { tensors: untouched, meta } = await readTensors(path);
      assert.equal(
        await snapshotChecksum(untouched),
        meta.data_sha256,
        "the checksum is recomputed",
      );
      const edited = join(dir, "edited.safetensors");
      for (
        const [tensor, index, value, message] of [
          ["layer.1.value", 100, NaN, /tensor "layer\.1\.value": element 100 is NaN/],
          ["layer.0.key", 7, Infinity, /tensor "layer\.0\.key": element 7 is Infinity/],
          ["layer.0.value", 0, -Infinity, /tensor "layer\.0\.value": element 0 is -Infinity/],
        ] as const
      ) {
        const { tensors } = await readTensors(path);
        (tensors[tensor].data as Float32Array)[index] = value;
        // A valid checksum over the bad values: only the finiteness check can refuse the file.
        await writeSafetensors(edited, tensors, {
          ...meta,
          data_sha256: await snapshotChecksum(tensors),
        });
        await assert.rejects(loadSnapshot(edited, model.model), (e: Error) => {
          assert.ok(e instanceof SnapshotError, String(e));
          assert.ok(e.message.startsWith(`${edited}: `), e.message);
          assert.match(e.message, message);
          return true;
        });
        assert.equal(gpu.bytesAllocated, before, "nothing allocated");
      }
      // The same edit with a finite value loads.
      const { tensors } = await readTensors(path);
      (tensors["layer.1.value"].data as Float32Array)[100] = 0.25;
      await writeSafetensors(edited, tensors, {
        ...meta,
        data_sha256: await snapshotChecksum(tensors),
      });
      (await loadSnapshot(edited, model.model)).cache.destroy();
      assert.equal(gpu.bytesAllocated, before);
    });
  },
);

Deno.test("snapshotChecksum: the SHA-256 of the digests of token_ids, then each layer's key and value", async () => {
  const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest();
  const bytes = (a: Int32Array | Float32Array) => new Uint8Array(a.buffer);
  const ids = new Int32Array([3, 1, 4]);
  const k0 = new Float32Array([1.5, -2]);
  const v0 = new Float32Array([0.25, 8]);
  const want = createHash("sha256")
    .update(Buffer.concat([sha(bytes(ids)), sha(bytes(k0)), sha(bytes(v0))]))
    .digest("hex");
  const tensors = {
    "layer.0.value": { data: v0 }, // the order of the record does not matter
    token_ids: { data: ids },
    "layer.0.key": { data: k0 },
  };
  assert.equal(await snapshotChecksum(tensors), `sha256:${want}`);
});
