/**
 * KV-cache snapshots: a cache's K/V, its length, the token ids it holds and the model it
 * belongs to, saved to a safetensors file and restored later, so that a long prompt or a
 * conversation resumes without running its prefill again.
 *
 * File layout (safetensors, written atomically):
 * - `layer.N.key`, `layer.N.value`: F32 [n_head, length, head_dim], the cached rows of layer N;
 * - `token_ids`: I32 [length], the tokens whose K/V these are;
 * - `__metadata__`: `format` "kvgpt-kv-snapshot", `version` "1", `length`, the model's
 *   `n_layer`, `n_head`, `n_embd`, `n_positions`, `vocab_size`, `weights_fingerprint` (see
 *   {@link modelFingerprint}) and `data_sha256` (a checksum of the tensors, see below).
 *
 * Loading refuses, with an error that names the file and what is wrong, a file that is not a
 * snapshot (or not a safetensors file at all: the reader's error), another version, another
 * config (naming the fields), another model's weights, missing or misshapen tensors, a length
 * past the context, token ids outside the vocabulary, K/V holding NaN or ±Infinity (even under
 * a valid checksum) and data that fails its checksum. Messages echo at most ~80 characters
 * of any value from the file.
 *
 * @module
 */
import type { Tensor } from "../kernels/gpu.ts";
import type { GPT2 } from "./gpt2.ts";
import type { KVCache } from "./kv_cache.ts";
import { clip, describe } from "../base/describe.ts";
import {
  firstNonFinite,
  SafetensorsFile,
  type TensorData,
  writeSafetensors,
} from "../io/safetensors.ts";

/** The `format` metadata of a snapshot file. */
export const SNAPSHOT_FORMAT = "kvgpt-kv-snapshot";

/** The snapshot layout this module writes and reads. */
export const SNAPSHOT_VERSION = "1";

/** Rows of wte (and of an untied lm_head) that the weights fingerprint covers. */
const FINGERPRINT_ROWS = 64;

/** A snapshot that cannot be saved or restored; the message starts with the file's path. */
export class SnapshotError extends Error {
  /** @param message Full message, starting with the path. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SnapshotError";
  }
}

/** What {@link loadSnapshot} restored. */
export interface RestoredSnapshot {
  /** The cache holding the snapshot's K/V, `length` = the snapshot's length. */
  cache: KVCache;
  /** The tokens whose K/V the cache now holds. */
  tokenIds: number[];
  /** The file's metadata. */
  metadata: Record<string, string>;
}

/** Config fields a snapshot records, metadata key → config key. */
const CONFIG_FIELDS = {
  n_layer: "nLayer",
  n_head: "nHead",
  n_embd: "nEmbd",
  n_positions: "nPositions",
  vocab_size: "vocabSize",
} as const;

const fingerprints = new WeakMap<GPT2, Promise<string>>();

/**
 * A fingerprint of a model's weights: `sha256:` and the SHA-256 of the f32 bytes, as stored
 * on the GPU, of wpe, the first 64 rows of wte (and of an untied lm_head), every block's
 * LayerNorm weights and biases, every bias and the first row of every weight matrix, and
 * ln_f. Two models that differ in any of these differ in fingerprint; computed once per
 * model (one GPU read) and cached.
 */
export function modelFingerprint(model: GPT2): Promise<string> {
  let fingerprint = fingerprints.get(model);
  if (fingerprint === undefined) {
    fingerprint = computeFingerprint(model);
    fingerprints.set(model, fingerprint);
    fingerprint.catch(() => fingerprints.delete(model));
  }
  return fingerprint;
}

async function computeFingerprint(model: GPT2): Promise<string> {
  const { tieWordEmbeddings } = model.config;
  // The stored words, f32 or f16 pairs: a cache made with f16 weights is another model's.
  const firstRows = (t: Tensor, rows: number): Tensor => ({
    buffer: t.buffer,
    offset: t.offset,
    shape: [Math.min(rows, t.shape[0]), t.shape[1]],
  });
  const firstRow = (t: Tensor): Tensor => firstRows(t, 1);
  const sample: Tensor[] = [
    firstRows(model.wte.parts[0].tensor, FINGERPRINT_ROWS),
    ...(tieWordEmbeddings ? [] : [firstRows(model.lmHead.parts[0].tensor, FINGERPRINT_ROWS)]),
    model.wpe,
    ...model.blocks.flatMap((b) => [
      b.ln1.weight,
      b.ln1.bias,
      b.ln2.weight,
      b.ln2.bias,
      ...[b.attn.cAttn, b.attn.cProj, b.mlp.cFc, b.mlp.cProj].flatMap((l) => [
        l.bias,
        firstRow(l.weight.tensor),
      ]),
    ]),
    model.lnF.weight,
    model.lnF.bias,
  ];
  const parts = await model.gpu.read(sample);
  const total = parts.reduce((n, p) => n + p.length, 0);
  const all = new Float32Array(total);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return `sha256:${hex(await crypto.subtle.digest("SHA-256", all))}`;
}

/**
 * Saves `cache` (its first `cache.length` rows per head, per layer), the `tokenIds` it holds
 * and `model`'s config and weights fingerprint to a safetensors file at `path`, atomically
 * (a temporary file renamed over `path`).
 *
 * @throws {SnapshotError} when the cache is not `model`'s or `tokenIds` do not match it.
 */
export async function saveSnapshot(
  path: string,
  cache: KVCache,
  tokenIds: readonly number[],
  model: GPT2,
): Promise<void> {
  const fail = (message: string): never => {
    throw new SnapshotError(`${path}: cannot save: ${message}`);
  };
  const { config } = model;
  const mismatch = configMismatch(cache.config, config);
  if (mismatch.length) fail(`the cache belongs to another model config (${mismatch.join(", ")})`);
  if (cache.dtype !== "f32") fail(`snapshots hold f32 caches, this one stores ${cache.dtype}`);
  const length = cache.length;
  if (tokenIds.length !== length) {
    fail(`${tokenIds.length} token ids for a cache of ${length} tokens`);
  }
  tokenIds.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
      fail(`token id ${id} at position ${i} is outside 0..${config.vocabSize - 1}`);
    }
  });
  const layers = await cache.read();
  const ids = Int32Array.from(tokenIds);
  const { nHead, headDim } = config;
  const shape = [nHead, length, headDim];
  const tensors: Record<string, TensorData> = {
    token_ids: { dtype: "I32", shape: [length], data: ids },
  };
  layers.forEach(({ k, v }, i) => {
    tensors[`layer.${i}.key`] = { dtype: "F32", shape, data: k };
    tensors[`layer.${i}.value`] = { dtype: "F32", shape, data: v };
  });
  const metadata: Record<string, string> = {
    format: SNAPSHOT_FORMAT,
    version: SNAPSHOT_VERSION,
    length: String(length),
    ...Object.fromEntries(
      Object.entries(CONFIG_FIELDS).map(([key, field]) => [key, String(config[field])]),
    ),
    weights_fingerprint: await modelFingerprint(model),
    data_sha256: await snapshotChecksum(tensors),
  };
  await writeSafetensors(path, tensors, metadata);
}

/**
 * Restores a snapshot saved by {@link saveSnapshot} for `model`: checks everything first,
 * then writes the K/V rows into `cache` (a new preallocated cache of `model` when not given;
 * a given one is reset, and grown if it uses the "grow" policy) and sets its length. Nothing
 * is allocated or changed when the file is refused.
 *
 * @throws {SafetensorsError} when the file cannot be read or is not valid safetensors.
 * @throws {SnapshotError} naming the file and the problem for anything else.
 */
export async function loadSnapshot(
  path: string,
  model: GPT2,
  cache?: KVCache,
): Promise<RestoredSnapshot> {
  const fail = (message: string): never => {
    throw new SnapshotError(`${path}: ${message}`);
  };
  const { config } = model;
  if (cache) {
    const mismatch = configMismatch(cache.config, config);
    if (mismatch.length) {
      fail(`the cache to restore into belongs to another model config (${mismatch.join(", ")})`);
    }
    if (cache.dtype !== "f32") fail(`snapshots restore into f32 caches, not ${cache.dtype}`);
  }
  const file = await SafetensorsFile.open(path);
  const meta = file.metadata;

  if (meta.format !== SNAPSHOT_FORMAT) {
    const got = meta.format === undefined ? "no format" : `format ${describe(meta.format)}`;
    fail(`not a kvgpt KV-cache snapshot (metadata has ${got}, expected "${SNAPSHOT_FORMAT}")`);
  }
  if (meta.version !== SNAPSHOT_VERSION) {
    fail(
      `snapshot version ${describe(meta.version ?? null)} is not supported ` +
        `(this kvgpt reads version "${SNAPSHOT_VERSION}")`,
    );
  }
  const differs: string[] = [];
  for (const [key, field] of Object.entries(CONFIG_FIELDS)) {
    if (meta[key] === undefined) fail(`metadata "${key}" is missing`);
    if (meta[key] !== String(config[field])) {
      differs.push(`${key} ${clip(meta[key], 24) || '""'} (this model: ${config[field]})`);
    }
  }
  if (differs.length) {
    fail(`the snapshot belongs to a model with another config: ${differs.join(", ")}`);
  }
  const fingerprint = await modelFingerprint(model);
  if (meta.weights_fingerprint !== fingerprint) {
    fail(
      `the snapshot was made with another model's weights (weights fingerprint ` +
        `${
          meta.weights_fingerprint === undefined
            ? "missing"
            : describe(meta.weights_fingerprint, 40)
        }, this model's is ${fingerprint})`,
    );
  }
  const length = Number(meta.length);
  if (meta.length === undefined || !/^\d+$/.test(meta.length) || !Number.isSafeInteger(length)) {
    fail(`metadata "length" must be a non-negative integer, got ${describe(meta.length)}`);
  }
  if (length > config.nPositions) {
    fail(`length ${length} exceeds the model's context (n_positions ${config.nPositions})`);
  }

  // Tensors: exactly the expected names, dtypes and shapes.
  const { nLayer, nHead, headDim, vocabSize } = config;
  const expected = new Map<string, [string, number[]]>([["token_ids", ["I32", [length]]]]);
  for (let i = 0; i < nLayer; i++) {
    for (const kind of ["key", "value"]) {
      expected.set(`layer.${i}.${kind}`, ["F32", [nHead, length, headDim]]);
    }
  }
  for (const [name, [dtype, shape]] of expected) {
    const info = file.tensors.get(name);
    if (info === undefined) fail(`tensor "${name}" is missing`);
    if (info!.dtype !== dtype || info!.shape.join() !== shape.join()) {
      fail(
        `tensor "${name}" is ${info!.dtype} [${clip(info!.shape.join(", "))}], expected ` +
          `${dtype} [${shape.join(", ")}]`,
      );
    }
  }
  for (const name of file.tensors.keys()) {
    if (!expected.has(name)) fail(`unexpected tensor ${describe(name)}`);
  }
  const ids = file.i32("token_ids");
  ids.forEach((id, i) => {
    if (id < 0 || id >= vocabSize) {
      fail(`token id ${id} at position ${i} is outside the vocabulary (0..${vocabSize - 1})`);
    }
  });
  // A NaN or infinity would poison every later token; refused even under a valid checksum.
  const finite = (name: string): Float32Array => {
    const values = file.f32(name);
    const bad = firstNonFinite(values);
    if (bad >= 0) fail(`tensor "${name}": element ${bad} is ${values[bad]}; K/V must be finite`);
    return values;
  };
  const layers = Array.from({ length: nLayer }, (_, i) => ({
    k: finite(`layer.${i}.key`),
    v: finite(`layer.${i}.value`),
  }));
  const read: Record<string, { data: ArrayBufferView }> = { token_ids: { data: ids } };
  layers.forEach(({ k, v }, i) => {
    read[`layer.${i}.key`] = { data: k };
    read[`layer.${i}.value`] = { data: v };
  });
  if (meta.data_sha256 !== await snapshotChecksum(read)) {
    fail(
      `the tensor data does not match its checksum (data_sha256 ` +
        `${
          meta.data_sha256 === undefined ? "missing" : describe(meta.data_sha256, 40)
        }): the file is corrupt`,
    );
  }

  // Everything checks out: write the rows into the cache.
  const target = cache ?? model.newCache();
  try {
    target.reset();
    target.reserve(length);
    const capacity = target.capacity;
    const rows = length * headDim;
    if (length > 0) {
      layers.forEach(({ k, v }, i) => {
        const { k: kt, v: vt } = target.layers[i];
        for (const [t, data] of [[kt, k], [vt, v]] as const) {
          if (capacity === length) {
            model.gpu.write(t, data);
            continue;
          }
          for (let h = 0; h < nHead; h++) {
            model.gpu.write(t, data.subarray(h * rows, (h + 1) * rows), h * capacity * headDim);
          }
        }
      });
    }
    target.length = length;
    await model.gpu.sync();
  } catch (err) {
    if (cache === undefined) target.destroy();
    else target.reset();
    throw err;
  }
  return { cache: target, tokenIds: [...ids], metadata: { ...meta } };
}

/**
 * The snapshot's `data_sha256`: `sha256:` and the SHA-256 of the SHA-256 digests of
 * token_ids, then layer.0.key, layer.0.value, layer.1.key, … (each over its little-endian
 * bytes), for as many layers as `tensors` holds.
 */
export async function snapshotChecksum(
  tensors: Readonly<Record<string, { readonly data: ArrayBufferView }>>,
): Promise<string> {
  const parts = [tensors.token_ids.data];
  for (let i = 0; `layer.${i}.key` in tensors; i++) {
    parts.push(tensors[`layer.${i}.key`].data, tensors[`layer.${i}.value`].data);
  }
  const digests = await Promise.all(
    parts.map((p) => crypto.subtle.digest("SHA-256", p as ArrayBufferView<ArrayBuffer>)),
  );
  const all = new Uint8Array(32 * digests.length);
  digests.forEach((d, i) => all.set(new Uint8Array(d), 32 * i));
  return `sha256:${hex(await crypto.subtle.digest("SHA-256", all))}`;
}

/** Config fields that differ, as "n_layer 3 (expected 2)". */
function configMismatch(
  got: KVCache["config"],
  want: GPT2["config"],
): string[] {
  return Object.entries(CONFIG_FIELDS)
    .filter(([, field]) => got[field] !== want[field])
    .map(([key, field]) => `${key} ${got[field]}, the model's ${want[field]}`);
}

function hex(buffer: ArrayBuffer): string {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
