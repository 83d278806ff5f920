import assert from "node:assert/strict";
import { gpt2Tokenizer, TextStream, type Tokenizer } from "../run/tokenizer.ts";

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
