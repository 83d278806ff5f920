import assert from "node:assert/strict";
import { join } from "node:path";
import {
  encodeSafetensors,
  f16BitsToNumber,
  firstNonFinite,
  MAX_HEADER_BYTES,
  MAX_TENSORS,
  SafetensorsError,
  SafetensorsFile,
  writeSafetensors,
} from "../io/safetensors.ts";
import { needs } from "./helpers.ts";

const FIXTURE = new URL("../data/tiny-gpt2/model.safetensors", import.meta.url).pathname;

/** Builds a file from a raw header (object or exact text) and data bytes. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const json = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Asserts that parsing fails with a SafetensorsError naming the file and every fragment. */
function assertMalformed(bytes: Uint8Array, ...fragments: (string | RegExp)[]): void {
  assert.throws(() => SafetensorsFile.parse(bytes, "bad.safetensors"), (err: unknown) => {
    assert.ok(err instanceof SafetensorsError, String(err));
    assert.ok(err.message.startsWith("bad.safetensors: "), err.message);
    for (const fragment of fragments) {
      if (typeof fragment === "string") {
        assert.ok(err.message.includes(fragment), `"${fragment}" not in: ${err.message}`);
      } else {
        assert.match(err.message, fragment);
      }
    }
    return true;
  });
}

/** A valid two-tensor F32 header over 24 data bytes. */
function twoTensors(): Record<string, unknown> {
  return {
    a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
    b: { dtype: "F32", shape: [2, 2], data_offsets: [8, 24] },
  };
}

Deno.test("SafetensorsFile reads the tiny-gpt2 fixture", needs("read"), async () => {
  const file = await SafetensorsFile.open(FIXTURE);
  assert.equal(file.source, FIXTURE);
  assert.deepEqual(file.metadata, { format: "pt" });
  assert.equal(file.tensors.size, 28);
  assert.deepEqual(file.info("transformer.wte.weight").shape, [50257, 64]);
  assert.deepEqual(file.info("transformer.wpe.weight").shape, [128, 64]);
  for (const layer of [0, 1]) {
    const h = `transformer.h.${layer}.`;
    assert.deepEqual(file.info(`${h}attn.c_attn.weight`).shape, [64, 192]);
    assert.deepEqual(file.info(`${h}attn.c_attn.bias`).shape, [192]);
    assert.deepEqual(file.info(`${h}attn.c_proj.weight`).shape, [64, 64]);
    assert.deepEqual(file.info(`${h}mlp.c_fc.weight`).shape, [64, 256]);
    assert.deepEqual(file.info(`${h}mlp.c_proj.weight`).shape, [256, 64]);
    assert.deepEqual(file.info(`${h}ln_1.weight`).shape, [64]);
  }
  for (const info of file.tensors.values()) assert.equal(info.dtype, "F32");
  const wte = file.f32("transformer.wte.weight");
  assert.equal(wte.length, 50257 * 64);
  assert.ok(wte.every(Number.isFinite));
  // README: LayerNorm weights are 1 + U(-0.3, 0.3).
  const ln = file.f32("transformer.h.0.ln_1.weight");
  assert.ok(ln.every((x) => x >= 0.7 && x <= 1.3), "LayerNorm weights near 1");
  // Header of 2624 bytes: the first tensor's bytes start at 8 + 2624.
  const raw = await Deno.readFile(FIXTURE);
  assert.equal(new DataView(raw.buffer).getBigUint64(0, true), 2624n);
  const { begin, end } = file.info("transformer.ln_f.bias");
  const direct = new Float32Array(raw.slice(8 + 2624 + begin, 8 + 2624 + end).buffer);
  assert.deepEqual(file.f32("transformer.ln_f.bias"), direct);
});

Deno.test("info and f32/i32 errors name the file and the tensor", () => {
  const file = SafetensorsFile.parse(
    encodeSafetensors({ ids: { dtype: "I32", shape: [1], data: new Int32Array([7]) } }),
    "x.safetensors",
  );
  assert.equal(file.has("ids"), true);
  assert.equal(file.has("nope"), false);
  assert.throws(() => file.info("nope"), /^SafetensorsError: x\.safetensors: .*"nope"/);
  assert.throws(() => file.f32("ids"), /^SafetensorsError: x\.safetensors: .*"ids".*I32/);
  assert.deepEqual(file.i32("ids"), new Int32Array([7]));
});

Deno.test("encode → parse round-trips F32, F16, BF16, I32, I64, U8 and metadata", () => {
  const f32 = new Float32Array([1.5, -2.25, 3e-38, Infinity, -0, 1e30]);
  // F16 bits: 1, -2, smallest subnormal 2^-24, largest subnormal, max 65504, +inf, -inf, -0.
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x0001, 0x03ff, 0x7bff, 0x7c00, 0xfc00, 0x8000]);
  const f16Values = [1, -2, 2 ** -24, 1023 * 2 ** -24, 65504, Infinity, -Infinity, -0];
  // BF16 bits: 1, -3, +inf, smallest subnormal 2^-133, 2^100.
  const bf16 = new Uint16Array([0x3f80, 0xc040, 0x7f80, 0x0001, 0x7180]);
  const bf16Values = [1, -3, Infinity, 2 ** -133, 2 ** 100];
  const bytes = encodeSafetensors({
    z_f32: { dtype: "F32", shape: [2, 3], data: f32 },
    half: { dtype: "F16", shape: [8], data: f16 },
    brain: { dtype: "BF16", shape: [5], data: bf16 },
    ids: { dtype: "I32", shape: [3], data: new Int32Array([1, -2, 2147483647]) },
    long: { dtype: "I64", shape: [2], data: new BigInt64Array([-2147483648n, 50256n]) },
    mask: { dtype: "U8", shape: [3], data: new Uint8Array([1, 0, 1]) },
    scalar: { dtype: "F32", shape: [], data: new Float32Array([42]) },
  }, { format: "pt", note: "round trip" });
  const file = SafetensorsFile.parse(bytes, "rt.safetensors");
  assert.deepEqual(file.metadata, { format: "pt", note: "round trip" });
  assert.deepEqual(file.f32("z_f32"), f32);
  assert.deepEqual([...file.f32("half")], f16Values);
  assert.deepEqual([...file.f32("brain")], bf16Values);
  assert.deepEqual(file.i32("ids"), new Int32Array([1, -2, 2147483647]));
  assert.deepEqual(file.i32("long"), new Int32Array([-2147483648, 50256]));
  assert.deepEqual(file.f32("scalar"), new Float32Array([42]));
  assert.deepEqual(file.info("z_f32").shape, [2, 3]);
  assert.deepEqual(file.info("scalar").shape, []);
  assert.equal(file.info("mask").dtype, "U8");
  // NaN in both half formats.
  const nan = SafetensorsFile.parse(
    encodeSafetensors({
      h: { dtype: "F16", shape: [2], data: new Uint16Array([0x7e00, 0xfc01]) },
      b: { dtype: "BF16", shape: [1], data: new Uint16Array([0x7fc0]) },
    }),
    "nan",
  );
  assert.ok(nan.f32("h").every(Number.isNaN));
  assert.ok(Number.isNaN(nan.f32("b")[0]));
});

Deno.test("encoder pads the header to 8 bytes and stores tensors sorted and contiguous", () => {
  for (let extra = 0; extra < 9; extra++) {
    const bytes = encodeSafetensors(
      {
        [`b${"x".repeat(extra)}`]: { dtype: "F16", shape: [3], data: new Uint16Array(3) },
        a: { dtype: "F32", shape: [1], data: new Float32Array([1]) },
      },
    );
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(headerLength % 8, 0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
    assert.equal(text.trimEnd(), JSON.stringify(JSON.parse(text)));
    const file = SafetensorsFile.parse(bytes, "pad");
    assert.deepEqual([file.info("a").begin, file.info("a").end], [0, 4]);
    const b = file.info(`b${"x".repeat(extra)}`);
    assert.deepEqual([b.begin, b.end], [4, 10]);
    assert.equal(bytes.length, 8 + headerLength + 10);
  }
});

Deno.test("encoder rejects data that does not match dtype and shape", () => {
  assert.throws(
    () => encodeSafetensors({ w: { dtype: "F32", shape: [3], data: new Float32Array(2) } }),
    /tensor "w".*8 bytes.*needs 12/,
  );
  assert.throws(
    () => encodeSafetensors({ w: { dtype: "F32", shape: [2], data: new Uint16Array(4) } }),
    /tensor "w".*Uint16Array/,
  );
});

Deno.test("F16 conversion is exact for all 65536 bit patterns", () => {
  const bits = new Uint16Array(65536).map((_, i) => i);
  const file = SafetensorsFile.parse(
    encodeSafetensors({ all: { dtype: "F16", shape: [65536], data: bits } }),
    "all",
  );
  const values = file.f32("all");
  // The engine's own Float16Array, where it exists, is an independent reference.
  const reference = typeof Float16Array === "function" ? new Float16Array(bits.buffer) : null;
  for (let i = 0; i < 65536; i++) {
    const expected = reference ? reference[i] : f16BitsToNumber(i);
    if (Number.isNaN(expected)) assert.ok(Number.isNaN(values[i]), `bits ${i}`);
    else assert.ok(Object.is(values[i], expected), `bits ${i}: ${values[i]} vs ${expected}`);
  }
  // Independent spot checks of the formula itself.
  assert.equal(f16BitsToNumber(0x3555), 0.333251953125);
  assert.equal(f16BitsToNumber(0x0400), 2 ** -14); // smallest normal
  assert.ok(Object.is(f16BitsToNumber(0x8000), -0));
});

Deno.test("i32 rejects I64 values outside int32, naming the tensor", () => {
  const file = SafetensorsFile.parse(
    encodeSafetensors({
      big: { dtype: "I64", shape: [2], data: new BigInt64Array([0n, 2n ** 31n]) },
    }),
    "big.safetensors",
  );
  assert.throws(
    () => file.i32("big"),
    /^SafetensorsError: big\.safetensors: tensor "big".*2147483648/,
  );
});

Deno.test(
  "writeSafetensors writes atomically and leaves no temporary file",
  needs("read", "write"),
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const path = join(dir, "w.safetensors");
      await Deno.writeTextFile(path, "old contents");
      const tensors = { w: { dtype: "F32" as const, shape: [2], data: new Float32Array([3, 4]) } };
      await writeSafetensors(path, tensors, { format: "pt" });
      const names = [];
      for await (const entry of Deno.readDir(dir)) names.push(entry.name);
      assert.deepEqual(names, ["w.safetensors"]);
      const file = await SafetensorsFile.open(path);
      assert.deepEqual(file.f32("w"), new Float32Array([3, 4]));
      assert.deepEqual(await Deno.readFile(path), encodeSafetensors(tensors, { format: "pt" }));
      // A rename onto a non-empty directory fails: the temporary file must be cleaned up.
      const blocked = join(dir, "blocked");
      await Deno.mkdir(join(blocked, "inside"), { recursive: true });
      await assert.rejects(writeSafetensors(blocked, tensors));
      const after = [];
      for await (const entry of Deno.readDir(dir)) after.push(entry.name);
      assert.deepEqual(after.sort(), ["blocked", "w.safetensors"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("open names the path of a missing file", needs("read"), async () => {
  await assert.rejects(
    SafetensorsFile.open("/nonexistent/x.safetensors"),
    /^SafetensorsError: \/nonexistent\/x\.safetensors: cannot read/,
  );
});

Deno.test("parse rejects malformed files, naming the file and the tensor", () => {
  const data24 = new Uint8Array(24);
  assert.doesNotThrow(() => SafetensorsFile.parse(rawFile(twoTensors(), data24), "ok"));
  // Truncated: shorter than the 8-byte length prefix.
  assertMalformed(new Uint8Array(5), "shorter than the 8-byte prefix");
  // Header length beyond the end of the file, and absurdly large.
  const valid = rawFile(twoTensors(), data24);
  assertMalformed(valid.subarray(0, 40), "header length");
  const huge = valid.slice();
  new DataView(huge.buffer).setBigUint64(0, 2n ** 62n, true);
  assertMalformed(huge, "header length", "limit");
  // Invalid JSON, invalid UTF-8, JSON that is not an object.
  assertMalformed(rawFile("{ not json", data24), "not valid JSON");
  const badUtf8 = rawFile("{}");
  badUtf8[8] = 0xff;
  assertMalformed(badUtf8, "UTF-8");
  assertMalformed(rawFile("[1, 2]"), "not a JSON object");
  // Entry problems name the tensor.
  const entry = (b: unknown) => rawFile({ ...twoTensors(), b }, data24);
  assertMalformed(entry({ dtype: "Q4", shape: [4], data_offsets: [8, 24] }), '"b"', "Q4");
  assertMalformed(entry({ shape: [4], data_offsets: [8, 24] }), '"b"', "dtype");
  assertMalformed(entry({ dtype: "F32", data_offsets: [8, 24] }), '"b"', "shape");
  assertMalformed(entry({ dtype: "F32", shape: [4] }), '"b"', "data_offsets");
  assertMalformed(entry({ dtype: "F32", shape: [-4], data_offsets: [8, 24] }), '"b"', "shape");
  assertMalformed(entry({ dtype: "F32", shape: [1.5], data_offsets: [8, 24] }), '"b"', "shape");
  assertMalformed(entry("F32"), '"b"', "not an object");
  // Byte size that does not match the shape.
  assertMalformed(entry({ dtype: "F32", shape: [3], data_offsets: [8, 24] }), '"b"', "needs 12");
  assertMalformed(entry({ dtype: "F16", shape: [4], data_offsets: [8, 24] }), '"b"', "needs 8");
  // Offsets outside the data section, or reversed.
  assertMalformed(entry({ dtype: "F32", shape: [4], data_offsets: [16, 32] }), '"b"', "outside");
  assertMalformed(entry({ dtype: "F32", shape: [0], data_offsets: [24, 8] }), '"b"', "begin");
  // Overlapping tensors name both.
  assertMalformed(
    entry({ dtype: "F32", shape: [4], data_offsets: [4, 20] }),
    '"a"',
    '"b"',
    "overlap",
  );
  // Bad metadata.
  assertMalformed(
    rawFile({ ...twoTensors(), __metadata__: { format: 1 } }, data24),
    "__metadata__",
    "format",
  );
  assertMalformed(rawFile({ __metadata__: "pt" }), "__metadata__");
});

Deno.test("empty tensors are accepted where they tile", () => {
  const header = {
    a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
    empty: { dtype: "F32", shape: [0, 3], data_offsets: [4, 4] },
    b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
    also: { dtype: "F32", shape: [0], data_offsets: [8, 8] },
  };
  const data = new Uint8Array(8);
  new DataView(data.buffer).setFloat32(4, 2.5, true);
  const file = SafetensorsFile.parse(rawFile(header, data), "empty");
  assert.deepEqual(file.f32("b"), new Float32Array([2.5]));
  assert.equal(file.f32("empty").length, 0);
});

Deno.test(
  "a header length one byte short is refused: tensors must tile the data section",
  needs("read", "write", "run"),
  async () => {
    // The reproduction: the prefix set to N - 1 where the header's last byte is a
    // padding space still parses, and every tensor would be read one byte off.
    for (
      const [path, length] of [
        ["data/shapes/l1-h2-e96/model.safetensors", 1512n],
        ["data/tiny-gpt2/model.safetensors", 2624n],
      ] as const
    ) {
      const bytes = await Deno.readFile(path);
      const view = new DataView(bytes.buffer);
      assert.equal(view.getBigUint64(0, true), length);
      assert.equal(bytes[8 + Number(length) - 1], 0x20, "the header ends in a padding space");
      assert.doesNotThrow(() => SafetensorsFile.parse(bytes, path));
      view.setBigUint64(0, length - 1n, true);
      assertMalformed(bytes, "trailing bytes", "header length wrong");
    }
    // Gaps, overlaps and trailing bytes in a small file.
    const data24 = new Uint8Array(24);
    const at = (a: number[], b: number[]) =>
      rawFile({
        a: { dtype: "F32", shape: [(a[1] - a[0]) / 4], data_offsets: a },
        b: { dtype: "F32", shape: [(b[1] - b[0]) / 4], data_offsets: b },
      }, data24);
    assert.doesNotThrow(() => SafetensorsFile.parse(at([0, 8], [8, 24]), "ok"));
    assertMalformed(at([0, 8], [12, 24]), "bytes [8, 12)", 'gap before "b"');
    assertMalformed(at([4, 8], [8, 24]), "bytes [0, 4)", 'gap before "a"');
    assertMalformed(at([0, 12], [8, 24]), '"a" [0, 12]', '"b" [8, 24]', "overlap");
    assertMalformed(
      at([0, 8], [8, 20]),
      "end at byte 20 of the 24-byte data section",
      "4 trailing",
    );
    // An empty tensor inside another one overlaps it.
    const inside = rawFile({
      a: { dtype: "F32", shape: [6], data_offsets: [0, 24] },
      e: { dtype: "F32", shape: [0], data_offsets: [8, 8] },
    }, data24);
    assertMalformed(inside, "overlap");
  },
);

Deno.test("duplicate keys in the header JSON are refused", () => {
  const data = new Uint8Array(8);
  const good = '"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}';
  // The case: the earlier entry is invalid, and JSON.parse would keep the last one.
  const bad = '"a": {"dtype": "Q4", "shape": [9], "data_offsets": [0, 1]}';
  assert.doesNotThrow(() => SafetensorsFile.parse(rawFile(`{${good}}`, data), "ok"));
  assertMalformed(rawFile(`{${bad}, ${good}}`, data), 'duplicate key "a"');
  // The same key spelled with an escape, a duplicate inside an entry, and in the metadata.
  assertMalformed(rawFile(`{${good}, "\\u0061": {}}`, data), 'duplicate key "a"');
  assertMalformed(
    rawFile('{"a": {"dtype": "F32", "dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', data),
    'duplicate key "dtype"',
  );
  assertMalformed(
    rawFile(`{"__metadata__": {"k": "1", "k": "2"}, ${good}}`, data),
    'duplicate key "k"',
  );
  // Equal keys in different objects, and a string value equal to a key, are fine.
  const twoEntries = '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ' +
    '"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, ' +
    '"__metadata__": {"a": "dtype", "format": "pt"}}';
  assert.doesNotThrow(() => SafetensorsFile.parse(rawFile(twoEntries, data), "ok"));
});

Deno.test("header size and tensor count are bounded", () => {
  // More tensors than MAX_TENSORS: refused by count, quickly.
  const entries = Array.from(
    { length: MAX_TENSORS + 1 },
    (_, i) => `"t${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`,
  );
  const t0 = performance.now();
  assertMalformed(rawFile(`{${entries.join(",")}}`), `more than ${MAX_TENSORS} tensors`);
  const ms = performance.now() - t0;
  console.log(`  ${MAX_TENSORS + 1} entries refused in ${ms.toFixed(0)} ms`);
  assert.ok(ms < 2000, `${ms} ms`);
  // A header length past the limit, even when the file is that long.
  const big = new Uint8Array(8 + MAX_HEADER_BYTES + 1);
  new DataView(big.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES + 1), true);
  assertMalformed(big, "exceeds the 16777216-byte limit");
  // Nesting deeper than the format needs.
  assertMalformed(
    rawFile('{"a": {"dtype": "F32", "shape": [[[[1]]]], "data_offsets": [0, 0]}}'),
    "nests deeper",
  );
});

Deno.test("error messages never echo unbounded input", () => {
  const data8 = new Uint8Array(8);
  const deep = "[".repeat(1e6) + "]".repeat(1e6);
  const cases = [
    // The cases: data_offsets nested 10^6 deep, a 2·10^5-entry shape, a 10^5-char name.
    rawFile(`{"a": {"dtype": "F32", "shape": [2], "data_offsets": ${deep}}}`, data8),
    rawFile({ a: { dtype: "F32", shape: new Array(2e5).fill(1), data_offsets: [0, 8] } }, data8),
    rawFile({ a: { dtype: "F32", shape: new Array(2e5).fill(-1), data_offsets: [0, 8] } }, data8),
    rawFile({ ["n".repeat(1e5)]: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, data8),
    rawFile({ a: { dtype: "x".repeat(1e5), shape: [2], data_offsets: [0, 8] } }, data8),
    rawFile({ a: { dtype: "F32", shape: [2], data_offsets: new Array(1e5).fill(0) } }, data8),
    rawFile({ __metadata__: { ["k".repeat(1e5)]: 1 } }),
    rawFile(`{"${"q".repeat(1e5)}" 1}`),
  ];
  for (const bytes of cases) {
    assert.throws(() => SafetensorsFile.parse(bytes, "long.safetensors"), (err: unknown) => {
      assert.ok(err instanceof SafetensorsError, String(err));
      assert.ok(err.message.length <= 300, `${err.message.length} chars: ${err.message}`);
      return true;
    });
  }
  // Reading a tensor by a long name that is not there.
  const file = SafetensorsFile.parse(rawFile({}), "x");
  assert.throws(() => file.info("n".repeat(1e5)), (err: Error) => err.message.length <= 300);
});

Deno.test("NaN/Inf in a tensor: finiteF32 names the tensor and the first bad index", () => {
  const values = new Float32Array(12).fill(0.5);
  values[7] = NaN;
  values[9] = Infinity;
  const file = SafetensorsFile.parse(
    encodeSafetensors({
      w: { dtype: "F32", shape: [3, 4], data: values },
      h: { dtype: "F16", shape: [2], data: new Uint16Array([0x3c00, 0xfc00]) }, // 1, -inf
      ok: { dtype: "F32", shape: [2], data: new Float32Array([1, -3e38]) },
    }),
    "nan.safetensors",
  );
  assert.throws(
    () => file.finiteF32("w"),
    /^SafetensorsError: nan\.safetensors: tensor "w": element 7 \(\[1,3\]\) is NaN/,
  );
  assert.throws(() => file.finiteF32("h"), /tensor "h": element 1 is -Infinity/);
  assert.deepEqual(file.finiteF32("ok"), new Float32Array([1, -3e38]));
  assert.equal(firstNonFinite(new Float32Array([0, -0, 3.4e38, 1e-45])), -1);
  assert.equal(firstNonFinite(new Float32Array([0, -Infinity])), 1);
});

Deno.test(
  "open reads the prefix and header first: /dev/zero and a sparse 5 GiB file fail fast",
  needs("read", "write", "run"),
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const rss0 = Deno.memoryUsage().rss;
      const t0 = performance.now();
      await assert.rejects(SafetensorsFile.open("/dev/zero"), /\/dev\/zero: not a regular file/);
      // A sparse 5 GiB file whose prefix says 2^63.
      const sparse = join(dir, "sparse.safetensors");
      const makeSparse = async (head: Uint8Array) => {
        using file = await Deno.open(sparse, { write: true, create: true, truncate: true });
        await file.write(head);
        await file.truncate(5 * 2 ** 30);
      };
      const prefix = new Uint8Array(8);
      new DataView(prefix.buffer).setBigUint64(0, 2n ** 63n, true);
      await makeSparse(prefix);
      await assert.rejects(
        SafetensorsFile.open(sparse),
        /header length 9223372036854775808 exceeds/,
      );
      // A valid header for 8 bytes of data in that 5 GiB file: the tiling check, against the
      // file's size, refuses it before the data is read.
      await makeSparse(rawFile({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }));
      await assert.rejects(SafetensorsFile.open(sparse), /trailing bytes/);
      // A header length that runs past the end of a short file.
      new DataView(prefix.buffer).setBigUint64(0, 1000n, true);
      await makeSparse(prefix);
      await Deno.truncate(sparse, 100);
      await assert.rejects(
        SafetensorsFile.open(sparse),
        /1000 exceeds the 92 bytes after the prefix/,
      );
      const ms = performance.now() - t0;
      const grew = (Deno.memoryUsage().rss - rss0) / 2 ** 20;
      console.log(`  refused in ${ms.toFixed(0)} ms, RSS +${grew.toFixed(1)} MiB`);
      assert.ok(ms < 1000, `${ms} ms`);
      assert.ok(grew < 64, `RSS grew ${grew} MiB`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("misaligned data still reads correctly", () => {
  // An unpadded header, and the file shifted inside a larger buffer: the data section
  // starts at every offset modulo 4.
  const header = JSON.stringify({
    f: { dtype: "F32", shape: [3], data_offsets: [0, 12] },
    h: { dtype: "F16", shape: [2], data_offsets: [12, 16] },
    i: { dtype: "I32", shape: [1], data_offsets: [16, 20] },
    b: { dtype: "BF16", shape: [1], data_offsets: [20, 22] },
    l: { dtype: "I64", shape: [1], data_offsets: [22, 30] },
  });
  const data = new Uint8Array(30);
  const view = new DataView(data.buffer);
  [1.25, -7, 1e-3].forEach((x, k) => view.setFloat32(4 * k, x, true));
  view.setUint16(12, 0x3c00, true);
  view.setUint16(14, 0xc400, true);
  view.setInt32(16, -123456, true);
  view.setUint16(20, 0x4049, true);
  view.setBigInt64(22, 99n, true);
  const file = rawFile(header, data);
  for (const shift of [0, 1, 2, 3]) {
    const holder = new Uint8Array(file.length + shift);
    holder.set(file, shift);
    const parsed = SafetensorsFile.parse(holder.subarray(shift), `shift${shift}`);
    assert.deepEqual(parsed.f32("f"), new Float32Array([1.25, -7, 1e-3]));
    assert.deepEqual([...parsed.f32("h")], [1, -4]);
    assert.deepEqual(parsed.i32("i"), new Int32Array([-123456]));
    assert.deepEqual([...parsed.f32("b")], [3.140625]);
    assert.deepEqual(parsed.i32("l"), new Int32Array([99]));
  }
});
