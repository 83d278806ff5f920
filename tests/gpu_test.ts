import assert from "node:assert/strict";
import { designFor, Gpu } from "../kernels/gpu.ts";

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
  assert.match(g.description, /gpu kernels$/);
});
