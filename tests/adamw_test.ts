/**
 * adamwStep (the global gradient norm and one torch AdamW step with global-norm clipping, over
 * parameters laid out in one arena) against float64 references, over several steps, tensors,
 * chunkings and settings.
 */
import assert from "node:assert/strict";
import { type AdamWOptions, adamwPartials, adamwStep } from "../kernels/adamw.ts";
import { TensorArena } from "../kernels/arena.ts";
import type { Tensor } from "../kernels/gpu.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { adamwStepRef, gradNormRef } from "./cpu_reference.ts";
import { Arena, assertClose, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

/** Norms: |got - ref| <= TOL_NORM · ref (seen: 7.8e-8). */
const TOL_NORM = 1e-6;
/** Parameters after the steps: diff <= TOL_PARAM · max(1, |ref|) (seen: 4.4e-7). */
const TOL_PARAM = 1e-6;
/** Moments m and v: diff <= TOL_MOMENT · max(|ref|) of the tensor (seen: 1.4e-7). */
const TOL_MOMENT = 1e-6;

/** Parameters of `shapes` in one arena, with gradient and moment buffers of its layout. */
function arenaOf(init: Float32Array[], shapes: number[][], maxBytes = gpu.maxBinding) {
  const params = new TensorArena(gpu, "params");
  const views = init.map((d, i) => params.upload(d, shapes[i], `param ${i}`));
  params.allocate();
  const { whole } = params;
  const arena = new Arena(gpu);
  arena.add(whole);
  const [grad, m, v] = ["grad", "m", "v"].map((what) => arena.add(gpu.tensor(whole.shape, what)));
  const stepInfo = arena.poisoned([4], "stepInfo");
  const partials = arena.poisoned([adamwPartials(gpu, whole.shape[0], maxBytes)], "partials");
  const norm = arena.poisoned([1], "norm");
  const plan = (options: AdamWOptions) =>
    adamwStep(
      gpu,
      { param: whole, grad, m, v },
      stepInfo,
      partials,
      norm,
      options,
      params.matrixWords,
      maxBytes,
    );
  const at = (mirror: Tensor) => views.map((t) => TensorArena.at(mirror, t));
  return { arena, views, grads: at(grad), ms: at(m), vs: at(v), stepInfo, norm, plan };
}

/** Runs one step at lr 0 (parameters unchanged) and returns the norm it found. */
async function normOf(data: Float32Array[], shapes: number[][], maxBytes?: number) {
  const a = arenaOf(data.map((d) => new Float32Array(d.length)), shapes, maxBytes);
  data.forEach((d, i) => gpu.write(a.grads[i], d));
  gpu.write(a.stepInfo, new Float32Array([0, 0.1, 0.01, 0]));
  const plan = a.plan({ beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, gradClip: 1 });
  gpu.run(plan);
  const n1 = (await gpu.read1(a.norm))[0];
  gpu.run(plan);
  const n2 = (await gpu.read1(a.norm))[0];
  a.arena.destroy();
  return { n1, n2, dispatches: plan.length };
}

Deno.test("adamwStep: the global norm of tensors of odd sizes, deterministic, in 2 dispatches", async () => {
  const rng = new TestRng(3);
  const shapes = [[5], [1000], [3, 333], [70001], [1]];
  const data = shapes.map((s) => rng.normals(s.reduce((a, b) => a * b), 0.5));
  const { n1, n2, dispatches } = await normOf(data, shapes);
  assert.equal(dispatches, 2, "one sum of squares, one update");
  const want = gradNormRef(data);
  const rel = Math.abs(n1 - want) / want;
  console.log(`  global norm ${n1} vs ${want}: relative diff ${rel.toExponential(2)}`);
  assert.ok(rel <= TOL_NORM, `global norm ${n1}, expected ${want}`);
  assert.equal(n2, n1, "rerun gives the same bits");
});

Deno.test("adamwStep: an arena in chunks of 4 KiB bindings sums every chunk", async () => {
  const rng = new TestRng(4);
  const shapes = [[100, 37], [5000], [3]];
  const data = shapes.map((s) => rng.uniforms(s.reduce((a, b) => a * b), -1, 1));
  const { n1, dispatches } = await normOf(data, shapes, 4096);
  // 3,712 + 5,000 + 8 words (each padded to the alignment): 9 chunks of 1,024, twice.
  assert.equal(dispatches, 2 * Math.ceil(8720 / 1024));
  const want = gradNormRef(data);
  assert.ok(Math.abs(n1 - want) <= TOL_NORM * want, `global norm ${n1}, expected ${want}`);
});

const OPTIONS: AdamWOptions = { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, gradClip: 1 };

/**
 * STEPS AdamW steps of three tensors (the two matrices decayed) with fresh gradients N(0, 1)
 * each step (global norm ≈ 35) and a varying lr, on the GPU and in float64; compares params,
 * m and v. With `maxBytes`, the arena is updated in chunks of that many bytes.
 */
async function checkSteps(options: AdamWOptions, label: string, maxBytes?: number) {
  const STEPS = 6;
  const rng = new TestRng(11);
  const tensors = [
    { shape: [37], decay: false },
    { shape: [5, 41], decay: true },
    { shape: [10, 100], decay: true },
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
  const a = arenaOf(tensors.map((t) => t.init), tensors.map((t) => t.shape), maxBytes);
  const plan = a.plan(options);
  const { beta1, beta2 } = options;
  for (let t = 1; t <= STEPS; t++) {
    const lr = 1e-2 * (1 - t / 10); // a decaying schedule: stepInfo changes every step
    const g = tensors.map((x) => rng.normals(x.init.length));
    g.forEach((d, i) => gpu.write(a.grads[i], d));
    gpu.write(a.stepInfo, new Float32Array([lr, 1 - beta1 ** t, 1 - beta2 ** t, 0]));
    gpu.run(plan);
    const total = gradNormRef(g);
    const clipCoef = options.gradClip > 0 ? Math.min(1, options.gradClip / (total + 1e-6)) : 1;
    tensors.forEach((x, i) => {
      adamwStepRef(x.param, x.m, x.v, g[i], { ...options, lr, t, decay: x.decay, clipCoef });
    });
  }
  const got = await gpu.read(tensors.flatMap((_, i) => [a.views[i], a.ms[i], a.vs[i]]));
  a.arena.destroy();
  tensors.forEach((x, i) => {
    const [param, m, v] = got.slice(3 * i, 3 * i + 3);
    const name = `${label} [${x.shape}]${x.decay ? " decay" : ""}`;
    assertClose(param, x.param, TOL_PARAM, `param ${name}`);
    // Moments are scaled by their tensor's largest value: clipped gradients make them small.
    for (const [what, arr, want] of [["m", m, x.m], ["v", v, x.v]] as const) {
      const top = want.reduce((s, y) => Math.max(s, Math.abs(y)), 0);
      const scaled = (xs: ArrayLike<number>) => Array.from(xs, (y) => y / top);
      assertClose(scaled(arr), scaled(want), TOL_MOMENT, `${what} ${name}`);
    }
  });
}

Deno.test("adamw: 6 steps with clipping active (norm ≈ 35 > 1)", async () => {
  await checkSteps(OPTIONS, "clip 1");
});

Deno.test("adamw: 6 steps in chunks of 512 bytes (decay ends inside a chunk)", async () => {
  await checkSteps(OPTIONS, "chunks", 512);
});

Deno.test("adamw: 6 steps with clipping inactive (norm ≈ 35 < 100) and disabled (0)", async () => {
  await checkSteps({ ...OPTIONS, gradClip: 100 }, "clip 100");
  await checkSteps({ ...OPTIONS, gradClip: 0 }, "no clip");
});

Deno.test("adamw: other hyper-parameters (beta1 0.8, beta2 0.95, eps 1e-3, weight decay 0.5)", async () => {
  await checkSteps({ beta1: 0.8, beta2: 0.95, eps: 1e-3, weightDecay: 0.5, gradClip: 2 }, "other");
});

Deno.test("adamwStep: rejects buffers that do not fit", () => {
  const arena = new Arena(gpu);
  const [p, four, one] = [arena.poisoned([12]), arena.poisoned([4]), arena.poisoned([1])];
  const parts = arena.poisoned([64]);
  const step = (s: Partial<Record<"param" | "grad" | "m" | "v", Tensor>>, info = four, q = parts) =>
    adamwStep(gpu, { param: p, grad: p, m: p, v: p, ...s }, info, q, one, OPTIONS, 0);
  assert.throws(() => step({ grad: arena.poisoned([11]) }), /grad\[11\]/);
  assert.throws(() => step({ v: arena.poisoned([4, 4]) }), /v\[4,4\]/);
  assert.throws(() => step({}, one), /stepInfo\[1\]/);
  assert.throws(() => step({}, four, one), /partials\[1\] has no room for 64/);
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
    "adamwStep: torch's 28 training-reference gradients: their float64 norm, torch's to its noise",
  ignore: torchReference === undefined,
  async fn() {
    const file = await SafetensorsFile.open(torchReference!);
    const names = [...file.tensors.keys()].filter((n) => n.startsWith("grad."));
    assert.equal(names.length, 28);
    const data = names.map((n) => file.f32(n));
    const got = (await normOf(data, names.map((n) => [...file.info(n).shape]))).n1;
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
