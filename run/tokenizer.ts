/**
 * GPT-2 byte-level BPE tokenizer and a streaming decoder for generated ids.
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

/** Turns text into token ids and back. */
export interface Tokenizer {
  /** Short name of the encoding, e.g. `"gpt2"`. */
  readonly name: string;
  /** Number of token ids, special tokens included (ids are `0..vocabSize-1`). */
  readonly vocabSize: number;
  /** Id of the end-of-text token that ends a generated document. */
  readonly eosTokenId: number;
  /**
   * Encodes `text` into token ids. With `options.maxTokens`, throws a
   * {@linkcode TooManyTokensError} as soon as the text is known to need more.
   */
  encode(text: string, options?: EncodeOptions): number[];
  /** Decodes token ids into text; invalid UTF-8 becomes U+FFFD, a leading BOM is kept. */
  decode(ids: number[]): string;
  /**
   * Optional: the raw UTF-8 bytes of `ids`. {@linkcode TextStream} uses it,
   * when present, to split text exactly at character boundaries.
   */
  decodeBytes?(ids: number[]): Uint8Array;
}

/** Options of {@linkcode Tokenizer.encode}. */
export interface EncodeOptions {
  /** Most tokens accepted; more throw a {@linkcode TooManyTokensError}. */
  maxTokens?: number;
}

/** Thrown by `encode` when the text needs more than `maxTokens` tokens. */
export class TooManyTokensError extends RangeError {
  /** @param maxTokens The limit that was passed. */
  constructor(readonly maxTokens: number) {
    super(`encode: the text has more than ${maxTokens} tokens`);
    this.name = "TooManyTokensError";
  }
}

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

/** An incomplete UTF-8 sequence is at most 3 bytes, so at most 3 tokens. */
const MAX_PENDING_TOKENS = 3;

/**
 * Streaming decode: feed generated ids one at a time and get back the text
 * that is now complete. A character whose UTF-8 bytes are split across
 * several tokens is held back until its last byte arrives, so an incomplete
 * sequence never shows up as U+FFFD; {@linkcode TextStream.flush} returns
 * whatever is still held at the end.
 *
 * @example
 * ```ts
 * const stream = new TextStream(gpt2Tokenizer());
 * let text = "";
 * for (const id of [47249, 222]) text += stream.push(id); // "" then "😀"
 * text += stream.flush();
 * ```
 */
export class TextStream {
  readonly #tok: Tokenizer;
  #decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  #pending: number[] = [];

  /** Creates a stream that decodes with `tok`. */
  constructor(tok: Tokenizer) {
    this.#tok = tok;
  }

  /** Adds one token id; returns the text completed by it (maybe `""`). */
  push(id: number): string {
    if (this.#tok.decodeBytes) {
      return this.#decoder.decode(this.#tok.decodeBytes([id]), { stream: true });
    }
    return this.#pushWithoutBytes(id);
  }

  /** Returns the text still held back (bad trailing bytes become U+FFFD) and resets. */
  flush(): string {
    const held = this.#tok.decodeBytes ? this.#decoder.decode() : this.#tok.decode(this.#pending);
    this.#decoder = new TextDecoder("utf-8", { ignoreBOM: true });
    this.#pending = [];
    return held;
  }

  /**
   * For a tokenizer without `decodeBytes`: hold ids back while their text
   * ends in U+FFFD, as long as they could still be an incomplete character.
   */
  #pushWithoutBytes(id: number): string {
    this.#pending.push(id);
    const text = this.#tok.decode(this.#pending);
    if (text.endsWith("\uFFFD") && this.#pending.length <= MAX_PENDING_TOKENS) return "";
    this.#pending = [];
    return text;
  }
}
