import assert from "node:assert/strict";
import { encode as libraryEncode } from "gpt-tokenizer/encoding/gpt2";
import bpeRanks from "gpt-tokenizer/bpeRanks/r50k_base";
import {
  bpeSegments,
  GPT2_MAX_TOKEN_BYTES,
  gpt2Tokenizer,
  MAX_PIECE_CHARS,
} from "../tokenizers/gpt2.ts";
import { TextStream, type Tokenizer, TooManyTokensError } from "../tokenizers/tokenizer.ts";
import { TestRng } from "./helpers.ts";

const tok = gpt2Tokenizer();

function assertRoundTrip(text: string): void {
  assert.equal(tok.decode(tok.encode(text)), text, `round trip of ${JSON.stringify(text)}`);
}

/** Pushes every id through a fresh stream; returns the pieces, flush last. */
function streamPieces(t: Tokenizer, ids: number[]): string[] {
  const stream = new TextStream(t);
  return [...ids.map((id) => stream.push(id)), stream.flush()];
}

Deno.test("gpt2Tokenizer: metadata", () => {
  assert.equal(tok.name, "gpt2");
  assert.equal(tok.vocabSize, 50257);
  assert.equal(tok.eosTokenId, 50256);
  assert.equal(gpt2Tokenizer(), tok, "the tokenizer is shared");
});

Deno.test("gpt2Tokenizer: known ids", () => {
  assert.deepEqual(tok.encode("The"), [464]);
  assert.deepEqual(
    tok.encode(" cache grows by one row for every token"),
    [12940, 13676, 416, 530, 5752, 329, 790, 11241],
  );
  assert.deepEqual(tok.encode(""), []);
  assert.equal(tok.decode([]), "");
});

Deno.test("gpt2Tokenizer: round trips ASCII", () => {
  assertRoundTrip("Hello, world! The KV cache stores keys and values.");
  assertRoundTrip("x = a[i] + b_{j} * 3.14159; // ~`'\"@#$%^&()");
  assertRoundTrip("I'm sure they'll've done it, won't they?");
});

Deno.test("gpt2Tokenizer: round trips Unicode", () => {
  assertRoundTrip("😀🦙👩‍👩‍👧‍👦 emoji, with a ZWJ family");
  assertRoundTrip("キャッシュは増える。中文字符和日本語");
  assertRoundTrip("café naïve résumé Ångström Straße ñ");
  assertRoundTrip("Ελληνικά, русский, עברית, العربية");
  assertRoundTrip("e\u0301 combining accent, \u00a0nbsp");
});

Deno.test("gpt2Tokenizer: round trips whitespace", () => {
  assertRoundTrip("   leading spaces");
  assertRoundTrip("trailing spaces    ");
  assertRoundTrip("a\n\nb\r\n\tc\t\td      e\n");
  assertRoundTrip("\n\n\n");
  assertRoundTrip("\t \t \n ");
});

Deno.test("gpt2Tokenizer: <|endoftext|> is the special token 50256", () => {
  assert.deepEqual(tok.encode("<|endoftext|>"), [50256]);
  assert.equal(tok.decode([50256]), "<|endoftext|>");
  const ids = tok.encode("The end.<|endoftext|>The<|endoftext|><|endoftext|>");
  assert.deepEqual(ids.filter((id) => id === 50256).length, 3);
  assert.equal(ids[ids.indexOf(50256) + 1], 464, "text after the special token encodes as usual");
  assertRoundTrip("hello <|endoftext|> world<|endoftext|>");
});

Deno.test("gpt2Tokenizer: decode is stateless across calls", () => {
  const [first] = tok.encode("😀");
  assert.equal(tok.decode([first]), "\uFFFD", "an incomplete character decodes to U+FFFD");
  assert.equal(tok.decode([464]), "The", "no bytes leak from the previous call");
});

Deno.test("gpt2Tokenizer: decode rejects ids outside the vocabulary", () => {
  assert.throws(() => tok.decode([50257]), /token id 50257/);
  assert.throws(() => tok.decode([-1]), /token id -1/);
  assert.throws(() => tok.decode([1.5]), /token id 1.5/);
});

Deno.test("TextStream: emits a split emoji whole, once", () => {
  for (const emoji of ["😀", "🦙", "𝄞"]) {
    const ids = tok.encode(emoji);
    assert.ok(ids.length >= 2, `${emoji} should span several tokens, got ${ids}`);
    const pieces = streamPieces(tok, ids);
    assert.deepEqual(pieces.filter((p) => p !== ""), [emoji]);
    assert.ok(!pieces.join("").includes("\uFFFD"));
  }
});

Deno.test("TextStream: streams a mixed text piece by piece", () => {
  const text = "KV→cache 😀 grows: 中文 naïve\n<|endoftext|>";
  const pieces = streamPieces(tok, tok.encode(text));
  assert.equal(pieces.join(""), text);
  assert.ok(pieces.every((p) => !p.includes("\uFFFD")));
});

Deno.test("TextStream: flush returns U+FFFD for a truly cut-off character, then resets", () => {
  const stream = new TextStream(tok);
  const [first] = tok.encode("😀");
  assert.equal(stream.push(first), "");
  assert.equal(stream.flush(), "\uFFFD");
  assert.equal(stream.push(464), "The");
  assert.equal(stream.flush(), "");
});

Deno.test("TextStream: works with a tokenizer that has no decodeBytes", () => {
  const textOnly: Tokenizer = {
    name: "text-only",
    vocabSize: tok.vocabSize,
    eosTokenId: tok.eosTokenId,
    encode: (text) => tok.encode(text),
    decode: (ids) => tok.decode(ids),
  };
  const text = "a😀b 🦙 中";
  const pieces = streamPieces(textOnly, tok.encode(text));
  assert.equal(pieces.join(""), text);
  assert.ok(pieces.every((p) => !p.includes("\uFFFD")));
});

Deno.test("the tokenizer drops a leading BOM: decode and TextStream keep it", () => {
  for (const text of ["\ufeffhi", "\ufeff", "\ufeff\ufeffx", "a\ufeffb"]) {
    const ids = tok.encode(text);
    assert.equal(tok.decode(ids), text);
    assert.equal(streamPieces(tok, ids).join(""), text);
  }
  // Also when the BOM arrives split over tokens, and after a flush.
  const stream = new TextStream(tok);
  let out = "";
  for (const id of tok.encode("\ufeffhi")) out += stream.push(id);
  out += stream.flush();
  for (const id of tok.encode("\ufeffagain")) out += stream.push(id);
  assert.equal(out + stream.flush(), "\ufeffhi\ufeffagain");
});

Deno.test("the tokenizer overflows the stack on long input: 2e6 spaces encode", () => {
  const text = " ".repeat(2e6);
  const t0 = performance.now();
  const ids = tok.encode(text);
  console.log(`  2e6 spaces: ${ids.length} tokens in ${(performance.now() - t0).toFixed(0)} ms`);
  assert.equal(tok.decode(ids), text);
  const stream = new TextStream(tok);
  assert.equal(ids.map((id) => stream.push(id)).join("") + stream.flush(), text);
});

Deno.test("BPE is quadratic on long single pieces: 100k-char pieces encode in well under a second", () => {
  const cases: [string, string][] = [
    ["digits", "1234567890".repeat(1e4)],
    ["emoji", "😀".repeat(1e5)],
    ["newlines", "\n".repeat(1e5)],
    ["a", "a".repeat(1e5)],
    ["punctuation", "!?".repeat(5e4)],
    ["leading space", " " + "b".repeat(1e5)],
  ];
  for (const [name, text] of cases) {
    const t0 = performance.now();
    const ids = tok.encode(text);
    const ms = performance.now() - t0;
    console.log(`  100k ${name}: ${ids.length} tokens in ${ms.toFixed(0)} ms`);
    assert.ok(ms < 500, `${name}: ${ms} ms`);
    assert.equal(tok.decode(ids), text, name);
  }
  // A long piece is cut every MAX_PIECE_CHARS code units, never inside a surrogate pair.
  const pieces = [...bpeSegments("x" + "😀".repeat(MAX_PIECE_CHARS) + " y")];
  assert.ok(pieces.every((p) => p.length <= MAX_PIECE_CHARS && !p.endsWith("\ud83d")));
  assert.equal(pieces.join(""), "x" + "😀".repeat(MAX_PIECE_CHARS) + " y");
});

Deno.test("encode gives the reference tokens for text without long pieces, across segments", () => {
  const rng = new TestRng(14);
  const fragments = [
    "the",
    " cache",
    "'s",
    "'ll",
    " don't",
    "A",
    "Ünïcödé",
    " 漢字",
    "😀",
    "👩‍👩‍👧",
    "123",
    " 4567",
    ".",
    ",",
    "!!",
    " (x)",
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    "\t",
    " \n ",
    "\u00a0",
    "\u2028",
    "\ufeff",
    "\r\n",
    "ÿ",
    "\u0301",
    "--",
    " $",
    "&&",
    "' ",
    "x'",
  ];
  for (let trial = 0; trial < 8; trial++) {
    let text = "";
    while (text.length < 9000) text += fragments[rng.int(fragments.length)];
    const reference = libraryEncode(text, { disallowedSpecial: new Set() });
    assert.deepEqual(tok.encode(text), reference, `trial ${trial}`);
    assert.ok([...bpeSegments(text)].length > 1, "the text is cut into several segments");
  }
});

Deno.test("generation can reject an over-long prompt in well under a second, whatever its content", () => {
  const n = 1024 * GPT2_MAX_TOKEN_BYTES; // the longest text that may still fit 1024 tokens
  const contents = [
    "a".repeat(n),
    "7".repeat(n),
    "😀".repeat(n / 2),
    " ".repeat(n),
    "\n".repeat(n),
    "ab 1 😀!\n".repeat(n / 9),
    "<|endoftext|>".repeat(n / 13),
    "x".repeat(1e8), // refused by its length alone
  ];
  for (const text of contents) {
    const t0 = performance.now();
    assert.throws(() => tok.encode(text, { maxTokens: 1024 }), (err: unknown) => {
      assert.ok(err instanceof TooManyTokensError);
      assert.ok(err instanceof RangeError);
      assert.equal(err.message, "encode: the text has more than 1024 tokens");
      return true;
    });
    const ms = performance.now() - t0;
    assert.ok(ms < 200, `${ms} ms for ${JSON.stringify(text.slice(0, 10))}`);
  }
  // Exactly at the limit is fine.
  const ids = tok.encode("hi there", { maxTokens: 2 });
  assert.deepEqual(ids, tok.encode("hi there"));
  assert.throws(() => tok.encode("hi there", { maxTokens: 1 }), TooManyTokensError);
  assert.throws(() => tok.encode("x", { maxTokens: -1 }), /^RangeError: encode: maxTokens/);
});

Deno.test("GPT2_MAX_TOKEN_BYTES is the longest token of the vocabulary", () => {
  const utf8 = new TextEncoder();
  let longest = 0;
  bpeRanks.forEach((entry: string | readonly number[]) => {
    const bytes = typeof entry === "string" ? utf8.encode(entry).length : entry.length;
    longest = Math.max(longest, bytes);
  });
  assert.equal(longest, GPT2_MAX_TOKEN_BYTES);
});

Deno.test("API-only inputs: decode(null | 42 | [Symbol()]) give clear TypeErrors", () => {
  const bad: [unknown, RegExp][] = [
    [null, /^TypeError: decode: ids must be an array of token ids, got null$/],
    [42, /^TypeError: decode: ids must be an array of token ids, got 42$/],
    ["12", /^TypeError: decode: ids must be an array/],
    [{ length: 2 }, /^TypeError: decode: ids must be an array/],
    [[Symbol("s")], /^TypeError: decode: a token id must be a number, got Symbol\(s\)$/],
    [["1"], /^TypeError: decode: a token id must be a number, got "1"$/],
    [[1n], /^TypeError: decode: a token id must be a number, got 1n$/],
    [[NaN], /^RangeError: decode: token id NaN is outside/],
  ];
  for (const [ids, message] of bad) {
    assert.throws(() => tok.decode(ids as number[]), message);
    assert.throws(() => tok.decodeBytes!(ids as number[]), message);
  }
  assert.throws(
    () => new TextStream(tok).push(Symbol() as unknown as number),
    /^TypeError: decode/,
  );
  assert.throws(
    () => tok.encode(null as unknown as string),
    /^TypeError: encode: text must be a string, got null$/,
  );
  assert.equal(tok.decode(new Int32Array([464]) as unknown as number[]), "The");
});
