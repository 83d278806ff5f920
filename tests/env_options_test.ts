/**
 * cli/env_options.ts: KVGPT_WEBGPU, KVGPT_KERNELS and KVGPT_DECODE become options, a bad value
 * is one line naming the variable, and the library below cli/ reads none of them.
 */
import assert from "node:assert/strict";
import { gpuOptionsFromEnv, modelOptionsFromEnv } from "../cli/env_options.ts";
import { needs } from "./helpers.ts";

const NAMES = ["KVGPT_WEBGPU", "KVGPT_KERNELS", "KVGPT_DECODE"];

/** Runs `f` with the environment's KVGPT_* variables set as `env` says, then restores them. */
function withEnv<T>(env: Record<string, string>, f: () => T): T {
  const saved = NAMES.map((name) => [name, Deno.env.get(name)] as const);
  try {
    for (const name of NAMES) {
      if (name in env) Deno.env.set(name, env[name]);
      else Deno.env.delete(name);
    }
    return f();
  } finally {
    for (const [name, value] of saved) {
      if (value === undefined) Deno.env.delete(name);
      else Deno.env.set(name, value);
    }
  }
}

Deno.test("env options: unset variables set nothing", needs("env"), () => {
  withEnv({}, () => {
    assert.deepEqual(gpuOptionsFromEnv(), {});
    assert.deepEqual(modelOptionsFromEnv(), {});
  });
});

Deno.test(
  "env options: each variable becomes its option, named as its source",
  needs("env"),
  () => {
    const env = { KVGPT_WEBGPU: "dawn", KVGPT_KERNELS: "gpu", KVGPT_DECODE: "general" };
    withEnv(env, () => {
      assert.deepEqual(gpuOptionsFromEnv(), {
        webgpu: "dawn",
        design: "gpu",
        designSource: "KVGPT_KERNELS=gpu",
      });
      assert.deepEqual(modelOptionsFromEnv(), {
        decode: "general",
        decodeSource: "KVGPT_DECODE=general",
      });
    });
  },
);

Deno.test(
  "env options: a bad value is one line naming the variable and the choices",
  needs("env"),
  () => {
    withEnv({ KVGPT_WEBGPU: "metal" }, () => {
      assert.throws(gpuOptionsFromEnv, /^Error: KVGPT_WEBGPU: expected deno or dawn, got "metal"$/);
    });
    withEnv({ KVGPT_KERNELS: "tpu" }, () => {
      assert.throws(gpuOptionsFromEnv, /^Error: KVGPT_KERNELS: expected cpu or gpu, got "tpu"$/);
    });
    withEnv({ KVGPT_DECODE: "fast" }, () => {
      assert.throws(modelOptionsFromEnv, /KVGPT_DECODE: expected general or fused, got "fast"/);
    });
  },
);

Deno.test("env options: nothing below cli/ reads the environment", needs("read"), async () => {
  for (const dir of ["kernels", "model", "run", "train", "tokenizers", "base"]) {
    let entries: Deno.DirEntry[] = [];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch {
      continue; // a layer this checkout does not have
    }
    for (const entry of entries.filter((e) => e.name.endsWith(".ts"))) {
      const text = await Deno.readTextFile(`${dir}/${entry.name}`);
      for (const name of NAMES) {
        assert.ok(!text.includes(`"${name}"`), `${dir}/${entry.name} reads ${name}`);
      }
      assert.doesNotMatch(text, /Deno\.env/, `${dir}/${entry.name} reads the environment`);
    }
  }
});
