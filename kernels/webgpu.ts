/**
 * Where a Gpu's `navigator.gpu` comes from: the runtime's own WebGPU, or Dawn through
 * the npm package `webgpu` (kernels/dawn.ts), imported only when asked for; and what to say when
 * either gives no adapter.
 *
 * @module
 */
/**
 * The WebGPU implementation a Gpu runs on: `deno`, Deno's own `navigator.gpu` (wgpu,
 * whose WGSL compiler is naga); `dawn`, Chrome's (Dawn, whose WGSL compiler is Tint) through
 * the npm package `webgpu` (kernels/dawn.ts), loaded only when asked for.
 */
export type WebGpuImplementation = "deno" | "dawn";

/** The implementations Gpu.open knows. */
export const WEBGPU_IMPLEMENTATIONS: readonly WebGpuImplementation[] = ["deno", "dawn"];

/** Gpu.open found no adapter; the message says what to install. */
export class NoAdapterError extends Error {
  /** The implementation that found none. */
  readonly webgpu: WebGpuImplementation;

  constructor(webgpu: WebGpuImplementation, message: string) {
    super(message);
    this.name = "NoAdapterError";
    this.webgpu = webgpu;
  }
}

const HELP_NO_ADAPTER = [
  "No WebGPU adapter was found.",
  "kvgpt runs every kernel through WebGPU (Deno's navigator.gpu).",
  "On Linux without a GPU, install Mesa's software Vulkan driver (lavapipe):",
  "  sudo apt-get install -y mesa-vulkan-drivers",
  "or Mesa's OpenGL driver (llvmpipe): sudo apt-get install -y libgl1-mesa-dri libegl1.",
  "With a GPU, install its Vulkan driver.",
].join("\n");

const HELP_NO_DAWN_ADAPTER = "Dawn (npm webgpu) found no usable adapter: without a GPU, install " +
  "Debian's chromium (SwiftShader's Vulkan driver: sudo apt-get install -y chromium) and set " +
  "VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json and XDG_RUNTIME_DIR to a " +
  "writable folder; with a GPU, install its Vulkan driver (Dawn refuses Mesa's lavapipe)";

/** The `navigator.gpu` of an implementation, and what to call once its device is closed. */
export interface WebGpuEntry {
  gpu: GPU;
  release(): void;
}

/** The module that opens Dawn, named at run time so that a bundler leaves it out. */
const DAWN_MODULE = "./dawn.ts";

/**
 * The `navigator.gpu` of `webgpu`: Deno's own, or Dawn's (kernels/dawn.ts, imported here
 * only). Throws one line for an unknown name, a runtime without WebGPU, or Dawn not loading.
 */
export async function webGpuEntry(webgpu: WebGpuImplementation): Promise<WebGpuEntry> {
  if (webgpu === "deno") {
    if (!("gpu" in navigator) || !navigator.gpu) throw noAdapter(webgpu);
    return { gpu: navigator.gpu, release: () => {} };
  }
  if (webgpu !== "dawn") {
    throw new Error(
      `unknown WebGPU implementation "${webgpu}": expected ${WEBGPU_IMPLEMENTATIONS.join(" or ")}`,
    );
  }
  let dawn: { openDawn(): WebGpuEntry };
  try {
    dawn = await import(new URL(DAWN_MODULE, import.meta.url).href);
  } catch (e) {
    throw new Error(
      `Dawn could not be loaded (npm webgpu@0.6.2; it runs in Deno and Node, not in a page): ` +
        (e as Error).message.split("\n")[0],
    );
  }
  return dawn.openDawn();
}

/** The error for an implementation that gives no adapter, naming what to install. */
export function noAdapter(webgpu: WebGpuImplementation): NoAdapterError {
  return new NoAdapterError(webgpu, webgpu === "dawn" ? HELP_NO_DAWN_ADAPTER : HELP_NO_ADAPTER);
}
