/**
 * scripts/hf_reference.py must reproduce the committed tiny-gpt2 reference: it re-runs
 * HuggingFace on data/tiny-gpt2 with the committed prompts and compares every tensor.
 * Needs the Python environment of /work/shared/tools/setup_hf_env.sh ($HF_VENV, default
 * ~/.cache/hf-venv); skipped without it.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { maxAbsDiff } from "../base/max_abs_diff.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { granted, hfPython, slow } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TINY = join(ROOT, "data/tiny-gpt2");
// Plain `deno test` grants no environment, file or subprocess access: the test is ignored.
const { python: PYTHON, unavailable: reason } = await hfPython();
const TOLERANCE = 1e-6;
if (granted("env", "read", "write", "run") && reason !== null) {
  console.log(`hf_reference_test skipped: ${reason}`);
}

Deno.test({
  name: "hf_reference.py reproduces data/tiny-gpt2/reference.safetensors",
  ignore: slow("env", "read", "write", "run").ignore || reason !== null,
  async fn() {
    const out = await Deno.makeTempDir({ prefix: "hf_reference_test_" });
    try {
      const run = await new Deno.Command(PYTHON, {
        args: [
          join(ROOT, "scripts/hf_reference.py"),
          TINY,
          "--prompts-from",
          join(TINY, "reference.json"),
          "--out",
          out,
          "--no-sensitivity",
        ],
        env: { HF_HUB_OFFLINE: "1" },
      }).output();
      const log = new TextDecoder().decode(run.stderr);
      assert.ok(run.success, `hf_reference.py failed:\n${log}`);

      const want = await SafetensorsFile.open(join(TINY, "reference.safetensors"));
      const got = await SafetensorsFile.open(join(out, "reference.safetensors"));
      assert.deepEqual([...got.tensors.keys()].sort(), [...want.tensors.keys()].sort());
      let worst = 0;
      for (const [name, w] of want.tensors) {
        const g = got.info(name);
        assert.equal(g.dtype, w.dtype, name);
        assert.deepEqual(g.shape, w.shape, name);
        if (w.dtype === "I32") {
          assert.deepEqual(got.i32(name), want.i32(name), `${name}: ids differ`);
        } else {
          const d = maxAbsDiff(got.f32(name), want.f32(name));
          assert.ok(d <= TOLERANCE, `${name}: max abs diff ${d} > ${TOLERANCE}`);
          worst = Math.max(worst, d);
        }
      }

      const json = (dir: string) => JSON.parse(Deno.readTextFileSync(join(dir, "reference.json")));
      const [refWant, refGot] = [json(TINY), json(out)];
      assert.deepEqual(Object.keys(refGot.tensors), Object.keys(refWant.tensors));
      for (const [i, p] of refWant.prompts.entries()) {
        assert.deepEqual(refGot.prompts[i].generated_new_ids, p.generated_new_ids, p.name);
      }
      console.log(`${want.tensors.size} tensors, max abs diff ${worst}`);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
