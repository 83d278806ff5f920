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
 * @module
 */

import { encode as bpeEncode } from "gpt-tokenizer/encoding/gpt2";
import bpeRanks from "gpt-tokenizer/bpeRanks/r50k_base";

/** Turns text into token ids and back. */
export interface Tokenizer {
  /** Short name of the encoding, e.g. `"gpt2"`. */
  readonly name: string;
  /** Number of token ids, special tokens included (ids are `0..vocabSize-1`). */
  readonly vocabSize: number;
  /** Id of the end-of-text token that ends a generated document. */
  readonly eosTokenId: number;
  /** Encodes `text` into token ids. */
  encode(text: string): number[];
  /** Decodes token ids into text; invalid UTF-8 becomes U+FFFD. */
  decode(ids: number[]): string;
  /**
   * Optional: the raw UTF-8 bytes of `ids`. {@linkcode TextStream} uses it,
   * when present, to split text exactly at character boundaries.
   */
  decodeBytes?(ids: number[]): Uint8Array;
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

  encode(text: string): number[] {
    if (typeof text !== "string") {
      throw new TypeError(`encode: text must be a string, got ${typeof text}`);
    }
    const ids: number[] = [];
    const pieces = text.split(END_OF_TEXT);
    pieces.forEach((piece, i) => {
      if (i > 0) ids.push(GPT2_EOS_TOKEN_ID);
      if (piece.length > 0) ids.push(...bpeEncode(piece, { disallowedSpecial: new Set() }));
    });
    return ids;
  }

  decode(ids: number[]): string {
    return new TextDecoder().decode(this.decodeBytes(ids));
  }

  decodeBytes(ids: number[]): Uint8Array {
    const parts = ids.map((id) => this.#tokenBytes(id));
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const part of parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  }

  /** The bytes of one token, built from the rank table on first use. */
  #tokenBytes(id: number): Uint8Array {
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
  #decoder = new TextDecoder();
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
    this.#decoder = new TextDecoder();
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
