/**
 * Reader and writer for the safetensors format.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON header
 * `{ "<name>": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..} }`,
 * then the data section; offsets are bytes relative to the start of the data section.
 *
 * The reader validates the whole header up front, so a file that opens is safe to read: the
 * header is at most 16 MiB of UTF-8 JSON without duplicate keys, holding at most 16,384
 * tensors, and the tensors tile the data section exactly (no gap, no overlap, no trailing
 * byte). {@link SafetensorsFile.open} reads the prefix and the header as byte ranges (base/files.ts)
 * and checks them against the file's size before it reads the data, so a huge or endless
 * file is refused without being read. Messages echo at most ~80 characters of any value.
 *
 * @module
 */

import { clip, describe } from "../base/describe.ts";
import { readBytes, stat, writeFileAtomic } from "../base/files.ts";

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

/**
 * Largest header accepted, in bytes. GPT-2 XL's header is about 70 KB; the reference Rust
 * implementation allows 100 MB, which lets a header of a million empty entries cost seconds
 * and a gigabyte to parse.
 */
export const MAX_HEADER_BYTES = 16 * 2 ** 20;

/** Most tensors in one file: a GPT-2 has a few hundred, a snapshot 2 · n_layer + 1. */
export const MAX_TENSORS = 16_384;

/** Deepest nesting of the header JSON: the header, an entry, its shape (the format needs 3). */
const MAX_HEADER_DEPTH = 4;

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
   * Reads and validates a safetensors file: first the 8-byte prefix and the header, through a
   * file handle, checked against the file's size; the data section only once they are valid.
   *
   * @throws {SafetensorsError} when the file cannot be read, is not a regular file, or is
   * malformed.
   */
  static async open(
    path: string,
    options: { onProgress?: (loaded: number, total: number) => void } = {},
  ): Promise<SafetensorsFile> {
    const fail = (message: string, cause?: unknown): never => {
      throw new SafetensorsError(`${path}: ${message}`, cause === undefined ? {} : { cause });
    };
    try {
      const info = await stat(path);
      if (!info.isFile) fail("not a regular file");
      const size = info.size;
      const prefix = await readBytes(path, { offset: 0, length: Math.min(8, size) });
      const dataStart = 8 + headerLength(prefix, size, fail);
      const layout = parseHeader(
        await readBytes(path, { offset: 8, length: dataStart - 8 }),
        size - dataStart,
        fail,
      );
      const data = await readBytes(path, {
        offset: dataStart,
        length: size - dataStart,
        onProgress: options.onProgress,
      });
      return new SafetensorsFile(path, layout.metadata, layout.tensors, data);
    } catch (err) {
      if (err instanceof SafetensorsError) throw err;
      return fail(`cannot read file: ${clip((err as Error).message)}`, err);
    }
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
    const dataStart = 8 + headerLength(bytes.subarray(0, 8), bytes.length, fail);
    const data = bytes.subarray(dataStart);
    const layout = parseHeader(bytes.subarray(8, dataStart), data.length, fail);
    return new SafetensorsFile(source, layout.metadata, layout.tensors, data);
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
      throw new SafetensorsError(`${this.source}: no tensor named ${quote(name)}`);
    }
    return info;
  }

  /**
   * {@link SafetensorsFile.f32}, refusing a NaN or infinite element: the error names the
   * tensor and the first bad element, by flat index and by position in the shape.
   *
   * @throws {SafetensorsError} for a missing tensor, another dtype, or a non-finite value.
   */
  finiteF32(name: string): Float32Array {
    const values = this.f32(name);
    const bad = firstNonFinite(values);
    if (bad >= 0) {
      const { shape } = this.info(name);
      const at = shape.length > 1 ? ` (${describe(unravel(bad, shape))})` : "";
      throw new SafetensorsError(
        `${this.source}: tensor ${quote(name)}: element ${bad}${at} is ${values[bad]}; ` +
          `only finite values are accepted`,
      );
    }
    return values;
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
          `${this.source}: tensor ${quote(name)}: I64 value ${value} at index ${i} is ` +
            `outside int32`,
        );
      }
      out[i] = Number(value);
    }
    return out;
  }

  /** Error for reading a tensor as the wrong kind of number. */
  #dtypeError(name: string, dtype: DType, wanted: string): SafetensorsError {
    return new SafetensorsError(
      `${this.source}: tensor ${quote(name)} has dtype ${dtype}, expected ${wanted}`,
    );
  }
}

/**
 * Index of the first NaN or ±Infinity in `values`, or -1 when all are finite. Reads the bits
 * (exponent all ones), about 0.6 ns per element: 75 ms for GPT-2 small's 124M weights.
 */
export function firstNonFinite(values: Float32Array): number {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i] & 0x7f800000) === 0x7f800000) return i;
  }
  return -1;
}

/** The position in `shape` of flat row-major index `flat`. */
function unravel(flat: number, shape: readonly number[]): number[] {
  const at = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    at[d] = flat % shape[d];
    flat = Math.floor(flat / shape[d]);
  }
  return at;
}

/** A name from a file, quoted and cut to ~80 characters. */
function quote(name: string): string {
  return JSON.stringify(clip(name));
}

/**
 * The header length N from the 8-byte prefix of a file of `fileSize` bytes, checked against
 * the limit and against the bytes that follow the prefix.
 */
function headerLength(
  prefix: Uint8Array,
  fileSize: number,
  fail: (message: string) => never,
): number {
  if (fileSize < 8) fail(`file is ${fileSize} bytes, shorter than the 8-byte prefix`);
  const length = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${length} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (length > BigInt(fileSize - 8)) {
    fail(`header length ${length} exceeds the ${fileSize - 8} bytes after the prefix`);
  }
  return Number(length);
}

/** A validated header: metadata, and tensors that tile a data section of the given length. */
interface Layout {
  metadata: Record<string, string>;
  tensors: Map<string, TensorInfo>;
}

/** Decodes and validates the header bytes against the length of the data section. */
function parseHeader(
  bytes: Uint8Array,
  dataLength: number,
  fail: (message: string) => never,
): Layout {
  const header = decodeHeader(bytes, fail);
  const metadata = parseMetadata(header[METADATA_KEY], fail);
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === METADATA_KEY) continue;
    tensors.set(name, parseEntry(name, entry, dataLength, fail));
  }
  checkTiling([...tensors.values()], dataLength, fail);
  return { metadata, tensors };
}

/**
 * Decodes the JSON header, checks that it is an object, and checks what `JSON.parse` does not:
 * no duplicate keys, a bounded depth and at most {@link MAX_TENSORS} entries.
 */
function decodeHeader(
  bytes: Uint8Array,
  fail: (message: string) => never,
): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return fail("header is not valid UTF-8");
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    return fail(`header is not valid JSON: ${clip((err as Error).message)}`);
  }
  if (!isObject(header)) return fail("header is not a JSON object");
  checkKeys(text, fail);
  return header;
}

/** True for the four JSON whitespace characters. */
function isJsonSpace(code: number): boolean {
  return code === 0x20 || code === 0x0a || code === 0x0d || code === 0x09;
}

/**
 * Walks valid JSON `text` once and fails on a key repeated within one object (JSON.parse
 * keeps the last silently), on nesting deeper than {@link MAX_HEADER_DEPTH}, or on more than
 * {@link MAX_TENSORS} top-level entries besides `__metadata__`.
 */
function checkKeys(text: string, fail: (message: string) => never): void {
  // Per open container: the keys of an object so far, or null for an array.
  const open: (Set<string> | null)[] = [];
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 0x7b || code === 0x5b) { // { [
      open.push(code === 0x7b ? new Set() : null);
      if (open.length > MAX_HEADER_DEPTH) {
        fail(`header JSON nests deeper than ${MAX_HEADER_DEPTH} levels`);
      }
    } else if (code === 0x7d || code === 0x5d) { // } ]
      open.pop();
    } else if (code === 0x22) { // a string: a key when ':' follows it
      const start = i;
      let escaped = false;
      for (i++; text.charCodeAt(i) !== 0x22; i++) {
        if (text.charCodeAt(i) === 0x5c) {
          escaped = true;
          i++;
        }
      }
      const keys = open.at(-1);
      if (!keys) continue;
      let next = i + 1;
      while (isJsonSpace(text.charCodeAt(next))) next++;
      if (text.charCodeAt(next) !== 0x3a) continue; // a value, not a key
      const key: string = escaped ? JSON.parse(text.slice(start, i + 1)) : text.slice(start + 1, i);
      if (keys.has(key)) fail(`duplicate key ${quote(key)} in the header JSON`);
      keys.add(key);
      if (open.length === 1 && keys.size - (keys.has(METADATA_KEY) ? 1 : 0) > MAX_TENSORS) {
        fail(`header has more than ${MAX_TENSORS} tensors`);
      }
    }
  }
}

/** Validates the optional `__metadata__` entry: a string→string object. */
function parseMetadata(
  value: unknown,
  fail: (message: string) => never,
): Record<string, string> {
  if (value === undefined) return {};
  if (!isObject(value)) return fail(`"${METADATA_KEY}" is not an object`);
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== "string") fail(`"${METADATA_KEY}" entry ${quote(key)} is not a string`);
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
  const bad = (message: string): never => fail(`tensor ${quote(name)}: ${message}`);
  if (!isObject(entry)) return bad("entry is not an object");
  const { dtype, shape, data_offsets: offsets } = entry;
  if (dtype === undefined) bad("missing dtype");
  if (!isDType(dtype)) return bad(`unknown dtype ${describe(dtype)}`);
  if (!Array.isArray(shape)) return bad("shape is missing or not an array");
  if (!shape.every(isIndex)) bad(`shape ${describe(shape)} has a non-integer entry`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
    return bad(`data_offsets ${describe(offsets)} is not [begin, end]`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) bad(`data_offsets [${begin}, ${end}] has begin after end`);
  if (end > dataLength) {
    bad(`data_offsets [${begin}, ${end}] lie outside the ${dataLength}-byte data section`);
  }
  const bytes = elementCount(shape) * DTYPE_SIZE[dtype];
  if (end - begin !== bytes) {
    bad(`${end - begin} bytes but shape ${describe(shape)} of ${dtype} needs ${bytes}`);
  }
  return { name, dtype, shape: [...shape], begin, end };
}

/**
 * Checks that the tensors tile the data section exactly, as the reference implementation
 * does: sorted by offsets, each starts where the previous one ends, and the last ends at the
 * end of the section. A gap, an overlap or a trailing byte means a corrupt file, such as a
 * header length one byte short that shifts every tensor by a byte.
 */
function checkTiling(
  tensors: readonly TensorInfo[],
  dataLength: number,
  fail: (message: string) => never,
): void {
  const sorted = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let previous: TensorInfo | null = null;
  for (const t of sorted) {
    if (t.begin < at) {
      fail(
        `tensors ${quote(previous!.name)} [${previous!.begin}, ${previous!.end}] and ` +
          `${quote(t.name)} [${t.begin}, ${t.end}] overlap`,
      );
    }
    if (t.begin > at) {
      fail(
        `bytes [${at}, ${t.begin}) of the data section belong to no tensor ` +
          `(a gap before ${quote(t.name)})`,
      );
    }
    at = t.end;
    previous = t;
  }
  if (at !== dataLength) {
    fail(
      `the tensors end at byte ${at} of the ${dataLength}-byte data section: ` +
        `${dataLength - at} trailing bytes (is the header length wrong?)`,
    );
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
    throw new SafetensorsError(`encodeSafetensors: tensor ${quote(name)}: ${message}`);
  };
  if (name === METADATA_KEY) fail(`"${METADATA_KEY}" is reserved`);
  if (!isDType(tensor.dtype)) fail(`unknown dtype ${describe(tensor.dtype)}`);
  if (!tensor.shape.every(isIndex)) fail(`bad shape ${describe(tensor.shape)}`);
  const size = DTYPE_SIZE[tensor.dtype];
  const { data } = tensor;
  if (!(data instanceof Uint8Array) && data.BYTES_PER_ELEMENT !== size) {
    fail(`${data.constructor.name} does not hold ${tensor.dtype} elements`);
  }
  const expected = elementCount(tensor.shape) * size;
  if (data.byteLength !== expected) {
    fail(`${data.byteLength} bytes but shape ${describe(tensor.shape)} needs ${expected}`);
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
  await writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}
