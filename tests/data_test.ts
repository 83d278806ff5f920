/** Training data: the shipped Tiny Shakespeare and its hash, the 90/10 split, batches. */
import assert from "node:assert/strict";
import { CharTokenizer } from "../tokenizers/char.ts";
import { batchRng, readText, sampleBatch, splitDataset, TINY_SHAKESPEARE } from "../train/data.ts";
import { needs } from "./helpers.ts";

Deno.test(
  "data: Tiny Shakespeare is shipped, hash-checked, 65 characters, split 90/10",
  needs("read"),
  async () => {
    const text = await readText(TINY_SHAKESPEARE.path);
    assert.equal(new TextEncoder().encode(text).length, TINY_SHAKESPEARE.bytes);
    const tok = CharTokenizer.fromText(text);
    assert.equal(tok.vocabSize, 65);
    const { train, val } = splitDataset(text, tok);
    assert.equal(train.length, Math.floor(text.length * 0.9));
    assert.equal(train.length + val.length, text.length);
    assert.equal(tok.decode([...val.subarray(0, 20)]), text.slice(train.length, train.length + 20));
  },
);

Deno.test("data: a missing or empty file is named", needs("read", "write"), async () => {
  await assert.rejects(() => readText("data/no-such-file.txt"), /no-such-file.txt: not found/);
  const empty = await Deno.makeTempFile();
  try {
    await assert.rejects(() => readText(empty), /the file is empty/);
  } finally {
    await Deno.remove(empty);
  }
});

Deno.test("data: batches are windows of T + 1 ids, the same for the same seed and iteration", () => {
  const data = Uint32Array.from({ length: 100 }, (_, i) => i);
  const a = sampleBatch(data, 4, 8, batchRng(1, 7));
  assert.deepEqual(a, sampleBatch(data, 4, 8, batchRng(1, 7)));
  assert.notDeepEqual(a, sampleBatch(data, 4, 8, batchRng(1, 8)));
  for (const row of a) {
    assert.equal(row.length, 9);
    row.forEach((id, t) => assert.equal(id, row[0] + t));
    assert.ok(row[8] < 100);
  }
  assert.throws(
    () => sampleBatch(data.subarray(0, 5), 1, 8, batchRng(1, 0)),
    /shorter than one window/,
  );
});
