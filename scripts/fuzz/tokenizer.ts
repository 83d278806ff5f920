/**
 * The tokenizer cases: random text (sometimes with a long run) through encode, decode and
 * TextStream.
 *
 * @module
 */
import { gpt2Tokenizer } from "../../tokenizers/gpt2.ts";
import { TextStream, TooManyTokensError } from "../../tokenizers/tokenizer.ts";
import { Draw, type FuzzContext, judge } from "./case.ts";
const FRAGMENTS = [
  "the",
  " cache",
  "'s",
  " don't",
  "Ünïcödé",
  " 漢字",
  "😀",
  "👩‍👩‍👧",
  "123",
  ".",
  " ",
  "  ",
  "\n",
  "\t",
  "\r\n",
  "\ufeff",
  "\u00a0",
  "\u2028",
  "\ud800",
  "\udfff",
  "<|endoftext|>",
  "<|endof",
  "text|>",
  "\u0000",
  "\u0301",
];

/** Random text (sometimes with a long run) through encode, decode and TextStream. */
export function tokenizerCase(_ctx: FuzzContext, d: Draw, _index: number, mutations: string[]) {
  const tok = gpt2Tokenizer();
  if (d.chance(0.2)) { // decode of odd ids
    const pool: [string, unknown][] = [
      ["0", 0],
      ["50256", 50256],
      ["50257", 50257],
      ["-1", -1],
      ["1.5", 1.5],
      ["NaN", NaN],
      ['"1"', "1"],
      ["null", null],
      ["1n", 1n],
      ["Symbol", Symbol("s")],
      ["{}", {}],
    ];
    const picked = Array.from({ length: 1 + d.int(4) }, () => d.pick(pool));
    const ids: unknown = d.chance(0.1)
      ? d.pick([null, 42, "ids", { length: 1 }])
      : picked.map((p) => p[1]);
    mutations.push(
      `decode ${Array.isArray(ids) ? picked.map((p) => p[0]).join(",") : String(ids)}`,
    );
    return judge("decode:", () => {
      const text = tok.decode(ids as number[]);
      return Promise.resolve({ outcome: "loaded" as const, detail: `${text.length} chars` });
    });
  }
  let text = "";
  const parts = 1 + d.int(40);
  for (let i = 0; i < parts; i++) {
    const fragment = d.pick(FRAGMENTS);
    text += d.chance(0.05) ? fragment.repeat(1 + d.int(20_000)) : fragment;
  }
  const maxTokens = d.chance(0.3) ? d.int(200) : undefined;
  mutations.push(
    `text of ${text.length} chars${maxTokens === undefined ? "" : `, maxTokens ${maxTokens}`}`,
  );
  return judge("encode:", () => {
    let ids: number[];
    try {
      ids = tok.encode(text, { maxTokens });
    } catch (err) {
      if (!(err instanceof TooManyTokensError) || maxTokens === undefined) throw err;
      const count = tok.encode(text).length;
      if (count <= maxTokens) {
        return Promise.resolve({ outcome: "wrong" as const, detail: `${count} tokens refused` });
      }
      throw err;
    }
    if (maxTokens !== undefined && ids.length > maxTokens) {
      return Promise.resolve({ outcome: "wrong" as const, detail: `${ids.length} > maxTokens` });
    }
    const want = text.toWellFormed();
    if (tok.decode(ids) !== want) {
      return Promise.resolve({ outcome: "wrong" as const, detail: "decode(encode(text)) differs" });
    }
    const stream = new TextStream(tok);
    const streamed = ids.map((id) => stream.push(id)).join("") + stream.flush();
    if (streamed !== want) {
      return Promise.resolve({ outcome: "wrong" as const, detail: "TextStream differs" });
    }
    return Promise.resolve({ outcome: "loaded" as const, detail: `${ids.length} tokens` });
  });
}
