/**
 * The snapshot cases: a KV-cache snapshot of the base model, mutated in its bytes, metadata or
 * values.
 *
 * @module
 */
import { join } from "node:path";
import { encodeSafetensors, SafetensorsFile, type TensorData } from "../../io/safetensors.ts";
import { loadSnapshot, snapshotChecksum } from "../../model/snapshot.ts";
import { Draw, type FuzzContext, judge } from "./case.ts";
import { mutateSafetensors } from "./safetensors.ts";
/** A snapshot of the base model, mutated in its bytes, metadata or values. */
export async function snapshotCase(ctx: FuzzContext, d: Draw, index: number, mutations: string[]) {
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
      const restored = await loadSnapshot(path, ctx.model.model);
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
