/** The character-level tokenizer: vocabulary from a text, round trips, errors, vocab.json. */
import assert from "node:assert/strict";
import { CharTokenizer } from "../tokenizers/char.ts";
import { TextStream } from "../tokenizers/tokenizer.ts";
import { needs } from "./helpers.ts";

Deno.test("char tokenizer: the sorted distinct characters, one id each, round trip", () => {
  const tok = CharTokenizer.fromText("hello, world\nhé😀");
  assert.deepEqual(tok.chars, ["\n", " ", ",", "d", "e", "h", "l", "o", "r", "w", "é", "😀"]);
  assert.equal(tok.vocabSize, 12);
  const ids = tok.encode("hello 😀");
  assert.deepEqual(ids, [5, 4, 6, 6, 7, 1, 11]);
  assert.equal(tok.decode(ids), "hello 😀");
  const stream = new TextStream(tok);
  assert.equal(ids.map((id) => stream.push(id)).join("") + stream.flush(), "hello 😀");
});

Deno.test("char tokenizer: a character outside the vocabulary is named", () => {
  const tok = CharTokenizer.fromText("abc");
  assert.throws(() => tok.encode("abz"), /"z" \(U\+007A\) at character 2 is not in the vocabulary/);
  assert.throws(() => tok.encode("a\tb"), /U\+0009 at character 1/);
  assert.throws(() => tok.decode([0, 3]), /id 3 at 1 is outside 0..2/);
  assert.throws(() => tok.decode([0.5]), /outside/);
  assert.throws(() => new CharTokenizer(["a", "a"]), /appears twice/);
  assert.throws(() => new CharTokenizer(["ab"]), /not a single character/);
  assert.throws(() => CharTokenizer.fromText(""), /empty/);
});

Deno.test(
  "char tokenizer: vocab.json round trip, and a folder without one",
  needs("read", "write"),
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      assert.equal(await CharTokenizer.load(dir), null);
      const tok = CharTokenizer.fromText("To be, or not to be");
      await Deno.writeTextFile(`${dir}/vocab.json`, JSON.stringify(tok.toJSON()));
      assert.deepEqual((await CharTokenizer.load(dir))!.chars, tok.chars);
      await Deno.writeTextFile(`${dir}/vocab.json`, `{"tokenizer": "bpe"}`);
      await assert.rejects(() => CharTokenizer.load(dir), /vocab.json: "tokenizer" must be "char"/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
