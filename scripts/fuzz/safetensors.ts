/**
 * Mutations of safetensors bytes (header text, offsets, dtypes, shapes, padding), shared by the
 * checkpoint cases.
 *
 * @module
 */
import { Deep, Draw, jsonText, oddValue } from "./case.ts";
/** The header of safetensors bytes as an object, and where the data starts. */
function splitFile(bytes: Uint8Array): { header: Record<string, unknown>; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return { header, data: bytes.subarray(8 + n) };
}

/** Safetensors bytes from header text and data, the header padded with spaces to 8 bytes. */
function joinFile(headerText: string, data: Uint8Array, pad = true): Uint8Array {
  const json = new TextEncoder().encode(headerText);
  const length = pad ? Math.ceil(json.length / 8) * 8 : json.length;
  const out = new Uint8Array(8 + length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(length), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + length);
  out.set(data, 8 + length);
  return out;
}

const DTYPES = ["F32", "F16", "BF16", "I32", "I64", "U8", "BOOL", "F64", "Q4", "f32", ""];

/**
 * Applies one random mutation to safetensors bytes; `tensorNames` are the tensors whose F32
 * values the data mutations may touch. Returns the new bytes and the mutation's name.
 */
export function mutateSafetensors(d: Draw, bytes: Uint8Array): [Uint8Array, string] {
  const { header, data } = splitFile(bytes);
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const name = d.pick(names);
  const entry = header[name] as { dtype: string; shape: number[]; data_offsets: number[] };
  const out = bytes.slice();
  const view = new DataView(out.buffer);
  const reheader = (h: unknown, pad = true) => joinFile(jsonText(h), data, pad);
  switch (d.int(16)) {
    case 0: { // the 8-byte prefix off by a little
      const delta = d.pick([-8, -4, -3, -2, -1, 1, 2, 3, 4, 8]);
      view.setBigUint64(0, view.getBigUint64(0, true) + BigInt(delta), true);
      return [out, `prefix${delta > 0 ? "+" : ""}${delta}`];
    }
    case 1: { // the prefix set to something absurd
      const value = d.pick([0n, 2n ** 63n, 2n ** 64n - 1n, BigInt(out.length), 1n << 30n]);
      view.setBigUint64(0, value, true);
      return [out, `prefix=${value}`];
    }
    case 2: { // truncated, or extended
      if (d.chance(0.5)) {
        const at = d.int(out.length);
        return [out.subarray(0, at), `truncate at ${at}`];
      }
      const extra = new Uint8Array(1 + d.int(64)).map(() => d.int(256));
      const longer = new Uint8Array(out.length + extra.length);
      longer.set(out);
      longer.set(extra, out.length);
      return [longer, `append ${extra.length} bytes`];
    }
    case 3: { // one byte of the header changed
      const n = Number(view.getBigUint64(0, true));
      const at = 8 + d.int(n);
      out[at] = d.chance(0.5)
        ? d.int(256)
        : d.pick([0x22, 0x2c, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x30]);
      return [out, `header byte ${at}=${out[at]}`];
    }
    case 4: { // a data value of one tensor made NaN or infinite
      const [b, e] = Array.isArray(entry?.data_offsets) ? entry.data_offsets : [0, data.length];
      const values = new Float32Array(data.slice(0, data.length & ~3).buffer);
      const begin = Math.floor(b / 4);
      const count = Math.max(1, Math.floor((e - b) / 4));
      const at = Math.min(values.length - 1, begin + d.int(count));
      const value = d.pick([NaN, Infinity, -Infinity]);
      values[at] = value;
      out.set(new Uint8Array(values.buffer), 8 + Number(view.getBigUint64(0, true)));
      return [out, `${name}[${at - begin}]=${value}`];
    }
    case 5: { // a data value nudged: low mantissa bits, sign, or a small random value
      const words = new Uint32Array(data.slice(0, data.length & ~3).buffer);
      const at = d.int(words.length);
      const how = d.int(3);
      if (how === 0) words[at] ^= 1 << d.int(16);
      else if (how === 1) words[at] ^= 0x80000000;
      else new Float32Array(words.buffer)[at] = 8 * d.rng.next() - 4;
      out.set(new Uint8Array(words.buffer), 8 + Number(view.getBigUint64(0, true)));
      return [out, `data word ${at} nudged (${["mantissa", "sign", "random"][how]})`];
    }
    case 6: { // dtype
      const dtype = d.pick(DTYPES);
      header[name] = { ...entry, dtype };
      return [reheader(header), `${name}.dtype=${dtype}`];
    }
    case 7: { // shape
      const [label, value] = d.chance(0.5) ? oddValue(d, false) : [
        "dim±1",
        entry.shape.map((x, i) => (i === entry.shape.length - 1 ? x + d.pick([-1, 1]) : x)),
      ];
      header[name] = {
        ...entry,
        shape: label === "dim±1" ? value : d.chance(0.5) ? value : [value],
      };
      return [reheader(header), `${name}.shape=${label}`];
    }
    case 8: { // data_offsets
      const [b, e] = entry.data_offsets;
      const options: [string, unknown][] = [
        ["+1", [b + 1, e + 1]],
        ["-1 end", [b, e - 1]],
        ["+4", [b + 4, e + 4]],
        ["swap", [e, b]],
        ["3 items", [b, e, e]],
        ["huge", [b, 2 ** 53]],
        ["negative", [-4, e]],
        ["float", [b + 0.5, e]],
        ["strings", [String(b), String(e)]],
        ["nested 1e5", new Deep(1e5)],
      ];
      const [label, value] = d.chance(0.7) ? d.pick(options) : oddValue(d, false);
      header[name] = { ...entry, data_offsets: value };
      return [reheader(header), `${name}.data_offsets=${label}`];
    }
    case 9: { // two tensors' offsets swapped, or one tensor moved onto another
      const other = d.pick(names);
      const o = header[other] as typeof entry;
      if (d.chance(0.5)) {
        header[name] = { ...entry, data_offsets: o.data_offsets };
        header[other] = { ...o, data_offsets: entry.data_offsets };
        return [reheader(header), `swap offsets ${name} ${other}`];
      }
      header[name] = { ...entry, data_offsets: o.data_offsets };
      return [reheader(header), `${name} onto ${other}`];
    }
    case 10: { // a field deleted, or the entry replaced
      if (d.chance(0.5)) {
        const field = d.pick(["dtype", "shape", "data_offsets"]);
        const copy: Record<string, unknown> = { ...entry };
        delete copy[field];
        header[name] = copy;
        return [reheader(header), `${name} without ${field}`];
      }
      const [label, value] = oddValue(d, false);
      header[name] = value;
      return [reheader(header), `${name}=${label}`];
    }
    case 11: { // a key renamed, deleted or added
      const how = d.int(3);
      if (how === 0) {
        delete header[name];
        return [reheader(header), `delete ${name}`];
      }
      if (how === 1) {
        const renamed = d.pick(["", "x".repeat(1e5), `${name} `, name.toUpperCase(), "\u0000"]);
        delete header[name];
        header[renamed] = entry;
        return [reheader(header), `rename ${name}`];
      }
      // An extra tensor of 4 bytes appended at the end of the data.
      header["extra.weight"] = {
        dtype: "F32",
        shape: [1],
        data_offsets: [data.length, data.length + 4],
      };
      const more = new Uint8Array(data.length + 4);
      more.set(data);
      return [joinFile(JSON.stringify(header), more), "extra tensor"];
    }
    case 12: { // a duplicate key, the earlier entry invalid or equal
      const text = JSON.stringify(header);
      const first = d.chance(0.5)
        ? JSON.stringify({ dtype: "Q4", shape: [1], data_offsets: [0, 1] })
        : JSON.stringify(entry);
      return [
        joinFile(`{${JSON.stringify(name)}:${first},${text.slice(1)}`, data),
        `duplicate ${name}`,
      ];
    }
    case 13: { // metadata
      const [label, value] = oddValue(d, false);
      if (d.chance(0.5)) header.__metadata__ = value;
      else header.__metadata__ = { format: "pt", [d.pick(["k", "x".repeat(1e4)])]: value };
      return [reheader(header), `metadata ${label}`];
    }
    case 14: { // padding: none, more, or made of other characters
      const text = JSON.stringify(header);
      const how = d.int(3);
      if (how === 0) return [joinFile(text, data, false), "unpadded header"];
      if (how === 1) {
        return [joinFile(text + " ".repeat(d.int(64)) + "\n\t", data), "extra padding"];
      }
      const padded = joinFile(text, data);
      const n = Number(new DataView(padded.buffer).getBigUint64(0, true));
      padded.fill(d.pick([0x00, 0x2c, 0x7d]), 8 + new TextEncoder().encode(text).length, 8 + n);
      return [padded, "bad padding"];
    }
    default: { // many entries, or deep nesting
      if (d.chance(0.5)) {
        for (let i = 0; i < 20_000; i++) {
          header[`empty.${i}`] = { dtype: "F32", shape: [0], data_offsets: [0, 0] };
        }
        return [reheader(header), "20000 empty entries"];
      }
      const text = JSON.stringify(header);
      const depth = d.pick([8, 1000, 1e5]);
      return [
        joinFile(`{"deep":${"[".repeat(depth)}${"]".repeat(depth)},${text.slice(1)}`, data),
        `nesting ${depth}`,
      ];
    }
  }
}
