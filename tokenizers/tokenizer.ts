/**
 * What every tokenizer offers (text to ids and back), and {@link TextStream}, which turns the
 * ids of a generation into text as they come, never splitting a character.
 *
 * @module
 */
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
