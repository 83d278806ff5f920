/** gelu and geluBackward (GPT-2's gelu_new) against the float64 CPU reference, both designs. */
import assert from "node:assert/strict";
import { gelu, geluBackward } from "../kernels/gelu.ts";
import { Gpu } from "../kernels/gpu.ts";
import { geluNewBackwardRef, geluNewRef } from "./cpu_reference.ts";
import { Arena, assertClose, TestRng } from "./helpers.ts";

/** diff <= TOL · max(1, |ref|): a few f32 roundings and llvmpipe's tanh (seen: 3.4e-7). */
const TOL = 2e-6;

const cpuDesign = await Gpu.open({ design: "cpu" });
const gpuDesign = await Gpu.open({ design: "gpu" });

for (const gpu of [cpuDesign, gpuDesign]) {
  Deno.test(`gelu and geluBackward: [7, 20] over both tails and the clamp, ${gpu.design} design`, async () => {
    const rng = new TestRng(30);
    const arena = new Arena(gpu);
    const [M, N] = [7, 20];
    // Values over [-12, 12]: both tails, where tanh saturates and its argument is clamped at
    // ±10; and a few exact ones: 0, ±1e-3 (tanh near 0), the clamp's edge near ±5.6.
    const x = rng.uniforms(M * N, -12, 12);
    x.set([0, 1e-3, -1e-3, 5.6, -5.6, 1, -1]);
    const dy = rng.uniforms(M * N, -2, 2);
    const xT = arena.upload(x, [M, N], "x");
    const y = arena.poisoned([M, N], "y");
    const dx = arena.poisoned([M, N], "dx");
    gpu.run([gelu(gpu, xT, y), geluBackward(gpu, xT, arena.upload(dy, [M, N], "dy"), dx)]);
    const [gotY, gotDx] = await gpu.read([y, dx]);
    assertClose(gotY, geluNewRef(x), TOL, `gelu ${M}x${N}`);
    assertClose(gotDx, geluNewBackwardRef(x, dy), TOL, `gelu backward ${M}x${N}`);
    arena.destroy();
  });
}

Deno.test("gelu: rejects tensors of different shapes or not a multiple of 4 values", () => {
  const gpu = cpuDesign;
  const arena = new Arena(gpu);
  const x = arena.poisoned([3, 5]);
  assert.throws(() => gelu(gpu, x, x), /multiple of 4/);
  const a = arena.poisoned([2, 4]);
  assert.throws(() => geluBackward(gpu, a, a, arena.poisoned([4, 2])), /share one shape/);
  arena.destroy();
});
