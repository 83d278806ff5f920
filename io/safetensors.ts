/**
 * Reader and writer for the safetensors format.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON header
 * `{ "<name>": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..} }`,
 * then the data section; offsets are bytes relative to the start of the data section.
 *
 * The reader validates the whole header up front, so a file that opens is safe to read.
 *
 * @module
 */

/** Element types of the safetensors format that this module knows. */
export type DType =
  | "F32"
  | "F16"
  | "BF16"
  | "I32"
  | "I64"
  | "U8"
  | "BOOL"
  | "F64"
  | "I8"
  | "I16"
  | "U16"
  | "U32"
  | "U64";

/** Bytes per element of each dtype. */
const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  I32: 4,
  I64: 8,
  U8: 1,
  BOOL: 1,
  F64: 8,
  I8: 1,
  I16: 2,
  U16: 2,
  U32: 4,
  U64: 8,
};

/** Same cap on the header length as the reference Rust implementation. */
const MAX_HEADER_BYTES = 100_000_000;

/** The key of the string→string metadata entry in the header. */
const METADATA_KEY = "__metadata__";

// Typed-array views below read and write host byte order; the format is little-endian.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("io/safetensors.ts needs a little-endian host");
}

/** Error for a malformed safetensors file or a bad request; names the file. */
export class SafetensorsError extends Error {
  /** @param message Full message, starting with the source path. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SafetensorsError";
  }
}

/** Where one tensor lives in a file. */
export interface TensorInfo {
  /** Tensor name (header key). */
  name: string;
  /** Element type. */
  dtype: DType;
  /** Dimensions, outermost first; `[]` is a scalar. */
  shape: number[];
  /** First byte, relative to the start of the data section. */
  begin: number;
  /** One past the last byte, relative to the start of the data section. */
  end: number;
}

/** True when `name` is one of the dtypes this module knows. */
function isDType(name: unknown): name is DType {
  return typeof name === "string" && Object.hasOwn(DTYPE_SIZE, name);
}

/** Number of elements of a shape (1 for a scalar). */
function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

/** True for a JSON object that is not an array. */
function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** True for a finite non-negative integer that fits a double exactly. */
function isIndex(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** Converts IEEE half-precision bits to the float32-exact number they encode. */
export function f16BitsToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

/** Lookup table of all 65536 half-precision values, built on first use. */
let f16Table: Float32Array | null = null;

/** Returns the half→float table, building it once. */
function halfTable(): Float32Array {
  if (f16Table === null) {
    f16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) f16Table[bits] = f16BitsToNumber(bits);
  }
  return f16Table;
}

/** Copies `length` bytes at `offset` into a fresh, aligned buffer. */
function copyBytes(bytes: Uint8Array, offset: number, length: number): ArrayBuffer {
  return bytes.slice(offset, offset + length).buffer;
}

/** Reads `count` u16 values at a possibly odd byte offset. */
function readU16(bytes: Uint8Array, offset: number, count: number): Uint16Array {
  const at = bytes.byteOffset + offset;
  if (at % 2 === 0) return new Uint16Array(bytes.buffer, at, count);
  return new Uint16Array(copyBytes(bytes, offset, count * 2));
}

/** An in-memory safetensors file with a validated header. */
export class SafetensorsFile {
  /** Path (or other label) used in error messages. */
  readonly source: string;
  /** The `__metadata__` entries of the header (empty when absent). */
  readonly metadata: Record<string, string>;
  /** Every tensor in the file, by name, in header order. */
  readonly tensors: Map<string, TensorInfo>;
  /** The data section (everything after the header). */
  readonly #data: Uint8Array;

  private constructor(
    source: string,
    metadata: Record<string, string>,
    tensors: Map<string, TensorInfo>,
    data: Uint8Array,
  ) {
    this.source = source;
    this.metadata = metadata;
    this.tensors = tensors;
    this.#data = data;
  }

  /**
   * Reads and validates a safetensors file.
   *
   * @throws {SafetensorsError} when the file cannot be read or is malformed.
   */
  static async open(path: string): Promise<SafetensorsFile> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (err) {
      throw new SafetensorsError(`${path}: cannot read file: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return SafetensorsFile.parse(bytes, path);
  }

  /**
   * Validates the header of an in-memory safetensors file. The bytes are kept (not
   * copied), so they must not change afterwards.
   *
   * @param bytes The whole file.
   * @param source Label for error messages, usually the path.
   * @throws {SafetensorsError} naming the source (and tensor) on any inconsistency.
   */
  static parse(bytes: Uint8Array, source: string): SafetensorsFile {
    const fail = (message: string): never => {
      throw new SafetensorsError(`${source}: ${message}`);
    };
    if (bytes.length < 8) fail(`file is ${bytes.length} bytes, shorter than the 8-byte prefix`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
    const headerLength = view.getBigUint64(0, true);
    if (headerLength > BigInt(MAX_HEADER_BYTES)) {
      fail(`header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    }
    if (headerLength > BigInt(bytes.length - 8)) {
      fail(`header length ${headerLength} exceeds the ${bytes.length - 8} bytes after the prefix`);
    }
    const dataStart = 8 + Number(headerLength);
    const header = decodeHeader(bytes.subarray(8, dataStart), fail);
    const data = bytes.subarray(dataStart);
    const metadata = parseMetadata(header[METADATA_KEY], fail);
    const tensors = new Map<string, TensorInfo>();
    for (const [name, entry] of Object.entries(header)) {
      if (name === METADATA_KEY) continue;
      tensors.set(name, parseEntry(name, entry, data.length, fail));
    }
    checkOverlaps([...tensors.values()], fail);
    return new SafetensorsFile(source, metadata, tensors, data);
  }

  /** True when the file has a tensor called `name`. */
  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /**
   * Location, dtype and shape of a tensor.
   *
   * @throws {SafetensorsError} naming the file and tensor when it is absent.
   */
  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (info === undefined) {
      throw new SafetensorsError(`${this.source}: no tensor named "${name}"`);
    }
    return info;
  }

  /**
   * A floating-point tensor as float32, row-major.
   *
   * F32 data is returned as a view of the file bytes when aligned (do not mutate it),
   * otherwise copied; F16 and BF16 are converted exactly into a new array.
   *
   * @throws {SafetensorsError} for a missing tensor or any other dtype.
   */
  f32(name: string): Float32Array {
    const { dtype, begin, end } = this.info(name);
    const count = (end - begin) / DTYPE_SIZE[dtype];
    switch (dtype) {
      case "F32": {
        const at = this.#data.byteOffset + begin;
        if (at % 4 === 0) return new Float32Array(this.#data.buffer, at, count);
        return new Float32Array(copyBytes(this.#data, begin, end - begin));
      }
      case "F16": {
        const table = halfTable();
        const bits = readU16(this.#data, begin, count);
        const out = new Float32Array(count);
        for (let i = 0; i < count; i++) out[i] = table[bits[i]];
        return out;
      }
      case "BF16": {
        const bits = readU16(this.#data, begin, count);
        const out = new Uint32Array(count);
        for (let i = 0; i < count; i++) out[i] = bits[i] << 16;
        return new Float32Array(out.buffer);
      }
      default:
        throw this.#dtypeError(name, dtype, "F32, F16 or BF16");
    }
  }

  /**
   * An integer tensor as int32: I32 as a view of the file bytes when aligned (do not
   * mutate it), otherwise copied; I64 converted into a new array.
   *
   * @throws {SafetensorsError} for a missing tensor, another dtype, or an I64 value
   * outside the int32 range.
   */
  i32(name: string): Int32Array {
    const { dtype, begin, end } = this.info(name);
    const count = (end - begin) / DTYPE_SIZE[dtype];
    if (dtype === "I32") {
      const at = this.#data.byteOffset + begin;
      if (at % 4 === 0) return new Int32Array(this.#data.buffer, at, count);
      return new Int32Array(copyBytes(this.#data, begin, end - begin));
    }
    if (dtype !== "I64") throw this.#dtypeError(name, dtype, "I32 or I64");
    const wide = new BigInt64Array(copyBytes(this.#data, begin, end - begin));
    const out = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      const value = wide[i];
      if (value < -2147483648n || value > 2147483647n) {
        throw new SafetensorsError(
          `${this.source}: tensor "${name}": I64 value ${value} at index ${i} is outside int32`,
        );
      }
      out[i] = Number(value);
    }
    return out;
  }

  /** Error for reading a tensor as the wrong kind of number. */
  #dtypeError(name: string, dtype: DType, wanted: string): SafetensorsError {
    return new SafetensorsError(
      `${this.source}: tensor "${name}" has dtype ${dtype}, expected ${wanted}`,
    );
  }
}

/** Decodes the JSON header and checks that it is an object. */
function decodeHeader(
  bytes: Uint8Array,
  fail: (message: string) => never,
): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return fail("header is not valid UTF-8");
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    return fail(`header is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(header)) return fail("header is not a JSON object");
  return header;
}

/** Validates the optional `__metadata__` entry: a string→string object. */
function parseMetadata(
  value: unknown,
  fail: (message: string) => never,
): Record<string, string> {
  if (value === undefined) return {};
  if (!isObject(value)) return fail(`"${METADATA_KEY}" is not an object`);
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== "string") fail(`"${METADATA_KEY}" entry "${key}" is not a string`);
  }
  return { ...(value as Record<string, string>) };
}

/** Validates one tensor entry of the header against the data section length. */
function parseEntry(
  name: string,
  entry: unknown,
  dataLength: number,
  fail: (message: string) => never,
): TensorInfo {
  const bad = (message: string): never => fail(`tensor "${name}": ${message}`);
  if (!isObject(entry)) return bad("entry is not an object");
  const { dtype, shape, data_offsets: offsets } = entry;
  if (dtype === undefined) bad("missing dtype");
  if (!isDType(dtype)) return bad(`unknown dtype ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape)) return bad("shape is missing or not an array");
  if (!shape.every(isIndex)) bad(`shape ${JSON.stringify(shape)} has a non-integer entry`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
    return bad(`data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) bad(`data_offsets [${begin}, ${end}] has begin after end`);
  if (end > dataLength) {
    bad(`data_offsets [${begin}, ${end}] lie outside the ${dataLength}-byte data section`);
  }
  const bytes = elementCount(shape) * DTYPE_SIZE[dtype];
  if (end - begin !== bytes) {
    bad(`${end - begin} bytes but shape ${JSON.stringify(shape)} of ${dtype} needs ${bytes}`);
  }
  return { name, dtype, shape: [...shape], begin, end };
}

/** Rejects tensors whose (non-empty) byte ranges overlap. */
function checkOverlaps(tensors: TensorInfo[], fail: (message: string) => never): void {
  const ranges = tensors.filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < ranges.length; i++) {
    const previous = ranges[i - 1];
    const current = ranges[i];
    if (current.begin < previous.end) {
      fail(
        `tensors "${previous.name}" [${previous.begin}, ${previous.end}] and ` +
          `"${current.name}" [${current.begin}, ${current.end}] overlap`,
      );
    }
  }
}

/** One tensor to encode: raw elements in row-major order, host (little-endian) layout. */
export interface TensorData {
  /** Element type written to the header. */
  dtype: DType;
  /** Dimensions, outermost first; `[]` is a scalar. */
  shape: number[];
  /**
   * The elements. Float32Array for F32, Uint16Array of raw bits for F16/BF16,
   * Int32Array for I32, BigInt64Array for I64, or a Uint8Array of raw bytes for any dtype.
   */
  data: Float32Array | Float64Array | Int32Array | Uint16Array | BigInt64Array | Uint8Array;
}

/** Checks one tensor before encoding and returns its bytes. */
function tensorBytes(name: string, tensor: TensorData): Uint8Array {
  const fail = (message: string): never => {
    throw new SafetensorsError(`encodeSafetensors: tensor "${name}": ${message}`);
  };
  if (name === METADATA_KEY) fail(`"${METADATA_KEY}" is reserved`);
  if (!isDType(tensor.dtype)) fail(`unknown dtype ${JSON.stringify(tensor.dtype)}`);
  if (!tensor.shape.every(isIndex)) fail(`bad shape ${JSON.stringify(tensor.shape)}`);
  const size = DTYPE_SIZE[tensor.dtype];
  const { data } = tensor;
  if (!(data instanceof Uint8Array) && data.BYTES_PER_ELEMENT !== size) {
    fail(`${data.constructor.name} does not hold ${tensor.dtype} elements`);
  }
  const expected = elementCount(tensor.shape) * size;
  if (data.byteLength !== expected) {
    fail(`${data.byteLength} bytes but shape ${JSON.stringify(tensor.shape)} needs ${expected}`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Encodes tensors as a safetensors file: tensors sorted by name, stored contiguously,
 * header JSON padded with spaces to a multiple of 8 bytes (as the Rust crate does), so
 * the data section starts 8-byte aligned.
 *
 * @throws {SafetensorsError} when a tensor's data does not match its dtype and shape.
 */
export function encodeSafetensors(
  tensors: Record<string, TensorData>,
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header[METADATA_KEY] = { ...metadata };
  const names = Object.keys(tensors).sort();
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const name of names) {
    const bytes = tensorBytes(name, tensors[name]);
    const { dtype, shape } = tensors[name];
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength); // pad with spaces
  let at = 8 + headerLength;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/**
 * Writes a safetensors file atomically: the bytes go to `${path}.tmp-<random>`, which
 * is then renamed over `path`; the temporary file is removed if anything fails.
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorData>,
  metadata?: Record<string, string>,
): Promise<void> {
  const bytes = encodeSafetensors(tensors, metadata);
  const temp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.writeFile(temp, bytes);
    await Deno.rename(temp, path);
  } catch (err) {
    await Deno.remove(temp).catch(() => {});
    throw err;
  }
}
