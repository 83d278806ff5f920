/**
 * gradNorm (the global gradient norm) and adamw (one torch AdamW step with global-norm
 * clipping) against float64 references, over several steps, tensors and settings.
 */
import assert from "node:assert/strict";
import { adamw, type AdamWOptions, gradNorm } from "../kernels/adamw.ts";
import { Gpu } from "../kernels/gpu.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { adamwStepRef, gradNormRef } from "./cpu_reference.ts";
import { Arena, assertClose, Rng } from "./helpers.ts";

const gpu = await Gpu.open();

/** Norms: |got - ref| <= TOL_NORM · ref (seen: 7.8e-8). */
const TOL_NORM = 1e-6;
/** Parameters after the steps: diff <= TOL_PARAM · max(1, |ref|) (seen: 4.4e-7). */
const TOL_PARAM = 1e-6;
/** Moments m and v: diff <= TOL_MOMENT · max(|ref|) of the tensor (seen: 1.4e-7). */
const TOL_MOMENT = 1e-6;

Deno.test("gradNorm: several tensors of odd sizes, per tensor and together, deterministic", async () => {
  const rng = new Rng(3);
  const shapes = [[5], [1000], [3, 333], [70001], [1]];
  const data = shapes.map((s) => rng.normals(s.reduce((a, b) => a * b), 0.5));
  const arena = new Arena(gpu);
  const grads = data.map((d, i) => arena.upload(d, shapes[i], `grad ${i}`));
  const partials = arena.poisoned([7], "partials");
  const norm = arena.poisoned([1], "norm");
  const plan = gradNorm(gpu, grads, partials, norm);
  assert.equal(plan.length, shapes.length + 1);
  gpu.run(plan);
  const [p1, n1] = await gpu.read([partials, norm]);
  gpu.run(plan);
  const [p2, n2] = await gpu.read([partials, norm]);
  arena.destroy();
  const want = gradNormRef(data);
  const rel = Math.abs(n1[0] - want) / want;
  console.log(`  global norm ${n1[0]} vs ${want}: relative diff ${rel.toExponential(2)}`);
  assert.ok(rel <= TOL_NORM, `global norm ${n1[0]}, expected ${want}`);
  data.forEach((d, i) => {
    const own = gradNormRef([d]);
    assert.ok(Math.abs(p1[i] - own) <= TOL_NORM * own, `tensor ${i}: norm ${p1[i]} vs ${own}`);
  });
  assert.deepEqual(p2.subarray(0, shapes.length), p1.subarray(0, shapes.length), "rerun");
  assert.equal(n2[0], n1[0], "rerun gives the same bits");
});

Deno.test("gradNorm: a tensor of 20M elements, in slices that llvmpipe sums whole", async () => {
  // One workgroup of 256 summing 20M squares loops 78,125 times per invocation: past the
  // 65,535 at which llvmpipe and lavapipe end an invocation's loops silently.
  const rng = new Rng(4);
  const data = [rng.uniforms(20_000_000, -1, 1), rng.uniforms(1000, -1, 1)];
  const arena = new Arena(gpu);
  const grads = data.map((d, i) => arena.upload(d, [d.length], `grad ${i}`));
  const partials = arena.poisoned([2], "partials");
  const norm = arena.poisoned([1], "norm");
  const plan = gradNorm(gpu, grads, partials, norm);
  assert.equal(plan.length, 3 + 1 + 1, "slices of 2^23 elements, the small tensor, the norm");
  gpu.run(plan);
  const [p, n] = await gpu.read([partials, norm]);
  arena.destroy();
  data.forEach((d, i) => {
    const own = gradNormRef([d]);
    assert.ok(Math.abs(p[i] - own) <= TOL_NORM * own, `tensor ${i}: norm ${p[i]} vs ${own}`);
  });
  const want = gradNormRef(data);
  assert.ok(Math.abs(n[0] - want) <= TOL_NORM * want, `global norm ${n[0]}, expected ${want}`);
});

const OPTIONS: AdamWOptions = { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, gradClip: 1 };

/**
 * STEPS AdamW steps of three tensors (two with decay) with fresh gradients N(0, 1) each step
 * (global norm ≈ 35) and a varying lr, on the GPU and in float64; compares params, m and v.
 */
async function checkSteps(options: AdamWOptions, label: string) {
  const STEPS = 6;
  const rng = new Rng(11);
  const tensors = [
    { shape: [37], decay: false },
    { shape: [5, 41], decay: true },
    { shape: [1000], decay: true },
  ].map(({ shape, decay }) => {
    const n = shape.reduce((a, b) => a * b);
    const init = rng.normals(n);
    return {
      shape,
      decay,
      init,
      param: Float64Array.from(init),
      m: new Float64Array(n),
      v: new Float64Array(n),
    };
  });
  const arena = new Arena(gpu);
  const gpuState = tensors.map((t) => ({
    param: arena.upload(t.init, t.shape, "param"),
    grad: arena.poisoned(t.shape, "grad"),
    m: arena.upload(new Float32Array(t.init.length), t.shape, "m"),
    v: arena.upload(new Float32Array(t.init.length), t.shape, "v"),
  }));
  const stepInfo = arena.poisoned([4], "stepInfo");
  const partials = arena.poisoned([tensors.length], "partials");
  const norm = arena.poisoned([1], "norm");
  const grads = gpuState.map((s) => s.grad);
  const plan = [
    ...gradNorm(gpu, grads, partials, norm),
    ...gpuState.map((s, i) =>
      adamw(gpu, s.param, s.grad, s.m, s.v, stepInfo, norm, options, tensors[i].decay)
    ),
  ];
  const { beta1, beta2 } = options;
  for (let t = 1; t <= STEPS; t++) {
    const lr = 1e-2 * (1 - t / 10); // a decaying schedule: stepInfo changes every step
    const g = tensors.map((x) => rng.normals(x.init.length));
    g.forEach((d, i) => gpu.write(grads[i], d));
    gpu.write(stepInfo, new Float32Array([lr, 1 - beta1 ** t, 1 - beta2 ** t, 0]));
    gpu.run(plan);
    const total = gradNormRef(g);
    const clipCoef = options.gradClip > 0 ? Math.min(1, options.gradClip / (total + 1e-6)) : 1;
    tensors.forEach((x, i) => {
      adamwStepRef(x.param, x.m, x.v, g[i], { ...options, lr, t, decay: x.decay, clipCoef });
    });
  }
  const got = await gpu.read(gpuState.flatMap((s) => [s.param, s.m, s.v]));
  arena.destroy();
  tensors.forEach((x, i) => {
    const [param, m, v] = got.slice(3 * i, 3 * i + 3);
    const name = `${label} [${x.shape}]${x.decay ? " decay" : ""}`;
    assertClose(param, x.param, TOL_PARAM, `param ${name}`);
    // Moments are scaled by their tensor's largest value: clipped gradients make them small.
    for (const [what, a, want] of [["m", m, x.m], ["v", v, x.v]] as const) {
      const top = want.reduce((s, y) => Math.max(s, Math.abs(y)), 0);
      const scaled = (arr: ArrayLike<number>) => Array.from(arr, (y) => y / top);
      assertClose(scaled(a), scaled(want), TOL_MOMENT, `${what} ${name}`);
    }
  });
}

Deno.test("adamw: 6 steps with clipping active (norm ≈ 35 > 1)", async () => {
  await checkSteps(OPTIONS, "clip 1");
});

Deno.test("adamw: 6 steps with clipping inactive (norm ≈ 35 < 100) and disabled (0)", async () => {
  await checkSteps({ ...OPTIONS, gradClip: 100 }, "clip 100");
  await checkSteps({ ...OPTIONS, gradClip: 0 }, "no clip");
});

Deno.test("adamw: other hyper-parameters (beta1 0.8, beta2 0.95, eps 1e-3, weight decay 0.5)", async () => {
  await checkSteps({ beta1: 0.8, beta2: 0.95, eps: 1e-3, weightDecay: 0.5, gradClip: 2 }, "other");
});

Deno.test("gradNorm and adamw: reject shapes that do not fit", () => {
  const arena = new Arena(gpu);
  const [p, four, one] = [arena.poisoned([3, 4]), arena.poisoned([4]), arena.poisoned([1])];
  assert.throws(() => gradNorm(gpu, [p, p], one, one), /partials\[1\] has no room for 2/);
  assert.throws(() => gradNorm(gpu, [], one, one), /no gradients/);
  assert.throws(
    () => adamw(gpu, p, arena.poisoned([12]), p, p, four, one, OPTIONS, true),
    /grad\[12\]/,
  );
  assert.throws(
    () => adamw(gpu, p, p, p, arena.poisoned([4, 3]), four, one, OPTIONS, true),
    /v\[4,3\]/,
  );
  assert.throws(() => adamw(gpu, p, p, p, p, one, one, OPTIONS, true), /stepInfo\[1\]/);
  arena.destroy();
});

/** torch's training reference (tiny-gpt2): in the repository's data, or the shared fixtures. */
async function trainReference(): Promise<string | undefined> {
  for (const dir of ["data/tiny-gpt2", "../shared/parity/tiny-gpt2"]) {
    const path = `${dir}/train_reference.safetensors`;
    try {
      await Deno.stat(path);
      return path;
    } catch {
      // not there: try the next
    }
  }
}

const torchReference = await trainReference();
Deno.test({
  name:
    "gradNorm: torch's 28 training-reference gradients: their float64 norm, torch's to its noise",
  ignore: torchReference === undefined,
  async fn() {
    const file = await SafetensorsFile.open(torchReference!);
    const names = [...file.tensors.keys()].filter((n) => n.startsWith("grad."));
    assert.equal(names.length, 28);
    const arena = new Arena(gpu);
    const grads = names.map((n) => arena.upload(file.f32(n), file.info(n).shape, n));
    const norm = arena.poisoned([1], "norm");
    gpu.run(gradNorm(gpu, grads, arena.poisoned([names.length], "partials"), norm));
    const got = (await gpu.read1(norm))[0];
    arena.destroy();
    const exact = gradNormRef(names.map((n) => file.f32(n)));
    const rel = Math.abs(got - exact) / exact;
    console.log(`  global norm ${got} vs float64 ${exact}: relative diff ${rel.toExponential(2)}`);
    assert.ok(rel <= TOL_NORM, `global norm ${got}, float64 ${exact}`);
    // torch's own f32 norm is itself ~4e-5 off here (its f32-vs-f64 noise: up to 1.1e-4).
    const torch = file.f32("step_grad_norms")[0];
    console.log(
      `  torch's f32 norm ${torch}: relative diff ${
        (Math.abs(got - torch) / torch).toExponential(2)
      }`,
    );
    assert.ok(Math.abs(got - torch) <= 2e-4, `global norm ${got}, torch ${torch}`);
  },
});
