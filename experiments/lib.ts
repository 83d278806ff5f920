/**
 * What every experiment shares: its command line (`--model`, `--quick`, `--out`, `--weights`
 * and its own options), the model it runs, timing (medians of repetitions after a warm-up), a table on
 * the terminal, and its results under `--out`: the raw numbers as JSON and a chart as SVG,
 * drawn by Vega-Lite.
 *
 * @module
 */
import { parseArgs } from "node:util";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { gpt2Tokenizer, Gpu, type OpenedModel, openModel, type WeightFormat } from "../mod.ts";
import { parseWeightFormat } from "../kernels/matmul.ts";

/** The fixture `--quick` runs: GPT-2's code with 2 layers, n_embd 64, 128 positions. */
export const QUICK_MODEL = "data/tiny-gpt2";

/** A command-line mistake: printed with the usage, exit code 2. */
export class UsageError extends Error {}

/** An option an experiment adds to the common ones; every value is parsed from a string. */
export interface ExtraOption {
  /** Shown in the usage, e.g. `--lengths 1,8,64   prompt lengths to prefill`. */
  help: string;
}

/** How an experiment describes itself and turns its options into settings. */
export interface ExperimentSpec<Settings> {
  /** File name without `.ts`; also the name of its results. */
  name: string;
  /** One line: what it measures. */
  about: string;
  /** Its own options (each takes a value), by name. */
  options?: Record<string, ExtraOption>;
  /** Checks the option values (undefined when not given) before any model is opened. */
  settings: (values: Record<string, string | undefined>, quick: boolean) => Settings;
  /** False when only the model's config is needed (no warm-up). Default true. */
  warmup?: boolean;
}

/** A running experiment: where it writes, the GPU and the model. */
export interface Experiment<Settings> {
  readonly name: string;
  readonly quick: boolean;
  /** Folder for the JSON and the SVG. */
  readonly out: string;
  readonly gpu: Gpu;
  readonly opened: OpenedModel;
  readonly settings: Settings;
}

/**
 * Parses the command line, opens the GPU and the model (`--quick`: the tiny fixture;
 * `--model`: a folder or hub name; default: real GPT-2 if present, else the embedded 124M
 * random model), warms it up and prints what runs on what. Bad arguments print the usage
 * and exit with code 2.
 */
export async function startExperiment<Settings>(
  spec: ExperimentSpec<Settings>,
): Promise<Experiment<Settings>> {
  const { values, settings } = parseCommandLine(spec);
  const gpu = await Gpu.open();
  const opened = await openModel(gpu, values.quick ? QUICK_MODEL : values.model, {
    weights: values.weights,
  });
  console.log(`${spec.name}: ${spec.about}`);
  console.log(`adapter: ${gpu.description}`);
  console.log(`model:   ${opened.description}`);
  if (spec.warmup ?? true) await opened.model.warmup();
  return { name: spec.name, quick: values.quick, out: values.out, gpu, opened, settings };
}

function parseCommandLine<Settings>(spec: ExperimentSpec<Settings>) {
  const extra = spec.options ?? {};
  const usage = [
    `usage: deno run -A experiments/${spec.name}.ts [--model DIR] [--quick] [--out DIR] ` +
    "[--weights f32|f16]",
    `  ${spec.about}`,
    "  --model M   checkpoint folder or hub name (default: real GPT-2 if present, else embedded)",
    `  --quick     the tiny fixture (${QUICK_MODEL}) and small sizes: finishes in seconds`,
    "  --out DIR   where the JSON and the SVG go (default results)",
    "  --weights W f32 (default, HF parity) or f16 (each weight rounded to f16, half the bytes)",
    ...Object.entries(extra).map(([name, o]) => `  --${name} ${o.help}`),
  ].join("\n");
  try {
    const { values } = parseArgs({
      args: Deno.args,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: "string" },
        quick: { type: "boolean", default: false },
        out: { type: "string", default: "results" },
        weights: { type: "string", default: "f32" },
        help: { type: "boolean", default: false },
        ...Object.fromEntries(Object.keys(extra).map((name) => [name, { type: "string" }])),
      },
    });
    if (values.help) {
      console.log(usage);
      Deno.exit(0);
    }
    if (values.quick && values.model !== undefined) {
      throw new UsageError("--quick runs the tiny fixture: drop --model");
    }
    const raw: Record<string, unknown> = values;
    const own = Object.fromEntries(
      Object.keys(extra).map((name) => [name, raw[name] as string | undefined]),
    );
    const settings = spec.settings(own, values.quick!);
    let weights: WeightFormat;
    try {
      weights = parseWeightFormat(values.weights!, "--weights");
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    return {
      values: {
        model: values.model as string | undefined,
        quick: values.quick!,
        out: values.out!,
        weights,
      },
      settings,
    };
  } catch (e) {
    const parseError = String((e as { code?: string }).code).startsWith("ERR_PARSE_ARGS");
    if (!(e instanceof UsageError) && !parseError) throw e;
    console.error(`${spec.name}: ${(e as Error).message}\n${usage}`);
    Deno.exit(2);
  }
}

/** Parses `--name n` as an integer in [min, max]. */
export function int(name: string, value: string, min: number, max: number): number {
  const n = Number(value.trim());
  if (!value.trim() || !Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name}: expected an integer in ${min}..${max}, got "${value}"`);
  }
  return n;
}

/** Parses `--name a,b,c` as increasing integers in [min, max]. */
export function intList(name: string, value: string, min: number, max: number): number[] {
  const list = value.split(",").map((v) => int(name, v, min, max));
  if (list.some((n, i) => i > 0 && n <= list[i - 1])) {
    throw new UsageError(`--${name}: expected increasing integers, got "${value}"`);
  }
  return list;
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

/** Renders a Vega-Lite spec to an SVG string, headless (no browser, no canvas). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const config = { font: "Helvetica, Arial, sans-serif", background: "white" };
  const { spec: compiled } = compile({ config, ...spec } as TopLevelSpec);
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
