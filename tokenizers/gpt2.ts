/**
 * GPT-2's byte-level BPE tokenizer.
 *
 * Encoding uses the `gpt2` encoding of `npm:gpt-tokenizer` (the r50k_base
 * ranks, which are GPT-2's BPE). Decoding is done here, from the raw rank
 * table, because the library's own `decode` shares one streaming
 * `TextDecoder` between all calls: a call that ends inside a multi-byte
 * character leaks those bytes into the next, unrelated call. The library also
 * only recognises an allowed special token at the very start of the text, so
 * `<|endoftext|>` is split out here before encoding.
 *
 * Long input stays cheap: BPE costs the square of a piece's length, so a piece (a run of
 * letters, digits, spaces or symbols, as GPT-2's pre-tokenizer cuts them) longer than
 * {@link MAX_PIECE_CHARS} is encoded in chunks of that length, and the text is handed to
 * the BPE in bounded segments. Text with a piece that long tokenizes differently from
 * GPT-2's reference tokenizer (which would give fewer, longer tokens); ordinary text never
 * has one.
 *
 * @module
 */

import { encode as bpeEncode } from "gpt-tokenizer/encoding/gpt2";
import bpeRanks from "gpt-tokenizer/bpeRanks/r50k_base";
import { describe } from "../base/describe.ts";
import { type EncodeOptions, type Tokenizer, TooManyTokensError } from "./tokenizer.ts";

/**
 * Longest piece handed to the BPE, in UTF-16 code units: longer ones are cut into chunks of
 * this length (never inside a surrogate pair), which bounds the BPE's quadratic cost.
 */
export const MAX_PIECE_CHARS = 256;

/** Most UTF-16 code units handed to the BPE in one call (whole pieces, so a bit more). */
const SEGMENT_CHARS = 4096;

/**
 * Bytes of the longest token of GPT-2's vocabulary. A UTF-16 code unit encodes to at least
 * one UTF-8 byte, so a text of n code units needs at least n / 128 tokens.
 */
export const GPT2_MAX_TOKEN_BYTES = 128;

/** GPT-2's pre-tokenizer: contractions, letters, digits, other symbols, spaces. */
const GPT2_PIECES = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * Cuts `text` (free of special tokens) into segments for the BPE: runs of GPT-2 pieces of
 * about {@link SEGMENT_CHARS} code units, cut only after a piece that does not end in
 * whitespace (there the pre-tokenizer's matches never look past the cut), and each piece
 * longer than {@link MAX_PIECE_CHARS} on its own in chunks of that length. Encoding the
 * segments one by one gives the tokens of the whole text, except inside the long pieces.
 */
export function* bpeSegments(text: string): Generator<string> {
  let start = 0; // start of the segment being gathered
  for (const match of text.matchAll(GPT2_PIECES)) {
    const at = match.index;
    const piece = match[0];
    if (piece.length > MAX_PIECE_CHARS) {
      if (at > start) yield text.slice(start, at);
      for (let i = 0; i < piece.length;) {
        let end = Math.min(piece.length, i + MAX_PIECE_CHARS);
        const last = piece.charCodeAt(end - 1);
        if (end < piece.length && last >= 0xd800 && last <= 0xdbff) end--; // keep the pair whole
        yield piece.slice(i, end);
        i = end;
      }
      start = at + piece.length;
    } else if (at + piece.length - start >= SEGMENT_CHARS && !/\s/.test(piece.at(-1)!)) {
      // Not after whitespace: the pre-tokenizer's `\s+(?!\S)` looks past a space's piece.
      yield text.slice(start, at + piece.length);
      start = at + piece.length;
    }
  }
  if (start < text.length) yield text.slice(start);
}

/** Throws a TypeError unless `ids` is an array (or typed array) of numbers. */
function checkIdArray(ids: unknown): asserts ids is ArrayLike<number> {
  const isArray = Array.isArray(ids) || (ArrayBuffer.isView(ids) && !(ids instanceof DataView));
  if (!isArray) {
    throw new TypeError(`decode: ids must be an array of token ids, got ${describe(ids)}`);
  }
}

/** GPT-2's end-of-text special token. */
export const END_OF_TEXT = "<|endoftext|>";

/** Id of {@linkcode END_OF_TEXT} in GPT-2's vocabulary. */
export const GPT2_EOS_TOKEN_ID = 50256;

/** Size of GPT-2's vocabulary: 50256 BPE tokens plus `<|endoftext|>`. */
export const GPT2_VOCAB_SIZE = 50257;

const utf8 = new TextEncoder();

class Gpt2Tokenizer implements Tokenizer {
  readonly name = "gpt2";
  readonly vocabSize = GPT2_VOCAB_SIZE;
  readonly eosTokenId = GPT2_EOS_TOKEN_ID;
  readonly #bytes: (Uint8Array | undefined)[] = new Array(GPT2_VOCAB_SIZE);

  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== "string") {
      throw new TypeError(`encode: text must be a string, got ${describe(text)}`);
    }
    const maxTokens = options.maxTokens ?? Infinity;
    if (!(maxTokens >= 0)) {
      throw new RangeError(`encode: maxTokens must be >= 0, got ${describe(maxTokens)}`);
    }
    // Each token covers at most 128 bytes, and each code unit at least one byte.
    if (text.length > maxTokens * GPT2_MAX_TOKEN_BYTES) throw new TooManyTokensError(maxTokens);
    const ids: number[] = [];
    const parts = text.split(END_OF_TEXT);
    for (let i = 0; i < parts.length; i++) {
      if (i > 0) ids.push(GPT2_EOS_TOKEN_ID);
      for (const segment of bpeSegments(parts[i])) {
        // One by one: spreading an unbounded array into push() overflows the stack.
        for (const id of bpeEncode(segment, { disallowedSpecial: new Set() })) ids.push(id);
        if (ids.length > maxTokens) throw new TooManyTokensError(maxTokens);
      }
      if (ids.length > maxTokens) throw new TooManyTokensError(maxTokens);
    }
    return ids;
  }

  decode(ids: number[]): string {
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(this.decodeBytes(ids));
  }

  decodeBytes(ids: number[]): Uint8Array {
    checkIdArray(ids);
    const parts = Array.from(ids, (id) => this.#tokenBytes(id));
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const part of parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  }

  /** The bytes of one token, built from the rank table on first use. */
  #tokenBytes(id: unknown): Uint8Array {
    if (typeof id !== "number") {
      throw new TypeError(`decode: a token id must be a number, got ${describe(id)}`);
    }
    if (!Number.isInteger(id) || id < 0 || id >= GPT2_VOCAB_SIZE) {
      throw new RangeError(
        `decode: token id ${id} is outside the vocabulary [0, ${GPT2_VOCAB_SIZE})`,
      );
    }
    let bytes = this.#bytes[id];
    if (bytes === undefined) {
      const entry = id === GPT2_EOS_TOKEN_ID ? END_OF_TEXT : bpeRanks[id];
      bytes = typeof entry === "string" ? utf8.encode(entry) : Uint8Array.from(entry);
      this.#bytes[id] = bytes;
    }
    return bytes;
  }
}

let shared: Gpt2Tokenizer | undefined;

/**
 * GPT-2's tokenizer (byte-level BPE, 50257 ids). `<|endoftext|>` in the
 * text is encoded as the special token 50256 and decodes back to itself.
 *
 * @example
 * ```ts
 * const tok = gpt2Tokenizer();
 * tok.encode("The"); // [464]
 * tok.decode([464, 12940]); // "The cache"
 * ```
 */
export function gpt2Tokenizer(): Tokenizer {
  shared ??= new Gpt2Tokenizer();
  return shared;
}
