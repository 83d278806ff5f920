/**
 * cli/env_options.ts: KVGPT_WEBGPU, KVGPT_KERNELS and KVGPT_DECODE become options, a bad value
 * is one line naming the variable, and the library below cli/ reads none of them.
 */
import assert from "node:assert/strict";
import {
  type EnvReader,
  gpuOptionsFromEnv,
  modelOptionsFromEnv,
  processEnv,
  SET_FOR_DAWN,
  SWIFTSHADER_ICD,
} from "../cli/env_options.ts";
import { deno, needs } from "./helpers.ts";

const NAMES = ["KVGPT_WEBGPU", "KVGPT_KERNELS", "KVGPT_DECODE"];

/**
 * An environment of exactly `vars`: the tests never set the process's own, which other test
 * files read at the same time under `deno test --parallel`.
 */
const envOf = (vars: Record<string, string>): EnvReader => (name) => vars[name];

Deno.test("env options: unset variables set nothing", () => {
  assert.deepEqual(gpuOptionsFromEnv(envOf({})), {});
  assert.deepEqual(modelOptionsFromEnv(envOf({})), {});
  // An empty value counts as unset.
  const empty = envOf({ KVGPT_WEBGPU: "", KVGPT_KERNELS: "", KVGPT_DECODE: "" });
  assert.deepEqual(gpuOptionsFromEnv(empty), {});
  assert.deepEqual(modelOptionsFromEnv(empty), {});
});

Deno.test("env options: each variable becomes its option, named as its source", () => {
  const env = envOf({ KVGPT_WEBGPU: "dawn", KVGPT_KERNELS: "gpu", KVGPT_DECODE: "general" });
  assert.deepEqual(gpuOptionsFromEnv(env), {
    webgpu: "dawn",
    design: "gpu",
    designSource: "KVGPT_KERNELS=gpu",
  });
  assert.deepEqual(modelOptionsFromEnv(env), {
    decode: "general",
    decodeSource: "KVGPT_DECODE=general",
  });
});

Deno.test("env options: a bad value is one line naming the variable and the choices", () => {
  assert.throws(
    () => gpuOptionsFromEnv(envOf({ KVGPT_WEBGPU: "metal" })),
    /^Error: KVGPT_WEBGPU: expected deno or dawn, got "metal"$/,
  );
  assert.throws(
    () => gpuOptionsFromEnv(envOf({ KVGPT_KERNELS: "tpu" })),
    /^Error: KVGPT_KERNELS: expected cpu or gpu, got "tpu"$/,
  );
  assert.throws(
    () => modelOptionsFromEnv(envOf({ KVGPT_DECODE: "fast" })),
    /KVGPT_DECODE: expected general or fused, got "fast"/,
  );
});

Deno.test("env options: the default reader is the process environment", needs("env"), () => {
  for (const name of ["PATH", "HOME", ...NAMES]) assert.equal(processEnv(name), Deno.env.get(name));
});

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

/** In a child: opens Deno's WebGPU through openGpu; prints VK_ICD_FILENAMES and the marker. */
const OPEN_DENO = `
import { openGpu, SET_FOR_DAWN } from "./cli/env_options.ts";
try {
  (await openGpu({ webgpu: "deno" })).close();
} catch {
  // No adapter at all: what counts here is the environment before the attempt.
}
const vars = ["VK_ICD_FILENAMES", SET_FOR_DAWN].map((name) => Deno.env.get(name) ?? null);
console.log(JSON.stringify(vars));
`;

Deno.test(
  "env options: Deno's WebGPU clears only the VK_ICD_FILENAMES that kvgpt set for Dawn",
  needs("run", "read", "env"),
  async () => {
    const after = async (env: Record<string, string>) => {
      const r = await deno(["eval", OPEN_DENO], { NO_COLOR: "1", ...env });
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    };
    // Set by openGpu's fallback for Dawn (the marker beside it): cleared, or Deno's WebGPU would
    // open SwiftShader too.
    assert.deepEqual(await after({ VK_ICD_FILENAMES: SWIFTSHADER_ICD, [SET_FOR_DAWN]: "1" }), [
      null,
      null,
    ]);
    // Set by the user: left alone, SwiftShader's included.
    assert.deepEqual(await after({ VK_ICD_FILENAMES: SWIFTSHADER_ICD }), [SWIFTSHADER_ICD, null]);
    assert.deepEqual(await after({ VK_ICD_FILENAMES: "/nonexistent" }), ["/nonexistent", null]);
  },
);
