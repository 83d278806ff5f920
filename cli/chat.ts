/**
 * `deno task chat`: talk with a model while watching the KV cache work. Each line you type is
 * appended to a conversation held in the cache, and the reply streams token by token, followed
 * by a strip of each token's time and what was prefilled or reused. `/cache off` recomputes
 * everything per token for comparison. Works piped (`printf 'ROMEO:\n' | deno task chat`):
 * then the output is plain text and the input lines are echoed. `--help` lists the options.
 *
 * @module
 */
import {
  ChatInputError,
  type ChatOptions,
  ChatSession,
  type ChatStats,
  type ReplyResult,
} from "../run/chat.ts";
import { openModel, tokenizerFor, TRAINED } from "../run/open_model.ts";
import type { SlidingWindow } from "../run/sliding_window.ts";
import { integer, main, number, parseOptions, UsageError, weightFormat } from "./usage.ts";
import { modelOptionsFromEnv, openGpu } from "./env_options.ts";

/** The commands, as `/help` prints them. */
export const CHAT_HELP = `commands:
  /cache on|off   off: every token recomputes the whole conversation from an empty cache
  /window recompute|sinks  when the context is full: prefill the kept tokens again
                  (default) or keep their cached rows as StreamingLLM's sinks do
  /temp X         sampling temperature, 0 = greedy
  /topk K         keep the K most likely tokens, 0 = off
  /topp P         nucleus sampling mass in (0, 1], 1 = off
  /reset          forget the conversation (the system text stays cached)
  /stats          tokens cached, cache bytes, mean ms/token with and without the cache,
                  the decode path
  /help           this list
  /quit           leave (so does Ctrl-D); Ctrl-C stops a reply
any other line is your next turn: it is appended to the conversation and the model replies`;

const FALLBACK_MODEL = "data/tiny-gpt2";

const USAGE = `usage: deno task chat [options]
  a conversation kept in the KV cache: each turn prefills only its new text
  --model M            checkpoint folder or hub name (default ${TRAINED} when it exists,
                       else ${FALLBACK_MODEL})
  --system TEXT        text kept at the start of the conversation (and of the cache)
  --max-tokens N       most tokens per reply (default 200 for a char model, else 48)
  --temperature T      0 = greedy (default 0.8)
  --top-k K            keep the K most likely tokens, 0 = off (default 40)
  --top-p P            nucleus sampling mass, 1 = off (default 1)
  --seed S             sampling seed (default 0)
  --weights F          f32 (default) or f16
  -h, --help           this text
${CHAT_HELP}`;

function parse(args: string[]) {
  const { values } = parseOptions(USAGE, args, {
    model: { type: "string" },
    system: { type: "string", default: "" },
    "max-tokens": { type: "string" },
    temperature: { type: "string", default: "0.8" },
    "top-k": { type: "string", default: "40" },
    "top-p": { type: "string", default: "1" },
    seed: { type: "string", default: "0" },
    weights: { type: "string", default: "f32" },
  });
  const maxTokens = values["max-tokens"] === undefined
    ? null
    : integer("--max-tokens", values["max-tokens"], 1, Infinity);
  return {
    model: values.model,
    system: values.system,
    weights: weightFormat(values.weights),
    maxTokens,
    temperature: number("--temperature", values.temperature, "a number >= 0", (v) => v >= 0),
    topK: integer("--top-k", values["top-k"], 0, Infinity),
    topP: number("--top-p", values["top-p"], "a number in (0, 1]", (v) => v > 0 && v <= 1),
    seed: number("--seed", values.seed, "an integer", Number.isSafeInteger),
  };
}

async function chat(): Promise<void> {
  const args = parse(Deno.args);
  const spec = args.model ??
    (await isFile(`${TRAINED}/config.json`) ? TRAINED : FALLBACK_MODEL);
  const gpu = await openGpu();
  const opened = await openModel(gpu, spec, { weights: args.weights, ...modelOptionsFromEnv() });
  const tokenizer = await tokenizerFor(spec);
  await opened.model.warmup();
  const terminal = Deno.stdin.isTerminal() && Deno.stdout.isTerminal();
  const options: ChatOptions = {
    maxTokens: args.maxTokens ?? (tokenizer.name === "char" ? 200 : 48),
    temperature: args.temperature,
    topK: args.topK,
    topP: args.topP,
    seed: args.seed,
    useCache: true,
    system: args.system,
  };
  let session: ChatSession;
  try {
    session = await ChatSession.open(opened.model, tokenizer, options);
  } catch (e) {
    if (!args.system) throw e;
    throw new UsageError(`--system: ${(e as Error).message}`);
  }
  const style = terminal ? (s: string) => `\x1b[2m${s}\x1b[0m` : undefined;
  const encoder = new TextEncoder();
  const write = (s: string) => {
    if (s) Deno.stdout.writeSync(encoder.encode(s));
  };
  console.error(`model: ${opened.description}`);
  console.error(
    `tokenizer: ${tokenizer.name} · context ${opened.model.config.nPositions} tokens · ` +
      `${options.maxTokens} tokens per reply · /help for commands, Ctrl-D to leave`,
  );

  // Ctrl-C stops the reply being generated; at the prompt it only reminds how to leave.
  let replying: AbortController | null = null;
  const onInterrupt = () => {
    if (replying) replying.abort();
    else write("\n(Ctrl-D or /quit to leave)\n> ");
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    if (terminal) write("> ");
    for await (const line of readLines(Deno.stdin.readable)) {
      if (!terminal) write(`> ${line}\n`);
      replying = new AbortController();
      const next = await handleLine(session, line, write, replying.signal, style);
      replying = null;
      if (next === "quit") break;
      if (terminal) write("> ");
    }
    if (terminal) write("\n");
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
    session.destroy();
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * Handles one input line of `session`: a `/command`, or a turn (the line and a newline, after
 * a newline when the conversation does not end with one) answered by a streamed reply and its
 * summary. Mistakes are written as one `error: …` line; `style` styles summary and error lines
 * (a terminal dims them). Returns "quit" after `/quit`.
 */
export async function handleLine(
  session: ChatSession,
  line: string,
  write: (text: string) => void,
  signal?: AbortSignal,
  style: (line: string) => string = (s) => s,
): Promise<"quit" | "continue"> {
  const say = (s: string) => write(style(s) + "\n");
  try {
    if (line.startsWith("/")) return command(session, line.trim(), say);
    if (line.trim() === "") return "continue";
    const r = await session.reply(`${session.endsLine ? "" : "\n"}${line}\n`, write, signal);
    if (!r.text.endsWith("\n")) write("\n");
    for (const s of formatReply(r, session.cache.config.nPositions, session.window)) say(s);
  } catch (e) {
    if (!(e instanceof ChatInputError)) throw e;
    say(`error: ${e.message}`);
  }
  return "continue";
}

/** Runs the `/command` in `line` on `session`, telling what it did through `say`. */
function command(
  session: ChatSession,
  line: string,
  say: (s: string) => void,
): "quit" | "continue" {
  const [name, ...args] = line.split(/\s+/);
  const arg = args.join(" ");
  const number = (check: (v: number) => boolean, want: string) => {
    const v = Number(arg);
    if (arg === "" || !Number.isFinite(v) || !check(v)) {
      throw new ChatInputError(`${name}: expected ${want}, got "${arg}"`);
    }
    return v;
  };
  const noArgs = () => {
    if (arg) throw new ChatInputError(`${name} takes no argument, got "${arg}"`);
  };
  switch (name) {
    case "/cache":
      if (arg !== "on" && arg !== "off") {
        throw new ChatInputError(`/cache: expected on or off, got "${arg}"`);
      }
      session.settings.useCache = arg === "on";
      say(arg === "on" ? "KV cache on" : "KV cache off: every token recomputes everything");
      break;
    case "/window":
      if (arg !== "recompute" && arg !== "sinks") {
        throw new ChatInputError(`/window: expected recompute or sinks, got "${arg}"`);
      }
      session.settings.windowMode = arg;
      say(`sliding window: ${arg}`);
      break;
    case "/temp":
      session.settings.temperature = number((v) => v >= 0, "a number >= 0");
      say(`temperature ${session.settings.temperature}`);
      break;
    case "/topk":
      session.settings.topK = number((v) => Number.isInteger(v) && v >= 0, "an integer >= 0");
      say(`top-k ${session.settings.topK}`);
      break;
    case "/topp":
      session.settings.topP = number((v) => v > 0 && v <= 1, "a number in (0, 1]");
      say(`top-p ${session.settings.topP}`);
      break;
    case "/reset":
      noArgs();
      session.reset();
      say(`conversation reset (${session.cache.length} system tokens stay cached)`);
      break;
    case "/stats":
      noArgs();
      for (const s of formatStats(session.stats())) say(s);
      break;
    case "/help":
      say(CHAT_HELP);
      break;
    case "/quit":
      return "quit";
    default:
      throw new ChatInputError(`unknown command ${name} (see /help)`);
  }
  return "continue";
}

/**
 * The lines shown after a reply: the token-time strip, then "prefilled N new tokens, reused
 * M cached; K tokens at X ms/token", and what the sliding window did, if anything.
 */
export function formatReply(
  r: ReplyResult,
  nPositions: number,
  window: SlidingWindow,
): string[] {
  const lines: string[] = [];
  const n = r.tokenMs.length;
  const mean = n ? r.tokenMs.reduce((a, b) => a + b, 0) / n : 0;
  if (n) {
    lines.push(
      `token ms ${sparkline(r.tokenMs)} (min ${ms(Math.min(...r.tokenMs))}, max ` +
        `${ms(Math.max(...r.tokenMs))})`,
    );
  }
  const how = r.useCache ? "KV cache on" : "cache off: every token recomputed the conversation";
  const speed = n ? ` at ${ms(mean)} ms/token (${Math.round(1000 / mean)} tok/s)` : "";
  lines.push(
    `prefilled ${r.prefilledTokens} new tokens, reused ${r.reusedTokens} cached ` +
      `(first token ${ms(r.prefillMs)} ms); ${n} more tokens${speed} · ${how} · stop: ${r.stop}`,
  );
  if (r.droppedTokens) {
    lines.push(
      `context full (${nPositions} positions): the sliding window kept the first ` +
        `${window.sinks} and the last ≤${window.recent} tokens, dropped ${r.droppedTokens} ` +
        `(${r.evictions}×), ${
          r.windowMode === "sinks" ? "kept rows cached (sinks)" : "kept tokens prefilled again"
        }`,
    );
  }
  return lines;
}

/** The lines `/stats` prints. */
export function formatStats(s: ChatStats): string[] {
  const mean = (t: { tokens: number; ms: number }) =>
    t.tokens ? `${ms(t.ms / t.tokens)} ms/token (${t.tokens} tokens)` : "- (no tokens yet)";
  return [
    `tokens cached: ${s.cachedTokens} of ${s.nPositions} positions ` +
    `(conversation ${s.conversationTokens} tokens, ${s.droppedTokens} dropped by the window)`,
    `cache bytes: ${bytes(s.cacheBytesUsed)} used of ${bytes(s.cacheBytesAllocated)} allocated`,
    `mean decode time: cached ${mean(s.cached)}, uncached ${mean(s.uncached)}`,
    `decode: ${s.decodePath} path, ` +
    (s.chained ? "steps chained, tokens read back in batches" : "logits read back per token"),
  ];
}

const BARS = "▁▂▃▄▅▆▇█";

/**
 * A one-line strip of `values`, one bar per value from ▁ (the smallest) to █ (the largest);
 * more than `width` values are averaged in consecutive groups to fit.
 */
export function sparkline(values: readonly number[], width = 64): string {
  if (!values.length) return "";
  const groups = Math.min(width, values.length);
  const means = Array.from({ length: groups }, (_, g) => {
    const part = values.slice(
      Math.floor((g * values.length) / groups),
      Math.floor(((g + 1) * values.length) / groups),
    );
    return part.reduce((a, b) => a + b, 0) / part.length;
  });
  const lo = Math.min(...means);
  const span = Math.max(...means) - lo;
  return means.map((v) => BARS[span > 0 ? Math.round(((v - lo) / span) * 7) : 0]).join("");
}

/**
 * The lines of a byte stream (UTF-8), without their "\n" (or "\r\n"); a last line without a
 * newline is returned too. Reads only as far as the next line needs.
 */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, end).replace(/\r$/, "");
      pending = pending.slice(end + 1);
    }
  }
  pending += decoder.decode();
  if (pending !== "") yield pending.replace(/\r$/, "");
}

function ms(v: number): string {
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function bytes(b: number): string {
  return b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`;
}

if (import.meta.main) main("chat", chat);
