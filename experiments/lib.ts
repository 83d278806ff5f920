/**
 * What every experiment shares: its command line (`--model`, `--quick`, `--out`, `--weights`,
 * `--reps` where it times things, and its own options) and error path (cli/usage.ts), the model
 * it runs, timing (medians of repetitions after a warm-up), a table on the terminal, and its
 * results under `--out`: the raw numbers as JSON and a chart as SVG (io/chart.ts).
 *
 * A plain `deno run experiments/NAME.ts` works too: with no flags it runs the embedded model,
 * reads no file and no environment variable, and writes its results only if allowed (asked
 * once, up front, in a terminal). An experiment whose spec names a `defaultModel` (the trained
 * char model) asks, in a terminal, to read it, and runs the embedded model when it may not.
 * Tiny Shakespeare's text comes with the module (a text import), so no read is needed for it.
 *
 * @module
 */
import {
  type DecodePath,
  EMBEDDED,
  type GPT2Config,
  gpt2Tokenizer,
  Gpu,
  type OpenedModel,
  openModel,
  type Tokenizer,
  type WeightFormat,
} from "../mod.ts";
import { fail, integer, parseOptions, UsageError, weightFormat } from "../cli/usage.ts";
import { renderSvg } from "../io/chart.ts";
import type { TopLevelSpec } from "vega-lite";
import { CharTokenizer } from "../tokenizers/char.ts";
import { splitDataset, TINY_SHAKESPEARE } from "../train/data.ts";
import shakespeare from "../data/tinyshakespeare/input.txt" with { type: "text" };
import { modelOptionsFromEnv, openGpu } from "../cli/env_options.ts";

/** The fixture `--quick` runs: GPT-2's code with 2 layers, n_embd 64, 128 positions. */
export const QUICK_MODEL = "data/tiny-gpt2";

/** The char-level GPT-2 trained here on Tiny Shakespeare (4 layers, context 64). */
export const TRAINED_MODEL = "data/shakespeare-char";

/** An option an experiment adds to the common ones; every value is parsed from a string. */
export interface ExtraOption {
  /** Shown in the usage, e.g. `--lengths 1,8,64   prompt lengths to prefill`. */
  help: string;
}

/** How an experiment describes itself and turns its options into settings. */
export interface ExperimentSpec<Settings> {
  /** File name without `.ts`; also the name of its task and of its results. */
  name: string;
  /** One line: what it measures. */
  about: string;
  /** Its own options (each takes a value), by name. */
  options?: Record<string, ExtraOption>;
  /** Checks the option values (undefined when not given) before any model is opened. */
  settings: (values: Record<string, string | undefined>, quick: boolean) => Settings;
  /** Takes `--reps R` (timed runs per measurement), with this default. */
  reps?: number;
  /**
   * Checks the settings against the model's config once it is known (before the warm-up),
   * throwing a {@linkcode UsageError}; {@linkcode fitContext} checks a length.
   */
  check?: (settings: Settings, config: GPT2Config) => void;
  /** False when only the model's config is needed (no warm-up). Default true. */
  warmup?: boolean;
  /**
   * The model run without `--model` (such as {@linkcode TRAINED_MODEL}), when it may be read;
   * unset: real GPT-2 if present, else the embedded model.
   */
  defaultModel?: string;
  /**
   * The decode path to run (default: the runner's own choice by shape and adapter); an
   * experiment that shows the general path's kernels one by one asks for "general".
   */
  decode?: DecodePath;
}

/** A running experiment: where it writes, the GPU and the model. */
export interface Experiment<Settings> {
  readonly name: string;
  readonly quick: boolean;
  /** Folder for the JSON and the SVG. */
  readonly out: string;
  /** Whether the results may be written to `out` (asked up front when not granted). */
  readonly save: boolean;
  /** `--reps`: timed runs per measurement (1 for an experiment that takes no `--reps`). */
  readonly reps: number;
  readonly gpu: Gpu;
  readonly opened: OpenedModel;
  readonly settings: Settings;
}

/**
 * Parses the command line, asks up front whether results may be written (when not granted,
 * in a terminal), opens the GPU and the model (`--quick`: the tiny fixture; `--model`: a
 * folder or hub name; default: the spec's `defaultModel` if it may be read, else real GPT-2
 * if present and readable, else the embedded 124M random model), checks the settings against it, warms it up and prints what runs on what.
 * From here on, any error ends the experiment through cli/usage.ts: one line, exit code 2
 * for bad arguments, 1 otherwise.
 */
export async function startExperiment<Settings>(
  spec: ExperimentSpec<Settings>,
): Promise<Experiment<Settings>> {
  // Experiments run at the top level of their module: an error there is an unhandled rejection.
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    fail(spec.name, e.reason);
  });
  const { values, settings, reps } = parseCommandLine(spec);
  const save = mayWrite(spec.name, values.out);
  const model = values.quick
    ? quickModel(spec.name)
    : values.model ?? defaultModel(spec.name, spec.defaultModel);
  const gpu = await openGpu();
  const opened = await openModel(gpu, model, {
    weights: values.weights,
    ...(spec.decode ? { decode: spec.decode } : modelOptionsFromEnv()),
  });
  spec.check?.(settings, opened.model.config);
  console.log(`${spec.name}: ${spec.about}`);
  console.log(`adapter: ${gpu.description}`);
  console.log(`model:   ${opened.description}`);
  if (spec.warmup ?? true) await opened.model.warmup();
  const { quick, out } = values;
  return { name: spec.name, quick, out, save, reps, gpu, opened, settings };
}

/**
 * Throws a {@linkcode UsageError} when a run needs more than the model's context:
 * `option` names the option and its value, `positions` what it needs.
 */
export function fitContext(option: string, positions: number, config: GPT2Config): void {
  if (positions > config.nPositions) {
    throw new UsageError(
      `${option}: needs ${positions} positions, the model's context has ${config.nPositions}`,
    );
  }
}

function parseCommandLine<Settings>(spec: ExperimentSpec<Settings>) {
  const extra = { ...spec.options };
  if (spec.reps !== undefined) {
    extra.reps = {
      help: `R       timed runs per measurement, after a warm-up (default ${spec.reps})`,
    };
  }
  const usage = [
    `usage: deno task ${spec.name} [options]`,
    `       deno run experiments/${spec.name}.ts [options]`,
    `  ${spec.about}`,
    spec.defaultModel
      ? `  --model M   checkpoint folder or hub name (default ${spec.defaultModel}; ` +
        `${EMBEDDED}: the random 124M)`
      : "  --model M   checkpoint folder or hub name (default: real GPT-2 if present, else embedded)",
    `  --quick     the tiny fixture (${QUICK_MODEL}) and small sizes: finishes in seconds`,
    `              (reads the fixture: the task, or deno run --allow-read)`,
    "  --out DIR   where the JSON and the SVG go (default results)",
    "  --weights W f32 (default, HF parity) or f16 (each weight rounded to f16, half the bytes)",
    ...Object.entries(extra).map(([name, o]) => `  --${name} ${o.help}`),
    "  -h, --help  this text",
    "Plain `deno run` needs no flags: it asks before writing the results (in a terminal) or",
    "prints how to save them; the task (`deno run -A`) writes them without asking.",
  ].join("\n");
  const { values } = parseOptions(usage, Deno.args, {
    model: { type: "string" },
    quick: { type: "boolean", default: false },
    out: { type: "string", default: "results" },
    weights: { type: "string", default: "f32" },
    ...Object.fromEntries(Object.keys(extra).map((name) => [name, { type: "string" as const }])),
  });
  if (values.quick && values.model !== undefined) {
    throw new UsageError(`--model ${values.model}: --quick runs the tiny fixture, drop one`);
  }
  const raw: Record<string, unknown> = values;
  const own = Object.fromEntries(
    Object.keys(spec.options ?? {}).map((name) => [name, raw[name] as string | undefined]),
  );
  const reps = spec.reps === undefined
    ? 1
    : integer("--reps", (raw.reps as string | undefined) ?? String(spec.reps), 1, 100);
  return {
    values: {
      model: values.model as string | undefined,
      quick: values.quick as boolean,
      out: values.out as string,
      weights: weightFormat(values.weights as string) as WeightFormat,
    },
    settings: spec.settings(own, values.quick as boolean),
    reps,
  };
}

/**
 * Whether the results may be written to `out`: granted already, or, in a terminal, granted
 * now (asked before the work, never after it). A plain `confirm` comes first: it reads "no"
 * on a closed input, where Deno's own prompt would wait for ever.
 */
function mayWrite(name: string, out: string): boolean {
  const write = { name: "write", path: out } as const;
  const state = Deno.permissions.querySync(write).state;
  if (state !== "prompt" || !Deno.stdin.isTerminal()) return state === "granted";
  if (!confirm(`${name}: save the results as ${out}/${name}.json and .svg?`)) return false;
  return Deno.permissions.requestSync(write).state === "granted";
}

/**
 * The tiny fixture `--quick` runs, once it may be read (asked up front in a terminal); else
 * one line naming the permission and the task that has it. (The fixture's 13 MB of weights
 * are too big to embed as the 124M shape's seeded random weights are.)
 */
function quickModel(name: string): string {
  const read = { name: "read", path: QUICK_MODEL } as const;
  let state = Deno.permissions.querySync(read).state;
  if (state === "prompt" && Deno.stdin.isTerminal()) {
    state = Deno.permissions.requestSync(read).state;
  }
  if (state === "granted") return QUICK_MODEL;
  throw new Error(
    `--quick runs the tiny fixture ${QUICK_MODEL}, which needs read access: ` +
      `\`deno task ${name} --quick\` has it (or deno run --allow-read experiments/${name}.ts --quick)`,
  );
}

/**
 * `dir` (an experiment's default model) when it may be read (asked up front in a terminal),
 * else the embedded model, saying so; undefined without a `dir`.
 */
function defaultModel(name: string, dir: string | undefined): string | undefined {
  if (dir === undefined) return undefined;
  const read = { name: "read", path: dir } as const;
  let state = Deno.permissions.querySync(read).state;
  if (state === "prompt" && Deno.stdin.isTerminal()) {
    state = Deno.permissions.requestSync(read).state;
  }
  if (state === "granted") return dir;
  console.log(
    `${name}: reading ${dir} is not allowed, so this runs the ${EMBEDDED} random model; ` +
      `\`deno task ${name}\` runs ${dir}`,
  );
  return EMBEDDED;
}

/**
 * The validation split of Tiny Shakespeare as ids of `tokenizer`: for a char tokenizer
 * `splitDataset`'s `val` (the last 10 % of the ids); for GPT-2's BPE the last 10 % of the
 * characters, encoded (nanoGPT's split of its BPE Shakespeare). The text is checked against
 * its sha256 first.
 */
export async function validationIds(tokenizer: Tokenizer): Promise<number[]> {
  const bytes = new TextEncoder().encode(shakespeare);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  if (hex !== TINY_SHAKESPEARE.sha256) {
    throw new Error(`${TINY_SHAKESPEARE.path}: sha256 ${hex} is not Tiny Shakespeare's`);
  }
  if (tokenizer instanceof CharTokenizer) return [...splitDataset(shakespeare, tokenizer).val];
  return tokenizer.encode(shakespeare.slice(Math.floor(shakespeare.length * 0.9)));
}

/** −log p(target) from row `row` of `logits` ([rows, vocabSize]), in float64. */
export function negLogLikelihood(
  logits: Float32Array,
  vocabSize: number,
  row: number,
  target: number,
): number {
  const at = row * vocabSize;
  let max = -Infinity;
  for (let j = 0; j < vocabSize; j++) max = Math.max(max, logits[at + j]);
  let sum = 0;
  for (let j = 0; j < vocabSize; j++) sum += Math.exp(logits[at + j] - max);
  return Math.log(sum) + max - logits[at + target];
}

/** `n` token ids of English text (one sentence about the cache, repeated). */
export function textTokens(n: number): number[] {
  const sentence = gpt2Tokenizer().encode(
    " The cache keeps the keys and values of every token, so a new token only attends to them.",
  );
  return Array.from({ length: n }, (_, i) => sentence[i % sentence.length]);
}

/** The median of some numbers (the mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new RangeError("median of nothing");
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Wall-clock times of repeated calls. */
export interface Timing {
  /** Median of `ms`. */
  medianMs: number;
  /** Every timed call, ms. */
  ms: number[];
  /** Whether a warm-up call ran first and was left out. */
  warmedUp: boolean;
}

/**
 * Times `fn`: one warm-up call (`fn(0)`), then up to `reps` timed calls (`fn(1)`, `fn(2)`,
 * …), stopping early once `budgetMs` is spent (at least one timed call). When the warm-up
 * alone spends the budget, it is the one timing kept (`warmedUp` false): a call that long is
 * not skewed by the first run's set-up.
 */
export async function measure(
  fn: (call: number) => Promise<unknown>,
  reps: number,
  budgetMs: number,
): Promise<Timing> {
  const time = async (call: number) => {
    const t0 = performance.now();
    await fn(call);
    return performance.now() - t0;
  };
  const first = await time(0);
  if (first >= budgetMs) return { medianMs: first, ms: [first], warmedUp: false };
  const ms: number[] = [];
  let spent = first;
  while (ms.length < reps && (ms.length === 0 || spent < budgetMs)) {
    ms.push(await time(ms.length + 1));
    spent += ms[ms.length - 1];
  }
  return { medianMs: median(ms), ms, warmedUp: true };
}

/** Prints rows under headers, numbers right-aligned, each column as wide as its widest cell. */
export function printTable(headers: readonly string[], rows: readonly (string | number)[][]) {
  const cells = rows.map((r) => r.map((c) => (typeof c === "number" ? formatNumber(c) : c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const line = (r: readonly string[], right: (i: number) => boolean) =>
    r.map((c, i) => (right(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ")
      .trimEnd();
  const numeric = (i: number) => rows.length > 0 && typeof rows[0][i] === "number";
  console.log(line(headers, numeric));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of cells) console.log(line(r, numeric));
}

/** Integers with thousands separators; other numbers with 3 significant digits or 2 decimals. */
export function formatNumber(n: number): string {
  if (Number.isInteger(n)) return n.toLocaleString("en-US");
  if (Math.abs(n) >= 100) return n.toFixed(0);
  return Math.abs(n) >= 1 ? n.toFixed(2) : String(Number(n.toPrecision(3)));
}

/** Bytes as MiB with 2 decimals. */
export function mib(bytes: number): number {
  return Math.round((bytes / 2 ** 20) * 100) / 100;
}

/**
 * Writes `<out>/<name>.json` (what ran on what, then `data`) and `<out>/<name>.svg` (the
 * Vega-Lite `chart`, titled `title`, with the model and adapter as subtitle), and prints
 * their paths.
 */
export async function writeResults<S>(
  ex: Experiment<S>,
  data: Record<string, unknown>,
  title: string,
  chart: TopLevelSpec,
): Promise<void> {
  if (!ex.save) {
    console.log(
      `\nnot saved: writing ${ex.out}/ is not allowed; \`deno task ${ex.name}\` (or deno run -A ` +
        `experiments/${ex.name}.ts) writes ${ex.out}/${ex.name}.json and .svg`,
    );
    return;
  }
  await Deno.mkdir(ex.out, { recursive: true });
  const json = `${ex.out}/${ex.name}.json`;
  const svg = `${ex.out}/${ex.name}.svg`;
  const about = {
    experiment: ex.name,
    date: new Date().toISOString(),
    adapter: ex.gpu.description,
    model: ex.opened.name,
    modelDescription: ex.opened.description,
    weights: ex.opened.model.weightFormat,
    quick: ex.quick,
  };
  await Deno.writeTextFile(json, JSON.stringify({ ...about, ...data }, null, 1) + "\n");
  const subtitle = `${ex.opened.name}${ex.opened.random ? " (random weights)" : ""} · ` +
    ex.gpu.description.split(";")[0];
  await Deno.writeTextFile(svg, await renderSvg({ ...chart, title: { text: title, subtitle } }));
  console.log(`\nwrote ${json}\nwrote ${svg}`);
}
