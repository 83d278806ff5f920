/**
 * A character-level tokenizer: the vocabulary is the sorted distinct characters (Unicode
 * code points) of a training text, each its own id, as in nanoGPT's Shakespeare char model.
 * It is stored beside a checkpoint as `vocab.json`; tools pick it when a model folder has one.
 *
 * @module
 */
import { isNotFound, readText } from "../base/files.ts";
import { type EncodeOptions, type Tokenizer, TooManyTokensError } from "./tokenizer.ts";

/** The file a char-level checkpoint keeps its vocabulary in. */
export const CHAR_VOCAB_FILE = "vocab.json";

/** Most characters a vocabulary may hold. */
const MAX_CHARS = 65536;

/** Encodes text one character per id over a fixed, sorted character list. */
export class CharTokenizer implements Tokenizer {
  readonly name = "char";
  readonly vocabSize: number;
  /** A char vocabulary has no end-of-text token: -1 matches no id. */
  readonly eosTokenId = -1;
  readonly chars: readonly string[];
  readonly #ids: Map<string, number>;

  /** A tokenizer over `chars`: distinct single characters, in the order of their ids. */
  constructor(chars: readonly string[]) {
    if (!Array.isArray(chars) || chars.length < 1 || chars.length > MAX_CHARS) {
      throw new TypeError(`char vocabulary: expected 1..${MAX_CHARS} characters`);
    }
    this.#ids = new Map();
    chars.forEach((c, i) => {
      if (typeof c !== "string" || [...c].length !== 1) {
        throw new TypeError(`char vocabulary: entry ${i} is not a single character`);
      }
      if (this.#ids.has(c)) throw new TypeError(`char vocabulary: ${describe(c)} appears twice`);
      this.#ids.set(c, i);
    });
    this.chars = [...chars];
    this.vocabSize = chars.length;
  }

  /** The vocabulary of `text`: its distinct characters, sorted by code point. */
  static fromText(text: string): CharTokenizer {
    const set = [...new Set(text)].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
    if (set.length === 0) throw new Error("char vocabulary: the text is empty");
    return new CharTokenizer(set);
  }

  /** Reads `dir/vocab.json`; null when the folder has none. */
  static async load(dir: string): Promise<CharTokenizer | null> {
    const path = `${dir}/${CHAR_VOCAB_FILE}`;
    let text: string;
    try {
      text = await readText(path);
    } catch (e) {
      if (isNotFound(e)) return null;
      throw new Error(`${path}: ${(e as Error).message}`);
    }
    try {
      const json = JSON.parse(text);
      if (json?.tokenizer !== "char") throw new Error(`"tokenizer" must be "char"`);
      return new CharTokenizer(json.chars);
    } catch (e) {
      throw new Error(`${path}: ${(e as Error).message.slice(0, 120)}`);
    }
  }

  /** The JSON of `vocab.json`. */
  toJSON(): { tokenizer: "char"; chars: string[] } {
    return { tokenizer: "char", chars: [...this.chars] };
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== "string") {
      throw new TypeError(`encode: text must be a string, got ${typeof text}`);
    }
    const max = options.maxTokens ?? Infinity;
    const ids: number[] = [];
    let at = 0;
    for (const c of text) {
      if (ids.length >= max) throw new TooManyTokensError(max);
      const id = this.#ids.get(c);
      if (id === undefined) {
        throw new RangeError(
          `char tokenizer: ${describe(c)} at character ${at} is not in the vocabulary ` +
            `(${this.vocabSize} characters)`,
        );
      }
      ids.push(id);
      at++;
    }
    return ids;
  }

  decode(ids: number[]): string {
    if (!Array.isArray(ids)) throw new TypeError("decode: ids must be an array of token ids");
    return ids.map((id, i) => {
      const c = Number.isInteger(id) ? this.chars[id] : undefined;
      if (c === undefined) {
        throw new RangeError(
          `decode: id ${String(id).slice(0, 20)} at ${i} is outside 0..${this.vocabSize - 1}`,
        );
      }
      return c;
    }).join("");
  }
}

// "é" (U+00E9); control characters by code point only
function describe(c: string): string {
  const code = `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
  return /\p{Cc}/u.test(c) ? code : `"${c}" (${code})`;
}
