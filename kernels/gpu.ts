/**
 * The one place that talks to WebGPU: adapter and device, buffers, pipelines, bind groups,
 * submission and read-back. Kernel wrappers build {@link Dispatch}es with it; the model
 * records them into a {@link Plan} and runs it.
 *
 * @module
 */
import { noAdapter, type WebGpuEntry, webGpuEntry, type WebGpuImplementation } from "./webgpu.ts";

/** A dense f32 (or u32) array on the GPU: `shape` elements starting `offset` bytes in. */
export interface Tensor {
  readonly buffer: GPUBuffer;
  readonly offset: number;
  readonly shape: readonly number[];
}

/** CPU-side data for a tensor. */
export type HostArray = Float32Array | Uint32Array;

/** Number of elements of a tensor. */
export function numel(t: { shape: readonly number[] }): number {
  return t.shape.reduce((a, b) => a * b, 1);
}

/** One compute dispatch, ready to encode. */
export interface Dispatch {
  readonly label: string;
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly workgroups: readonly [number, number, number];
}

/** A buffer-to-buffer copy recorded between dispatches (e.g. to keep a hidden state). */
export interface Copy {
  readonly label: string;
  readonly from: Tensor;
  readonly to: Tensor;
}

/** Zeroes a tensor between dispatches (e.g. a gradient that kernels then add into). */
export interface Clear {
  readonly label: string;
  readonly clear: Tensor;
}

/** A recorded sequence of GPU work, run as one submission. */
export type Plan = (Dispatch | Copy | Clear)[];

/** What a binding of a kernel receives: a tensor, a whole buffer, or a texture's view. */
export type Binding = Tensor | GPUBuffer | GPUTextureView;

/** A dispatch's bindings, by the names of the kernel's WGSL variables. */
export type Bindings = Readonly<Record<string, Binding>>;

/** A compiled entry point and the binding number of each of its source's variables. */
export interface Kernel {
  readonly entry: string;
  readonly pipeline: GPUComputePipeline;
  readonly slots: ReadonlyMap<string, number>;
}

// `@group(0) @binding(N) var<...> name` -> name => N
function bindingSlots(code: string): Map<string, number> {
  const slots = new Map<string, number>();
  for (const m of code.matchAll(/@binding\((\d+)\)\s*var(?:<[^>]*>)?\s+(\w+)/g)) {
    slots.set(m[2], Number(m[1]));
  }
  return slots;
}

/** Options for {@link Gpu.run}. */
export interface RunOptions {
  /** Time every dispatch with GPU timestamps; read them with {@link Gpu.readProfile}. */
  profile?: boolean;
}

/** GPU time of one dispatch, from timestamps written around it. */
export interface KernelTime {
  /** The dispatch's label, e.g. `matmul 1x768x2304`. */
  readonly label: string;
  /** Nanoseconds between its start and end timestamps. */
  readonly ns: number;
}

// Timestamps of one profiled submission, waiting to be read.
interface PendingProfile {
  labels: string[];
  querySet: GPUQuerySet;
  resolved: GPUBuffer;
  staging: GPUBuffer;
}

/** Most timestamps in one query set (WebGPU's limit). */
const MAX_QUERIES = 4096;

export { NoAdapterError, WEBGPU_IMPLEMENTATIONS, type WebGpuImplementation } from "./webgpu.ts";

/**
 * The family of kernel designs a device gets. `cpu`, for software adapters (llvmpipe,
 * lavapipe, SwiftShader, WARP), where reads cost more than arithmetic and barriers are slow:
 * large register tiles per invocation and no workgroup memory. `gpu`, for real GPUs:
 * workgroup-memory tiles shared by 256 invocations, and matrix-vector products whose
 * workgroups read each weight row together and reduce in workgroup memory.
 */
export type KernelDesign = "cpu" | "gpu";

/** Options for {@link Gpu.open}. */
export interface GpuOptions {
  /** Ask for a high-performance or low-power adapter. */
  powerPreference?: GPUPowerPreference;
  /** The WebGPU implementation; default `deno` (the runtime's own `navigator.gpu`). */
  webgpu?: WebGpuImplementation;
  /** Kernel designs to use; default: `cpu` on a software adapter, `gpu` otherwise. */
  design?: KernelDesign;
  /** What chose `design`, for {@link Gpu.designReason}; default "asked for". */
  designSource?: string;
}

/**
 * Whether an adapter is a software rasterizer that runs WGSL on the CPU (llvmpipe,
 * lavapipe, SwiftShader, WARP, or any adapter that calls itself a fallback).
 */
export function isSoftwareAdapter(info: GPUAdapterInfo): boolean {
  const name = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  return info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|warp/i.test(name);
}

/** The design suited to an adapter: software rasterizers run WGSL on the CPU. */
export function designFor(info: GPUAdapterInfo): KernelDesign {
  return isSoftwareAdapter(info) ? "cpu" : "gpu";
}

/** The GPU device and everything that allocates on it. */
export class Gpu {
  /** One line naming the adapter, its backend features and binding limit. */
  readonly description: string;
  /** Whether WGSL `f16` is available (`shader-f16`). */
  readonly hasF16: boolean;
  /** Whether `timestamp-query` is available. */
  readonly hasTimestamps: boolean;
  /** Largest storage-buffer binding, in bytes. */
  readonly maxBinding: number;
  /** Required alignment of a storage binding's offset, in bytes. */
  readonly bindingAlignment: number;
  /** Bytes of live buffers created through this object. */
  bytesAllocated = 0;
  /** The kernel designs this device uses. */
  readonly design: KernelDesign;
  /** Why: asked for (and by what), or what the adapter is. */
  readonly designReason: string;
  /** The WebGPU implementation the device comes from. */
  readonly webgpu: WebGpuImplementation;
  /** Whether the adapter runs WGSL on the CPU (see {@link isSoftwareAdapter}). */
  readonly software: boolean;

  #kernels = new Map<string, Kernel>();
  #modules = new Map<string, GPUShaderModule>();
  #uniforms = new Map<string, GPUBuffer>();
  #unused = new Map<string, Tensor>();
  #errors: string[] = [];
  #profiles: PendingProfile[] = [];
  /** Buffers already freed by {@link Gpu.destroy}: freeing one twice changes nothing. */
  #destroyed = new WeakSet<GPUBuffer>();
  /** Whether an empty submission is queued to return freed buffers' memory. */
  #releaseQueued = false;
  #closed = false;
  /**
   * Where the adapter came from, held as long as the device: Dawn's objects crash the
   * process (segfault in mapAsync) once its `navigator.gpu` object has been garbage-collected.
   */
  #source: WebGpuEntry;

  private constructor(
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    entry: WebGpuEntry,
    webgpu: WebGpuImplementation,
    options: GpuOptions,
  ) {
    const info = adapter.info;
    this.#source = entry;
    this.webgpu = webgpu;
    this.software = isSoftwareAdapter(info);
    const design = this.design = options.design ?? designFor(info);
    this.designReason = options.design
      ? options.designSource ?? "asked for"
      : this.software
      ? "a software adapter, which runs WGSL on the CPU"
      : "a GPU adapter";
    const name = info.description || `${info.vendor} ${info.device}`.trim() || "unknown adapter";
    this.hasF16 = device.features.has("shader-f16");
    this.hasTimestamps = device.features.has("timestamp-query");
    this.maxBinding = device.limits.maxStorageBufferBindingSize;
    this.bindingAlignment = device.limits.minStorageBufferOffsetAlignment;
    const feats = [this.hasF16 ? "shader-f16" : "", this.hasTimestamps ? "timestamp-query" : ""]
      .filter(Boolean).join(", ") || "no optional features";
    const via = webgpu === "dawn" ? " via Dawn" : "";
    this.description = `${name}${info.isFallbackAdapter ? " (software)" : ""}${via}; ` +
      `${feats}; max binding ${(this.maxBinding / 2 ** 20).toFixed(0)} MiB; ${design} kernels`;
    device.addEventListener("uncapturederror", (e) => {
      this.#errors.push((e as GPUUncapturedErrorEvent).error.message);
    });
  }

  /**
   * Acquires an adapter and a device with the adapter's real limits, from the WebGPU
   * implementation `options.webgpu` names (default Deno's own). Reads no environment: the
   * commands' KVGPT_* variables are read by cli/env_options.ts.
   */
  static async open(options: GpuOptions = {}): Promise<Gpu> {
    const webgpu = options.webgpu ?? "deno";
    if (options.design !== undefined && options.design !== "cpu" && options.design !== "gpu") {
      throw new Error(`unknown kernel design "${options.design}": expected cpu or gpu`);
    }
    const entry = await webGpuEntry(webgpu);
    let adapter: GPUAdapter | null = null;
    try {
      adapter = await entry.gpu.requestAdapter({
        powerPreference: options.powerPreference ?? "high-performance",
      });
    } finally {
      if (!adapter) entry.release();
    }
    if (!adapter) {
      throw noAdapter(webgpu);
    }
    const wanted: GPUFeatureName[] = ["shader-f16", "timestamp-query"];
    const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
    const l = adapter.limits;
    const device = await adapter.requestDevice({
      requiredFeatures,
      requiredLimits: {
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxBufferSize: l.maxBufferSize,
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
        maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
        maxTextureDimension2D: l.maxTextureDimension2D,
      },
    });
    return new Gpu(adapter, device, entry, webgpu, options);
  }

  /** Allocates a zero-filled tensor of `shape` 4-byte elements. */
  tensor(shape: readonly number[], label: string): Tensor {
    const bytes = Math.max(4, numel({ shape }) * 4);
    const buffer = this.device.createBuffer({
      label,
      size: Math.ceil(bytes / 16) * 16,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.bytesAllocated += buffer.size;
    return { buffer, offset: 0, shape };
  }

  /**
   * A small tensor, one per `label` and device, that stands in for a binding a kernel names
   * but does not use in this dispatch (never read, or written only where unused). It lives as
   * long as the device and is not counted in {@link Gpu.bytesAllocated}.
   */
  unused(label: string): Tensor {
    let t = this.#unused.get(label);
    if (!t) {
      t = this.tensor([4], label);
      this.bytesAllocated -= t.buffer.size;
      this.#unused.set(label, t);
    }
    return t;
  }

  /** Allocates a tensor holding `data`. */
  upload(data: HostArray, shape: readonly number[], label: string): Tensor {
    if (data.length !== numel({ shape })) {
      throw new Error(`${label}: ${data.length} values for shape [${shape}]`);
    }
    const t = this.tensor(shape, label);
    this.write(t, data);
    return t;
  }

  /** Overwrites the start of a tensor with `data`. */
  write(t: Tensor, data: HostArray, elementOffset = 0): void {
    // Typed arrays here never view a SharedArrayBuffer.
    const view = data as Float32Array<ArrayBuffer>;
    this.device.queue.writeBuffer(t.buffer, t.offset + elementOffset * 4, view);
  }

  /**
   * Frees a tensor's buffer (only for tensors that own their whole buffer); a second call for
   * the same buffer does nothing. The memory returns at once: the driver releases destroyed
   * buffers only at the next submission, so one empty submission follows every batch of
   * destroys (in a microtask, before the caller's next await).
   */
  destroy(t: Tensor): void {
    if (this.#destroyed.has(t.buffer)) return;
    this.#destroyed.add(t.buffer);
    this.bytesAllocated -= t.buffer.size;
    t.buffer.destroy();
    if (this.#releaseQueued) return;
    this.#releaseQueued = true;
    queueMicrotask(() => {
      this.#releaseQueued = false;
      if (!this.#closed) this.device.queue.submit([]);
    });
  }

  /** The device's limits (workgroup memory, bindings per stage, texture size, …). */
  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /**
   * Allocates a `width` × `height` texture of 16-byte texels (four f32, or four u32) that
   * kernels read through `textureLoad`, counted in {@link Gpu.bytesAllocated}; filled by
   * {@link Gpu.copyToTexture}, freed by {@link Gpu.destroyTexture}.
   */
  texture(
    width: number,
    height: number,
    format: "rgba32float" | "rgba32uint",
    label: string,
  ): GPUTexture {
    const texture = this.device.createTexture({
      label,
      size: [width, height],
      format,
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
    });
    this.bytesAllocated += width * height * 16;
    return texture;
  }

  /**
   * Copies the first `texels` 16-byte texels of `source` into `texture` row by row (after
   * whatever filled `source`, on the same queue): whole rows, then the last part, in one
   * submission.
   */
  copyToTexture(source: Tensor, texture: GPUTexture, texels: number): void {
    const width = texture.width;
    const rows = Math.floor(texels / width);
    const rest = texels - rows * width;
    const enc = this.device.createCommandEncoder();
    const from = { buffer: source.buffer, offset: source.offset, bytesPerRow: width * 16 };
    if (rows) enc.copyBufferToTexture(from, { texture }, [width, rows]);
    if (rest) {
      enc.copyBufferToTexture(
        { ...from, offset: source.offset + rows * width * 16 },
        { texture, origin: [0, rows] },
        [rest, 1],
      );
    }
    this.device.queue.submit([enc.finish()]);
  }

  /** Frees a texture made by {@link Gpu.texture}. */
  destroyTexture(texture: GPUTexture): void {
    this.bytesAllocated -= texture.width * texture.height * 16;
    texture.destroy();
  }

  /**
   * Frees the device and what this object cached on it (pipelines, uniforms); buffers not
   * destroyed yet go with it. The Gpu cannot be used afterwards. Called by `using`.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const buffer of this.#uniforms.values()) buffer.destroy();
    this.#uniforms.clear();
    for (const t of this.#unused.values()) t.buffer.destroy();
    this.#unused.clear();
    this.#kernels.clear();
    this.#modules.clear();
    this.device.destroy();
    this.#source.release();
  }

  /** {@link Gpu.close}, for `using gpu = await Gpu.open()`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Reads tensors back to the CPU with a single wait. */
  async read(tensors: readonly Tensor[]): Promise<Float32Array[]> {
    const sizes = tensors.map((t) => numel(t) * 4);
    const total = sizes.reduce((a, b) => a + b, 0);
    const staging = this.device.createBuffer({
      size: Math.max(16, Math.ceil(total / 16) * 16),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = this.device.createCommandEncoder();
    let at = 0;
    tensors.forEach((t, i) => {
      if (sizes[i] > 0) enc.copyBufferToBuffer(t.buffer, t.offset, staging, at, sizes[i]);
      at += sizes[i];
    });
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const all = new Float32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    this.throwErrors();
    at = 0;
    return sizes.map((s) => all.slice(at / 4, (at += s) / 4));
  }

  /** Reads one tensor back. */
  async read1(t: Tensor): Promise<Float32Array> {
    return (await this.read([t]))[0];
  }

  /** Reads u32 tensors back with a single wait. */
  async readU32s(tensors: readonly Tensor[]): Promise<Uint32Array[]> {
    return (await this.read(tensors)).map((f) => new Uint32Array(f.buffer));
  }

  /** Reads a u32 tensor back. */
  async readU32(t: Tensor): Promise<Uint32Array> {
    return (await this.readU32s([t]))[0];
  }

  /** Waits until all submitted work is done. */
  async sync(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    this.throwErrors();
  }

  /**
   * The kernel `entry` of WGSL `code`, compiled once per set of override `constants`, with
   * the names of its `@group(0) @binding(N)` variables as written in the source.
   */
  kernel(code: string, entry: string, constants: Record<string, number> = {}): Kernel {
    const key = `${entry}|${JSON.stringify(constants)}|${code}`;
    let k = this.#kernels.get(key);
    if (!k) {
      let module = this.#modules.get(code);
      if (!module) {
        module = this.device.createShaderModule({ code });
        this.#modules.set(code, module);
      }
      const pipeline = this.device.createComputePipeline({
        label: entry,
        layout: "auto",
        compute: { module, entryPoint: entry, constants },
      });
      k = { entry, pipeline, slots: bindingSlots(code) };
      this.#kernels.set(key, k);
    }
    return k;
  }

  /** A small read-only uniform buffer of u32/f32 words, shared between equal contents. */
  uniform(words: readonly number[] | Uint32Array): GPUBuffer {
    const data = new Uint32Array(words);
    const key = data.join(",");
    let buf = this.#uniforms.get(key);
    if (!buf) {
      buf = this.device.createBuffer({
        size: Math.max(16, Math.ceil(data.byteLength / 16) * 16),
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      this.device.queue.writeBuffer(buf, 0, data);
      this.#uniforms.set(key, buf);
    }
    return buf;
  }

  /**
   * Builds a dispatch of `kernel` over `workgroups`, binding each of `bindings` to the
   * kernel's variable of that name. Give exactly the variables the entry point uses.
   */
  dispatch(
    label: string,
    kernel: Kernel,
    bindings: Bindings,
    workgroups: readonly number[],
  ): Dispatch {
    const entries = Object.entries(bindings).map(([name, b]) => {
      const binding = kernel.slots.get(name);
      if (binding === undefined) {
        throw new Error(`${label}: ${kernel.entry} has no binding named "${name}"`);
      }
      return this.#entry(label, name, binding, b);
    });
    const bindGroup = this.device.createBindGroup({
      label,
      layout: kernel.pipeline.getBindGroupLayout(0),
      entries,
    });
    const [x, y = 1, z = 1] = workgroups;
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new Error(`${label}: ${x}x${y}x${z} workgroups exceed ${max} per dimension`);
    }
    return { label, pipeline: kernel.pipeline, bindGroup, workgroups: [x, y, z] };
  }

  #entry(label: string, name: string, binding: number, b: Binding): GPUBindGroupEntry {
    // Told apart by their members, not by class: Dawn's objects are not Deno's GPUBuffer.
    if ("mapAsync" in b) return { binding, resource: { buffer: b } };
    if (!("shape" in b)) return { binding, resource: b };
    if (b.offset % this.bindingAlignment !== 0) {
      throw new Error(`${label}: binding ${name} offset ${b.offset} is not aligned`);
    }
    const size = Math.max(4, numel(b) * 4);
    return { binding, resource: { buffer: b.buffer, offset: b.offset, size } };
  }

  /**
   * Encodes a plan into one command buffer and submits it. With `profile`, every dispatch
   * runs in its own compute pass that writes a GPU timestamp at its start and end (needs
   * {@link Gpu.hasTimestamps}); {@link Gpu.readProfile} returns the times.
   */
  run(plan: Plan, options: RunOptions = {}): void {
    if (options.profile) return this.#runProfiled(plan);
    const enc = this.device.createCommandEncoder();
    let pass: GPUComputePassEncoder | null = null;
    for (const step of plan) {
      if ("pipeline" in step) {
        pass ??= enc.beginComputePass();
        pass.setPipeline(step.pipeline);
        pass.setBindGroup(0, step.bindGroup);
        pass.dispatchWorkgroups(...step.workgroups);
      } else {
        pass?.end();
        pass = null;
        copy(enc, step);
      }
    }
    pass?.end();
    this.device.queue.submit([enc.finish()]);
  }

  /**
   * GPU time of every dispatch run with `profile` since the last call, in plan order, from
   * the timestamps written at the start and end of its compute pass.
   */
  async readProfile(): Promise<KernelTime[]> {
    const times: KernelTime[] = [];
    for (const p of this.#profiles.splice(0)) {
      await p.staging.mapAsync(GPUMapMode.READ);
      const ticks = new BigUint64Array(p.staging.getMappedRange().slice(0));
      p.labels.forEach((label, i) => {
        times.push({ label, ns: Number(ticks[2 * i + 1] - ticks[2 * i]) });
      });
      p.staging.destroy();
      p.resolved.destroy();
      p.querySet.destroy();
    }
    this.throwErrors();
    return times;
  }

  #runProfiled(plan: Plan): void {
    if (!this.hasTimestamps) {
      throw new Error(`profiling needs the timestamp-query feature; ${this.description}`);
    }
    const labels = plan.filter((s) => "pipeline" in s).map((s) => s.label);
    const count = 2 * labels.length;
    if (count === 0) return this.run(plan);
    if (count > MAX_QUERIES) {
      throw new Error(`profiling: ${labels.length} dispatches, at most ${MAX_QUERIES / 2}`);
    }
    const querySet = this.device.createQuerySet({ type: "timestamp", count });
    const resolved = this.device.createBuffer({
      size: count * 8,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const staging = this.device.createBuffer({
      size: count * 8,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = this.device.createCommandEncoder();
    let i = 0;
    for (const step of plan) {
      if (!("pipeline" in step)) {
        copy(enc, step);
        continue;
      }
      const pass = enc.beginComputePass({
        timestampWrites: {
          querySet,
          beginningOfPassWriteIndex: 2 * i,
          endOfPassWriteIndex: 2 * i++ + 1,
        },
      });
      pass.setPipeline(step.pipeline);
      pass.setBindGroup(0, step.bindGroup);
      pass.dispatchWorkgroups(...step.workgroups);
      pass.end();
    }
    enc.resolveQuerySet(querySet, 0, count, resolved, 0);
    enc.copyBufferToBuffer(resolved, 0, staging, 0, count * 8);
    this.device.queue.submit([enc.finish()]);
    this.#profiles.push({ labels, querySet, resolved, staging });
  }

  /** Throws if the device reported a validation or out-of-memory error. */
  throwErrors(): void {
    if (this.#errors.length) {
      const msg = this.#errors.splice(0).join("\n");
      throw new Error(`WebGPU error: ${msg}`);
    }
  }
}

// Encodes a copy or a clear (between compute passes).
function copy(enc: GPUCommandEncoder, step: Copy | Clear): void {
  if ("clear" in step) {
    const t = step.clear;
    return enc.clearBuffer(t.buffer, t.offset, numel(t) * 4);
  }
  const bytes = numel(step.from) * 4;
  enc.copyBufferToBuffer(step.from.buffer, step.from.offset, step.to.buffer, step.to.offset, bytes);
}

/**
 * Workgroups of `size` covering `n` items on a 2-D grid: x up to 65535, then rows of y;
 * kernels recover the item as `gid.y * 65535 * size + gid.x`.
 */
export function workgrid(n: number, size: number): [number, number, number] {
  const g = groups(n, size);
  return g <= 65535 ? [g, 1, 1] : [65535, Math.ceil(g / 65535), 1];
}

/** The bit pattern of an f32, to pass floats in a u32 uniform. */
export function f32bits(v: number): number {
  return new Uint32Array(new Float32Array([v]).buffer)[0];
}

/**
 * Loop iterations an invocation may run, all its loops together, on Mesa's llvmpipe and
 * lavapipe: once an invocation's loops have iterated 65,535 times in all, each loop it is
 * in or enters exits at once, silently (gallivm's LP_MAX_TGSI_LOOP_ITERATIONS, in the Vulkan
 * and the GL driver alike). The invocations of one SIMD batch (8 of them at 256 bits) share
 * the count, each loop counting as often as its longest-running lane; small constant loops
 * that the compiler unrolls do not count. Kernels keep every invocation under it at the
 * shapes they serve, and their wrappers refuse the shapes that would pass it
 * ({@link checkLoopTrips}), on every adapter alike.
 */
export const MAX_LOOP_TRIPS = 65535;

/**
 * Throws unless `trips`, the most loop iterations one invocation of a kernel runs at the
 * shape that `what` names, stays within {@link MAX_LOOP_TRIPS}.
 */
export function checkLoopTrips(what: string, trips: number): void {
  if (trips > MAX_LOOP_TRIPS) {
    throw new Error(
      `${what}: up to ${trips} loop iterations in one invocation, past the ${MAX_LOOP_TRIPS} ` +
        `that Mesa's llvmpipe runs`,
    );
  }
}

/** Number of workgroups of `size` needed to cover `n` items. */
export function groups(n: number, size: number): number {
  return Math.max(1, Math.ceil(n / size));
}
