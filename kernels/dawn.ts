/**
 * Dawn, Chrome's WebGPU (its WGSL compiler is Tint), for Deno and Node through the npm
 * package `webgpu`. {@link Gpu.open} imports this file only when `webgpu: "dawn"` is asked
 * for, by a name a bundler does not follow, so a page's bundle never pulls it in.
 *
 * @module
 */
// The full specifier, not an import-map name: the library may be imported from a project
// whose deno.json does not map "webgpu".
// deno-lint-ignore no-import-prefix
import { create, globals } from "npm:webgpu@0.6.2";

/**
 * Dawn's `navigator.gpu`, and `release`, to call once its device is destroyed. Dawn works on
 * threads of its own that Deno does not see: with nothing else pending, Deno would end the
 * process in the middle of a `mapAsync`. A timer stays pending from here to `release`.
 */
export function openDawn(): { gpu: GPU; release(): void } {
  // WebGPU's constant objects (GPUBufferUsage, …) where the runtime has none (Node); Deno's
  // own classes stay in place, so both implementations can be open in one process.
  for (const [name, value] of Object.entries(globals)) {
    if (!(name in globalThis)) Object.assign(globalThis, { [name]: value });
  }
  const gpu = create([]) as unknown as GPU;
  const keepAlive = setInterval(() => {}, 1000);
  return { gpu, release: () => clearInterval(keepAlive) };
}
