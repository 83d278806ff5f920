/**
 * The one place that reads kvgpt's environment variables, for the commands, experiments,
 * scripts and tests that run on this machine (the library below cli/ reads none, so that it
 * runs unchanged in a page):
 *
 * - `KVGPT_WEBGPU=deno|dawn`: the WebGPU implementation ({@link GpuOptions.webgpu});
 * - `KVGPT_KERNELS=cpu|gpu`: the kernel design ({@link GpuOptions.design});
 * - `KVGPT_DECODE=general|fused`: the decode path ({@link RunnerOptions.decode}).
 *
 * Each is read only where the environment may be read already, so a plain `deno run` asks no
 * question. A bad value is an error naming the variable.
 *
 * Dawn without `VK_ICD_FILENAMES`: when Dawn finds no adapter through the system's Vulkan
 * drivers (Dawn refuses Mesa's lavapipe) and Debian's chromium provides SwiftShader's driver
 * ({@link SWIFTSHADER_ICD}), {@link openGpu} points Vulkan at it and tries once more. Any
 * GPU driver that Dawn accepts is found first; a `VK_ICD_FILENAMES` that is set is left alone.
 * The variable stays pointed at SwiftShader ({@link SET_FOR_DAWN} marks it as kvgpt's) until
 * {@link openGpu} opens Deno's WebGPU, which would run on SwiftShader too: then it is cleared.
 * Clearing it as soon as Dawn had opened would race: `deno test --parallel` runs test files at
 * the same time in one process, and another file's Dawn may be opening just then.
 *
 * @module
 */
import { Gpu, type GpuOptions, NoAdapterError, WEBGPU_IMPLEMENTATIONS } from "../kernels/gpu.ts";
import type { WebGpuImplementation } from "../kernels/gpu.ts";
import type { DecodePath, RunnerOptions } from "../run/runner.ts";

/** SwiftShader's Vulkan driver as Debian's `chromium` package installs it. */
export const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json";

/**
 * Where the variables are read: the process environment ({@link processEnv}), or, in a test,
 * a plain map, so that no test changes the environment that other test files, running at the
 * same time in the same process (`deno test --parallel`), read.
 */
export type EnvReader = (name: string) => string | undefined;

// Whether `variable` may be read and set already (a plain `deno run` asks nothing).
const may = (variable: string) =>
  Deno.permissions.querySync({ name: "env", variable }).state === "granted";

/** The process environment, where it may be read already (a plain `deno run` asks nothing). */
export const processEnv: EnvReader = (name) => may(name) ? Deno.env.get(name) : undefined;

// `name`'s value if it is one of `allowed`, null when unset; else an error naming it.
function oneOf<T extends string>(env: EnvReader, name: string, allowed: readonly T[]): T | null {
  const value = env(name) || null;
  if (value === null) return null;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new Error(`${name}: expected ${allowed.join(" or ")}, got "${value}"`);
}

/** The GPU options the environment sets: KVGPT_WEBGPU and KVGPT_KERNELS. */
export function gpuOptionsFromEnv(env: EnvReader = processEnv): GpuOptions {
  const options: GpuOptions = {};
  const webgpu = oneOf<WebGpuImplementation>(env, "KVGPT_WEBGPU", WEBGPU_IMPLEMENTATIONS);
  if (webgpu) options.webgpu = webgpu;
  const design = oneOf(env, "KVGPT_KERNELS", ["cpu", "gpu"] as const);
  if (design) {
    options.design = design;
    options.designSource = `KVGPT_KERNELS=${design}`;
  }
  return options;
}

/** The model options the environment sets: KVGPT_DECODE. */
export function modelOptionsFromEnv(env: EnvReader = processEnv): RunnerOptions {
  const decode = oneOf<DecodePath>(env, "KVGPT_DECODE", ["general", "fused"]);
  return decode ? { decode, decodeSource: `KVGPT_DECODE=${decode}` } : {};
}

/**
 * Set beside the `VK_ICD_FILENAMES` that {@link openGpu} set for Dawn, so that the variable is
 * known to be kvgpt's to clear, in this process and in the children it starts.
 */
export const SET_FOR_DAWN = "KVGPT_VK_ICD_FILENAMES_FOR_DAWN";

/**
 * Opens the GPU with `options` over what the environment sets ({@link gpuOptionsFromEnv});
 * for Dawn, falls back to SwiftShader's driver as the module text says.
 */
export async function openGpu(options: GpuOptions = {}): Promise<Gpu> {
  const merged = { ...gpuOptionsFromEnv(), ...options };
  if ((merged.webgpu ?? "deno") === "deno") clearSwiftShader();
  try {
    return await Gpu.open(merged);
  } catch (e) {
    if (!(e instanceof NoAdapterError) || e.webgpu !== "dawn" || !useSwiftShader()) throw e;
    return await Gpu.open(merged);
  }
}

// Points Vulkan at SwiftShader's driver where VK_ICD_FILENAMES is unset (or already points there
// for Dawn: another test file of this process set it while this one was asking) and the driver
// is installed; says whether it does.
function useSwiftShader(): boolean {
  if (![SET_FOR_DAWN, "VK_ICD_FILENAMES", "XDG_RUNTIME_DIR"].every(may)) return false;
  const current = Deno.env.get("VK_ICD_FILENAMES");
  if (current) return current === SWIFTSHADER_ICD && Deno.env.get(SET_FOR_DAWN) === "1";
  if (Deno.permissions.querySync({ name: "read", path: SWIFTSHADER_ICD }).state !== "granted") {
    return false;
  }
  try {
    Deno.statSync(SWIFTSHADER_ICD);
  } catch {
    return false;
  }
  Deno.env.set(SET_FOR_DAWN, "1");
  Deno.env.set("VK_ICD_FILENAMES", SWIFTSHADER_ICD);
  return true;
}

// Before Deno's WebGPU opens: unsets the VK_ICD_FILENAMES that useSwiftShader set, which would
// put Deno's WebGPU on SwiftShader too.
function clearSwiftShader(): void {
  if (![SET_FOR_DAWN, "VK_ICD_FILENAMES"].every(may)) return;
  if (Deno.env.get(SET_FOR_DAWN) !== "1") return;
  Deno.env.delete(SET_FOR_DAWN);
  if (Deno.env.get("VK_ICD_FILENAMES") === SWIFTSHADER_ICD) Deno.env.delete("VK_ICD_FILENAMES");
}
