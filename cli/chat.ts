/**
 * `deno task chat`: talk with a model while watching the KV cache work. Each line you type is
 * appended to a conversation held in the cache, and the reply streams token by token, followed
 * by a strip of each token's time and what was prefilled or reused. `/cache off` recomputes
 * everything per token for comparison. Works piped (`printf 'ROMEO:\n' | deno task chat`):
 * then the output is plain text and the input lines are echoed. `--help` lists the options.
 *
 * @module
 */
import { Gpu } from "../kernels/gpu.ts";
import { CHAT_HELP, type ChatOptions, ChatSession, readLines } from "../run/chat.ts";
import { openModel, tokenizerFor, TRAINED } from "../run/open_model.ts";
import { integer, main, number, parseOptions, UsageError, weightFormat } from "./usage.ts";

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

main("chat", async () => {
  const args = parse(Deno.args);
  const spec = args.model ??
    (await isFile(`${TRAINED}/config.json`) ? TRAINED : FALLBACK_MODEL);
  const gpu = await Gpu.open();
  const opened = await openModel(gpu, spec, { weights: args.weights });
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
    style: terminal ? (s) => `\x1b[2m${s}\x1b[0m` : undefined,
  };
  let session: ChatSession;
  try {
    session = await ChatSession.open(opened.model, tokenizer, options);
  } catch (e) {
    if (!args.system) throw e;
    throw new UsageError(`--system: ${(e as Error).message}`);
  }
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
      const next = await session.handle(line, write, replying.signal);
      replying = null;
      if (next === "quit") break;
      if (terminal) write("> ");
    }
    if (terminal) write("\n");
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
    session.destroy();
  }
});

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
