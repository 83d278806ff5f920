import { openGpu } from "./cli/env_options.ts";
import { f32bits } from "./kernels/gpu.ts";
import sampler from "./kernels/sampler.wgsl" with { type: "text" };
import pick from "./kernels/sample_pick.wgsl" with { type: "text" };
const gpu = await openGpu();
const l = gpu.tensor([1, 50257], "l"),
  ids = gpu.tensor([1], "i"),
  st = gpu.tensor([8], "s"),
  tk = gpu.tensor([8], "t");
const [variant, wg, maxk] = [Deno.args[0], +Deno.args[1], +Deno.args[2]];
let code = `${pick}\n${sampler}`;
const cut = (from: string, to: string) => {
  const a = code.indexOf(from), b = code.indexOf(to, a);
  if (a < 0 || b < 0) throw new Error("no " + from);
  code = code.slice(0, a) + code.slice(b);
};
if (variant === "norank") {
  cut("  for (var c = li; c < k; c += WG) {", "  workgroupBarrier();\n}\n\n// A token drawn");
}
if (variant === "nogather") {
  cut(
    "  for (var i = block_start(li); i < block_start(li + 1u); i++) {\n    let key = key_of(logits[i]);\n    var keep",
    "  workgroupBarrier();\n  for (var c = li",
  );
}
if (variant === "nodraw") cut("  let m = candLogit[0];", "  return last;\n}\n\n// token");
const kernel = gpu.kernel(code, "sample_pick", { WG: wg, MAXK: maxk, BINS: 256 });
const params = gpu.uniform([50257, f32bits(1), 40, f32bits(1)]);
const t = performance.now();
gpu.run([gpu.dispatch("x", kernel, { p: params, logits: l, ids, state: st, tokens: tk }, [1])]);
await gpu.sync();
console.log(variant, wg, maxk, (performance.now() - t).toFixed(0), "ms");
