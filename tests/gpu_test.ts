import assert from "node:assert/strict";
import {
  designFor,
  Gpu,
  isSoftwareAdapter,
  type KernelDesign,
  MAX_LOOP_TRIPS,
  type WebGpuImplementation,
} from "../kernels/gpu.ts";

Deno.test("no adapter: the error says how to get one", async () => {
  const gpu = navigator.gpu;
  const original = gpu.requestAdapter;
  Object.defineProperty(gpu, "requestAdapter", {
    value: () => Promise.resolve(null),
    configurable: true,
  });
  try {
    await assert.rejects(Gpu.open(), /No WebGPU adapter[\s\S]*mesa-vulkan-drivers/);
  } finally {
    Object.defineProperty(gpu, "requestAdapter", { value: original, configurable: true });
  }
});

Deno.test("the adapter is described in one line with its optional features", async () => {
  const gpu = await Gpu.open();
  assert.doesNotMatch(gpu.description, /\n/);
  assert.match(gpu.description, /max binding \d+ MiB/);
  assert.equal(gpu.hasF16, gpu.device.features.has("shader-f16"));
  // The device gets the adapter's real binding limit, not WebGPU's default.
  assert.equal(gpu.maxBinding, gpu.adapter.limits.maxStorageBufferBindingSize);
  gpu.device.destroy();
});

Deno.test("read() returns each tensor and tracks allocated bytes", async () => {
  const gpu = await Gpu.open();
  const before = gpu.bytesAllocated;
  const a = gpu.upload(new Float32Array([1, 2, 3]), [3], "a");
  const b = gpu.upload(new Uint32Array([7, 8]), [2], "b");
  const [ra, rb] = await gpu.read([a, b]);
  assert.deepEqual([...ra], [1, 2, 3]);
  assert.deepEqual([...new Uint32Array(rb.buffer)], [7, 8]);
  assert.ok(gpu.bytesAllocated > before);
  gpu.destroy(a);
  gpu.destroy(b);
  assert.equal(gpu.bytesAllocated, before);
  gpu.device.destroy();
});

Deno.test("designFor: software adapters get the cpu kernels, real GPUs the gpu kernels", () => {
  const info = (over: Partial<GPUAdapterInfo>) =>
    ({
      vendor: "",
      architecture: "",
      device: "",
      description: "",
      isFallbackAdapter: false,
      ...over,
    }) as GPUAdapterInfo;
  assert.equal(designFor(info({ description: "llvmpipe (LLVM 15.0.6, 256 bits)" })), "cpu");
  assert.equal(designFor(info({ vendor: "mesa", device: "lavapipe" })), "cpu");
  assert.equal(designFor(info({ isFallbackAdapter: true })), "cpu");
  assert.equal(designFor(info({ vendor: "nvidia", description: "NVIDIA H100 80GB HBM3" })), "gpu");
});

Deno.test("Gpu.open: the design can be chosen, and the description names it", async () => {
  const g = await Gpu.open({ design: "gpu" });
  assert.equal(g.design, "gpu");
  assert.equal(g.designReason, "asked for");
  assert.equal(g.webgpu, "deno");
  assert.match(g.description, /gpu kernels$/);
  g.close();
  const picked = await Gpu.open();
  assert.equal(picked.design, designFor(picked.adapter.info));
  assert.equal(picked.software, isSoftwareAdapter(picked.adapter.info));
  assert.match(picked.designReason, picked.software ? /^a software adapter/ : /^a GPU adapter/);
  picked.close();
  const named = await Gpu.open({ design: "cpu", designSource: "KVGPT_KERNELS=cpu" });
  assert.equal(named.designReason, "KVGPT_KERNELS=cpu");
  named.close();
});

Deno.test("Gpu.open: an unknown implementation or design is one line naming the choices", async () => {
  const webgpu = "metal" as WebGpuImplementation;
  await assert.rejects(
    Gpu.open({ webgpu }),
    /^Error: unknown WebGPU implementation "metal": expected deno or dawn$/,
  );
  const design = "tpu" as KernelDesign;
  await assert.rejects(
    Gpu.open({ design }),
    /^Error: unknown kernel design "tpu": expected cpu or gpu$/,
  );
});

Deno.test("loops: an invocation may iterate MAX_LOOP_TRIPS times in all, in one loop or several", async () => {
  // Mesa's llvmpipe and lavapipe end every loop of an invocation, silently, once its loops
  // have iterated 65,535 times in all; kvgpt's wrappers keep each invocation within
  // MAX_LOOP_TRIPS. Loops that stay within it run whole on any adapter: one of MAX_LOOP_TRIPS
  // iterations, two after each other, and a nested pair. Each counts what it read, so that no
  // compiler can fold the loops away. A workgroup each: the invocations that run as one SIMD
  // batch share llvmpipe's count.
  const code = `
    @group(0) @binding(0) var<storage, read> bounds: array<u32>;
    @group(0) @binding(1) var<storage, read_write> counts: array<u32>;
    fn one(i: u32) -> u32 { return u32(bounds[4u + i % 4u] == 1u); }
    @compute @workgroup_size(1)
    fn main(@builtin(workgroup_id) wg: vec3<u32>) {
      var c = 0u;
      if (wg.x == 0u) {
        for (var i = 0u; i < bounds[0]; i++) { c += one(i); }
      } else if (wg.x == 1u) {
        for (var i = 0u; i < bounds[1]; i++) { c += one(i); }
        for (var i = 0u; i < bounds[2]; i++) { c += one(i); }
      } else {
        for (var i = 0u; i < bounds[3]; i++) {
          for (var j = 0u; j < bounds[3]; j++) { c += one(j); }
        }
      }
      counts[wg.x] = c;
    }`;
  using gpu = await Gpu.open();
  // 250 x 250 iterations cost 250 x 252 of the count: each inner loop's exit counts too.
  const bounds = gpu.upload(new Uint32Array([MAX_LOOP_TRIPS, 32000, 33000, 250, 1, 1, 1, 1]), [
    8,
  ], "bounds");
  const counts = gpu.tensor([3], "counts");
  gpu.run([gpu.dispatch("loops", gpu.kernel(code, "main"), { bounds, counts }, [3])]);
  assert.deepEqual([...await gpu.readU32(counts)], [MAX_LOOP_TRIPS, 65000, 62500]);
});
