import assert from "node:assert/strict";
import { needs } from "./helpers.ts";

import { parseConfig } from "../model/config.ts";
import { GPT2 } from "../model/gpt2.ts";
import { Runner } from "../run/runner.ts";
import { randomWeights } from "../model/weights.ts";
import { CharTokenizer } from "../tokenizers/char.ts";
import { type ChatOptions, ChatSession, type ReplyResult } from "../run/chat.ts";
import { handleLine, readLines, sparkline } from "../cli/chat.ts";
import { generate } from "../run/generate.ts";
import { gpt2Tokenizer } from "../tokenizers/gpt2.ts";
import { type Tokenizer } from "../tokenizers/tokenizer.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();
/** Every test but the two on plain data reads the fixture: ignored without read access. */
const io = needs("read");
// 2 layers, n_embd 64, n_positions 128 (a stand-in that no test runs without read access)
const model = io.ignore ? (null as unknown as Runner) : await Runner.load(gpu, "data/tiny-gpt2");
const tok = gpt2Tokenizer();
const reference = io.ignore
  ? { prompts: [] }
  : JSON.parse(await Deno.readTextFile("data/tiny-gpt2/reference.json"));
const p1 = reference.prompts.find((p: { name: string }) => p.name === "p1");

const greedy: ChatOptions = {
  maxTokens: 8,
  temperature: 0,
  topK: 0,
  topP: 1,
  seed: 0,
  useCache: true,
};

/** Greedy tokens after `ids`, recomputed from an empty cache at every step (no chat state). */
async function fromScratch(ids: number[], maxTokens: number): Promise<number[]> {
  const cache = model.newCache();
  try {
    const opts = { ...greedy, maxTokens, useCache: false, stopAtEos: false };
    return (await generate(model, cache, ids, opts)).ids;
  } finally {
    cache.destroy();
  }
}

/** Runs `fn` on a new session and frees its cache afterwards. */
async function withSession<T>(
  options: Partial<ChatOptions>,
  fn: (s: ChatSession) => Promise<T>,
  tokenizer = tok,
): Promise<T> {
  const session = await ChatSession.open(model, tokenizer, { ...greedy, ...options });
  try {
    return await fn(session);
  } finally {
    session.destroy();
  }
}

/** Replies to `text`, returning the result and the text streamed. */
async function reply(s: ChatSession, text: string, signal?: AbortSignal) {
  let streamed = "";
  const r = await s.reply(text, (t) => (streamed += t), signal);
  return { ...r, streamed };
}

/** Handles one line, returning what it wrote. */
async function handle(s: ChatSession, line: string): Promise<string> {
  let out = "";
  await handleLine(s, line, (t) => (out += t));
  return out;
}

Deno.test(
  "the first reply is HF's greedy continuation, streamed as it is generated",
  io,
  async () => {
    await withSession({ maxTokens: 20 }, async (s) => {
      const r = await reply(s, p1.text);
      assert.deepEqual(r.ids, p1.generated_new_ids);
      assert.equal(r.streamed, tok.decode(p1.generated_new_ids));
      assert.equal(r.prefilledTokens, 10);
      assert.equal(r.reusedTokens, 0);
      assert.equal(r.tokenMs.length, 19);
      assert.equal(r.stop, "max-tokens");
      // Every reply token but the last has been fed into the cache.
      assert.equal(s.cache.length, 10 + 19);
      assert.deepEqual(s.history, [...p1.ids, ...p1.generated_new_ids]);
    });
  },
);

Deno.test("the conversation stays cached: a turn prefills only its new tokens", io, async () => {
  await withSession({}, async (s) => {
    const turn1 = tok.encode("Hello there\n");
    const turn2 = tok.encode("How are you?\n");
    const r1 = await reply(s, "Hello there\n");
    const r2 = await reply(s, "How are you?\n");
    assert.equal(r2.reusedTokens, turn1.length + 8 - 1);
    assert.equal(r2.prefilledTokens, 1 + turn2.length); // the last reply token, then the turn
    // The same tokens as greedy decoding of the whole conversation recomputed from scratch.
    assert.deepEqual(r1.ids, await fromScratch(turn1, 8));
    assert.deepEqual(r2.ids, await fromScratch([...turn1, ...r1.ids, ...turn2], 8));
    assert.deepEqual(s.history, [...turn1, ...r1.ids, ...turn2, ...r2.ids]);
    assert.equal(s.cache.length, s.history.length - 1);
  });
});

Deno.test("/cache off gives the same greedy tokens as on, recomputing everything", io, async () => {
  const turns = ["Hello there\n", "How are you?\n", "Fine.\n"];
  const on = await withSession({}, async (s) => {
    const results: ReplyResult[] = [];
    for (const t of turns) results.push(await s.reply(t, () => {}));
    return results;
  });
  await withSession({}, async (s) => {
    assert.match(await handle(s, "/cache off"), /^KV cache off/);
    assert.equal(s.settings.useCache, false);
    let conversation = 0;
    for (const [i, t] of turns.entries()) {
      const r = await s.reply(t, () => {});
      conversation += tok.encode(t).length;
      assert.deepEqual(r.ids, on[i].ids);
      assert.equal(r.useCache, false);
      assert.equal(r.reusedTokens, 0);
      assert.equal(r.prefilledTokens, conversation);
      conversation += r.ids.length;
    }
    // Back on, the cache holds what the last recomputation left, and the next turn reuses it.
    await handle(s, "/cache on");
    const r = await s.reply("Bye.\n", () => {});
    assert.equal(r.reusedTokens, conversation - 1);
  });
});

Deno.test(
  "the system text is prefilled once, kept at the start, and survives /reset",
  io,
  async () => {
    const sampled = { system: "The KV cache", temperature: 1, topK: 40, seed: 3 };
    await withSession(sampled, async (s) => {
      const system = tok.encode("The KV cache"); // 4 tokens
      assert.deepEqual(s.systemIds, system);
      assert.equal(s.cache.length, system.length);
      const r1 = await reply(s, "\nHello\n");
      assert.equal(r1.reusedTokens, system.length);
      assert.equal(r1.prefilledTokens, tok.encode("\nHello\n").length);
      // A turn after a reply that ends mid-line starts on a new line of its own.
      const start = s.history.length;
      await handleLine(s, "Again", () => {});
      const turn = `${r1.text.endsWith("\n") ? "" : "\n"}Again\n`;
      assert.deepEqual(s.history.slice(start, start + tok.encode(turn).length), tok.encode(turn));
      assert.match(await handle(s, "/reset"), /conversation reset \(4 system tokens stay cached\)/);
      assert.equal(s.cache.length, system.length);
      assert.deepEqual(s.history, system);
      // The sampler starts again too: the same turn gives the same reply.
      const again = await reply(s, "\nHello\n");
      assert.deepEqual(again.ids, r1.ids);
      assert.equal(again.reusedTokens, system.length);
    });
  },
);

Deno.test(
  "when the context fills, the sliding window keeps the sinks and the recent rows",
  io,
  async () => {
    const { nPositions } = model.config;
    await withSession({ maxTokens: 30, system: "The KV cache", windowMode: "sinks" }, async (s) => {
      assert.deepEqual(s.window, { sinks: 4, recent: 92 }); // ¾ of 128 positions, less the sinks
      // Fill the conversation to below the context.
      while (s.history.length < nPositions - 40) await s.reply("Go on\n", () => {});
      assert.equal(s.stats().droppedTokens, 0);
      const before = await s.cache.read();
      const cached = s.cache.length;
      const history = [...s.history];
      // A message that does not fit: the window drops the cached middle before the prefill.
      const text = Array.from({ length: 40 }, (_, i) => ` w${i}`).join("");
      const message = tok.encode(text);
      assert.ok(history.length + message.length > nPositions - 1);
      s.settings.maxTokens = 1; // no decode step: the cache is as the prefill left it
      const r = await s.reply(text, () => {});
      const recent = Math.min(92, nPositions - 1 - 4 - (1 + message.length));
      assert.equal(r.droppedTokens, cached - 4 - recent);
      assert.equal(r.evictions, 1);
      assert.equal(s.cache.length, 4 + recent + 1 + message.length);
      // The rows kept are bit-identical to the rows before: the sinks, then the recent ones.
      const after = await s.cache.read();
      const row = (kv: Float32Array, length: number, head: number, r: number) =>
        kv.slice((head * length + r) * 16, (head * length + r + 1) * 16);
      const kept = [[0, 0], [3, 3], [4, cached - recent], [4 + recent - 1, cached - 1]];
      for (const [i, layer] of after.entries()) {
        for (let head = 0; head < 4; head++) {
          for (const [to, from] of kept) {
            assert.deepEqual(
              row(layer.k, s.cache.length, head, to),
              row(before[i].k, cached, head, from),
            );
            assert.deepEqual(
              row(layer.v, s.cache.length, head, to),
              row(before[i].v, cached, head, from),
            );
          }
        }
      }
      // The history follows the cache: the system text first, then the recent tokens.
      assert.deepEqual(s.history.slice(0, 4), s.systemIds);
      assert.deepEqual(s.history.slice(0, 4 + recent), [
        ...history.slice(0, 4),
        ...history.slice(cached - recent, cached),
      ]);
      assert.deepEqual(s.history.slice(4 + recent), [
        ...history.slice(cached),
        ...message,
        ...r.ids,
      ]);
      assert.equal(s.stats().droppedTokens, r.droppedTokens);
      // A long reply goes on through the window, and says so.
      s.settings.maxTokens = 100;
      const out = await handle(s, "More");
      assert.match(out, /context full \(128 positions\): the sliding window kept the first 4/);
      assert.ok(s.cache.length <= nPositions - 1);
      assert.equal(s.cache.length, s.history.length - 1);
      assert.deepEqual(s.history.slice(0, 4), s.systemIds);
    });
  },
);

Deno.test(
  "/stats reports the cache and the mean time per token with and without it",
  io,
  async () => {
    await withSession({}, async (s) => {
      const cached = [await s.reply("One\n", () => {}), await s.reply("Two\n", () => {})];
      await handle(s, "/cache off");
      const uncached = await s.reply("Three\n", () => {});
      const stats = s.stats();
      const sum = (r: ReplyResult[]) =>
        r.reduce((a, x) => a + x.tokenMs.reduce((b, y) => b + y, 0), 0);
      assert.deepEqual(stats.cached, { tokens: 14, ms: sum(cached) });
      assert.deepEqual(stats.uncached, { tokens: 7, ms: sum([uncached]) });
      assert.equal(stats.cachedTokens, s.history.length - 1);
      // 2 layers × (K and V) × 64 values × 4 bytes per token, 128 rows allocated.
      assert.equal(stats.cacheBytesUsed, stats.cachedTokens * 2 * 2 * 64 * 4);
      assert.equal(stats.cacheBytesAllocated, 128 * 2 * 2 * 64 * 4);
      const lines = (await handle(s, "/stats")).trimEnd().split("\n");
      assert.equal(lines.length, 4);
      assert.match(lines[0], new RegExp(`^tokens cached: ${stats.cachedTokens} of 128 positions`));
      assert.match(
        lines[1],
        new RegExp(`cache bytes: ${(stats.cacheBytesUsed / 1024).toFixed(1)} KiB`),
      );
      const mean = (
        ms: number,
        n: number,
      ) => (ms / n >= 100 ? (ms / n).toFixed(0) : (ms / n).toFixed(1));
      assert.equal(
        lines[2],
        `mean decode time: cached ${mean(stats.cached.ms, 14)} ms/token (14 tokens), ` +
          `uncached ${mean(stats.uncached.ms, 7)} ms/token (7 tokens)`,
      );
      assert.equal(stats.chained, false); // the cache is off
      assert.equal(
        lines[3],
        `decode: ${model.decodePath} path, logits read back per token`,
      );
      await handle(s, "/cache on");
      assert.equal(s.stats().chained, true);
      // Top-p alone over GPT-2's vocabulary is drawn on the CPU: each step reads its logits.
      await handle(s, "/temp 1");
      assert.equal(s.stats().chained, true);
      await handle(s, "/topp 0.9");
      assert.equal(s.stats().chained, false);
      await handle(s, "/topk 40");
      assert.equal(s.stats().chained, true);
    });
  },
);

Deno.test(
  "a reply's summary says what was prefilled and reused, with a token-time strip",
  io,
  async () => {
    await withSession({}, async (s) => {
      await handle(s, "Hello");
      const out = await handle(s, "Again");
      const lines = out.trimEnd().split("\n");
      const reused = tok.encode("Hello\n").length + 7;
      assert.match(lines.at(-2)!, /^token ms [▁▂▃▄▅▆▇█]{7} \(min [\d.]+, max [\d.]+\)$/);
      assert.match(
        lines.at(-1)!,
        new RegExp(
          `^prefilled 4 new tokens, reused ${reused} cached \\(first token [\\d.]+ ms\\); ` +
            `7 more tokens at [\\d.]+ ms/token \\(\\d+ tok/s\\) · KV cache on · stop: max-tokens$`,
        ),
      );
    });
  },
);

Deno.test("bad commands print one error line and change nothing; /quit quits", io, async () => {
  await withSession({}, async (s) => {
    const settings = { ...s.settings };
    const cases: [string, RegExp][] = [
      ["/temp x", /^error: \/temp: expected a number >= 0, got "x"$/],
      ["/temp -1", /^error: \/temp: expected a number >= 0, got "-1"$/],
      ["/temp", /^error: \/temp: expected a number >= 0, got ""$/],
      ["/topk 2.5", /^error: \/topk: expected an integer >= 0, got "2.5"$/],
      ["/topp 0", /^error: \/topp: expected a number in \(0, 1\], got "0"$/],
      ["/topp 1.5", /^error: \/topp: expected a number in \(0, 1\], got "1.5"$/],
      ["/cache maybe", /^error: \/cache: expected on or off, got "maybe"$/],
      ["/stats now", /^error: \/stats takes no argument, got "now"$/],
      ["/frobnicate", /^error: unknown command \/frobnicate \(see \/help\)$/],
    ];
    for (const [line, want] of cases) {
      const out = await handle(s, line);
      assert.match(out.trimEnd(), want);
      assert.equal(out.split("\n").length, 2, line); // one line
    }
    assert.deepEqual(s.settings, settings);
    assert.deepEqual(s.history, []);
    assert.equal(await handle(s, "/temp 0.7"), "temperature 0.7\n");
    assert.equal(await handle(s, "/topk 5"), "top-k 5\n");
    assert.equal(await handle(s, "/topp 0.9"), "top-p 0.9\n");
    assert.deepEqual(s.settings, { ...settings, temperature: 0.7, topK: 5, topP: 0.9 });
    assert.match(await handle(s, "/help"), /\/cache on\|off/);
    assert.equal(await handleLine(s, "/quit", () => {}), "quit");
    assert.equal(await handleLine(s, "Hello", () => {}), "continue");
  });
});

Deno.test(
  "a character outside a char vocabulary is one error line; the chat goes on",
  io,
  async () => {
    const chars = CharTokenizer.fromText("abc \n");
    await withSession({}, async (s) => {
      const out = await handle(s, "abz");
      assert.equal(
        out,
        `error: char tokenizer: "z" (U+007A) at character 2 is not in the ` +
          `vocabulary (5 characters)\n`,
      );
      assert.deepEqual(s.history, []);
      await handle(s, "ab c");
      assert.deepEqual(s.history.slice(0, 5), chars.encode("ab c\n"));
      assert.equal(s.history.length, 5 + 8);
    }, chars);
  },
);

Deno.test(
  "an aborted signal stops the reply between tokens; the next turn feeds the rest",
  io,
  async () => {
    await withSession({ maxTokens: 40 }, async (s) => {
      const stop = new AbortController();
      let tokens = 0;
      const r = await s.reply("Hello\n", () => {
        if (++tokens === 3) stop.abort();
      }, stop.signal);
      assert.equal(r.stop, "interrupted");
      assert.equal(r.ids.length, 3);
      const next = await s.reply("Go on\n", () => {});
      assert.equal(next.reusedTokens, tok.encode("Hello\n").length + 2);
      assert.equal(next.stop, "max-tokens");
    });
  },
);

Deno.test("a system text longer than half the context is refused", io, async () => {
  await assert.rejects(
    ChatSession.open(model, tok, { ...greedy, system: " x".repeat(70) }),
    /the system text has 70 tokens; at most half the context \(64 of 128\)/,
  );
});

Deno.test("readLines splits a byte stream into lines, across chunks and UTF-8 characters", async () => {
  const bytes = new TextEncoder().encode("ROMEO:\r\nO é\n\n/stats\nlast");
  const chunks = [bytes.slice(0, 3), bytes.slice(3, 11), bytes.slice(11, 12), bytes.slice(12)];
  const stream = ReadableStream.from(chunks);
  const lines: string[] = [];
  for await (const line of readLines(stream)) lines.push(line);
  assert.deepEqual(lines, ["ROMEO:", "O é", "", "/stats", "last"]);
});

Deno.test("sparkline draws the smallest value as ▁, the largest as █, in at most `width` bars", () => {
  assert.equal(sparkline([1, 2, 3, 4, 5, 6, 7, 8]), "▁▂▃▄▅▆▇█");
  assert.equal(sparkline([5, 5, 5]), "▁▁▁");
  assert.equal(sparkline([]), "");
  // Pairs averaged: 1.5, 1.5, 9.5, 9.5.
  assert.equal(sparkline([1, 2, 2, 1, 9, 10, 10, 9], 4), "▁▁██");
});

Deno.test(
  "window recompute (the default): the kept tokens are prefilled again from position 0",
  io,
  async () => {
    const { nPositions } = model.config;
    await withSession({ maxTokens: 30, system: "The KV cache" }, async (s) => {
      while (s.history.length < nPositions - 40) await s.reply("Go on\n", () => {});
      s.settings.maxTokens = 1;
      const text = Array.from({ length: 40 }, (_, i) => ` w${i}`).join("");
      const r = await s.reply(text, () => {});
      assert.equal(r.evictions, 1);
      assert.equal(r.windowMode, "recompute");
      // The cache now holds exactly what a fresh prefill of the kept history would.
      const fresh = model.newCache();
      try {
        await model.forward(s.history.slice(0, s.cache.length), fresh);
        assert.deepEqual(await s.cache.read(), await fresh.read());
      } finally {
        fresh.destroy();
      }
    });
  },
);

/** `chars` with "\n" as its end of text: a reply stops at the end of its line. */
function endingLines(chars: CharTokenizer): Tokenizer {
  return {
    name: chars.name,
    vocabSize: chars.vocabSize,
    eosTokenId: chars.encode("\n")[0],
    encode: (text, options) => chars.encode(text, options),
    decode: (ids) => chars.decode(ids),
  };
}

/**
 * A conversation of `turns` on a new session: each reply's ids and why it stopped. The turn
 * whose index is `interrupt` is aborted after its 30th token.
 */
async function converse(
  m: Runner,
  tokenizer: Tokenizer,
  options: Partial<ChatOptions>,
  turns: string[],
  interrupt = -1,
) {
  const s = await ChatSession.open(m, tokenizer, { ...greedy, ...options });
  try {
    const replies: { ids: number[]; stop: string }[] = [];
    for (const [i, text] of turns.entries()) {
      const abort = new AbortController();
      let tokens = 0;
      const { ids, stop } = await s.reply(text, () => {
        if (i === interrupt && ++tokens === 30) abort.abort();
      }, abort.signal);
      replies.push({ ids, stop });
    }
    return { replies, history: [...s.history], stats: s.stats() };
  } finally {
    s.destroy();
  }
}

Deno.test(
  "chained replies are the ids of per-token ones, through stops mid-batch and the window",
  io,
  async () => {
    const dir = "data/shakespeare-char";
    const chars = await Runner.load(gpu, dir);
    const plain = (await CharTokenizer.load(dir))!;
    const lines = endingLines(plain);
    const turns = ["ROMEO:\n", "JULIET:\n", "ROMEO:\n", "MERCUTIO:\n"];
    const cases: [Tokenizer, Partial<ChatOptions>][] = [
      // Replies of 64 tokens fill the 64 positions: the window drops and refills every turn.
      [plain, { temperature: 0.8, topK: 40, topP: 1, seed: 5, maxTokens: 64 }],
      [plain, { maxTokens: 64 }],
      // Replies end at a line's end, mostly inside a batch; the sinks window keeps the cache.
      [lines, { temperature: 1, topK: 0, topP: 0.9, seed: 6, maxTokens: 100, windowMode: "sinks" }],
    ];
    try {
      assert.equal(chars.config.nPositions, 64);
      for (const [tokenizer, options] of cases) {
        const what = `${tokenizer.eosTokenId} ${JSON.stringify(options)}`;
        const chained = await converse(chars, tokenizer, options, turns, 1);
        const perToken = await converse(
          chars,
          tokenizer,
          { ...options, chainOnGpu: false },
          turns,
          1,
        );
        assert.deepEqual(chained.replies, perToken.replies, what);
        assert.deepEqual(chained.history, perToken.history, what);
        assert.equal(chained.stats.cachedTokens, perToken.stats.cachedTokens, what);
        assert.equal(chained.stats.cached.tokens, perToken.stats.cached.tokens, what);
        assert.ok(chained.stats.droppedTokens > 0, `${what}: the window slid`);
        assert.equal(chained.stats.chained, true);
        assert.equal(perToken.stats.chained, false);
        assert.equal(chained.replies[1].stop, "interrupted", what);
        assert.equal(chained.replies[1].ids.length, 30, what);
        if (tokenizer === lines) assert.ok(chained.replies.some((r) => r.stop === "eos"), what);
      }
    } finally {
      chars.destroy();
    }
  },
);

/** 65 characters: the line break, then " " to "_" (capitals, digits, punctuation). */
const ASCII = new CharTokenizer(
  ["\n", ...Array.from({ length: 64 }, (_, i) => String.fromCharCode(32 + i))],
);
const RANDOM_CHARS = parseConfig({
  n_layer: 2,
  n_head: 2,
  n_embd: 32,
  n_positions: 128,
  vocab_size: 65,
  bos_token_id: 0,
  eos_token_id: 0,
}, "random characters");
/** A random model over those characters: on the fused path where the adapter allows it. */
const randomChars = new Runner(new GPT2(gpu, RANDOM_CHARS, randomWeights(RANDOM_CHARS, 11)));

Deno.test({
  name: "a chained reply reads tokens back in batches, far fewer times than it has tokens",
  // OpenGL's llvmpipe has too few storage bindings for the fused step: every step is general.
  ignore: randomChars.decodePath !== "fused",
  fn: async () => {
    const sampled = { temperature: 0.8, topK: 40, topP: 1, seed: 2 };
    for (const options of [greedy, { ...greedy, ...sampled }]) {
      const replies: Record<string, { ids: number[]; reads: number }> = {};
      for (const chainOnGpu of [true, false]) {
        const s = await ChatSession.open(randomChars, ASCII, { ...options, chainOnGpu });
        try {
          await s.reply("HI\n", () => {}); // the first chained steps compile
          s.settings.maxTokens = 60;
          let reads = 0;
          const read = gpu.read;
          gpu.read = (tensors) => {
            reads++;
            return read.call(gpu, tensors);
          };
          try {
            const r = await s.reply("HELLO THERE\n", () => {});
            assert.equal(r.stop, "max-tokens");
            assert.equal(r.tokenMs.length, 59);
            replies[String(chainOnGpu)] = { ids: r.ids, reads };
          } finally {
            gpu.read = read;
          }
          assert.equal(s.stats().droppedTokens, 0);
        } finally {
          s.destroy();
        }
      }
      const { true: chained, false: perToken } = replies;
      assert.deepEqual(chained.ids, perToken.ids);
      assert.equal(perToken.reads, 60, "the prefill, then one read per token");
      // The prefill, a first batch of one token, then batches sized to stream every 200 ms.
      assert.ok(chained.reads <= 60 / 4, `${chained.reads} reads for 60 tokens`);
    }
  },
});
