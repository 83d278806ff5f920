/**
 * `deno task train`: trains a GPT-2 on a text file with the WGSL kernels. The defaults are
 * nanoGPT's CPU "baby" recipe on Tiny Shakespeare, character level: 4 layers, 4 heads, n_embd
 * 128, block 64, batch 12, 2000 iterations, lr 1e-3 with 100 warm-up iterations then cosine
 * decay to 1e-4, AdamW betas (0.9, 0.99), weight decay 0.1, grad clip 1.0, GPT-2's init.
 * Checkpoints (HF's layout + tokenizer + optimizer state) go to `--out`; `--resume` continues
 * one exactly; Ctrl-C saves one and exits.
 *
 * @module
 */
import type { Gpu } from "../kernels/gpu.ts";
import { type GPT2Config, loadConfig, parseConfig } from "../model/config.ts";
import { GPT2 } from "../model/gpt2.ts";
import { gpt2Init, loadCheckpoint } from "../model/weights.ts";
import { CharTokenizer } from "../tokenizers/char.ts";
import { gpt2Tokenizer } from "../tokenizers/gpt2.ts";
import { type Tokenizer } from "../tokenizers/tokenizer.ts";
import { resumeCheckpoint, saveCheckpoint, type TrainState } from "../train/checkpoint.ts";
import { batchRng, readText, sampleBatch, splitDataset, TINY_SHAKESPEARE } from "../train/data.ts";
import { cosineLr, type Schedule } from "../train/schedule.ts";
import { Trainer } from "../train/trainer.ts";
import { renderSvg } from "../io/chart.ts";
import { integer, main, number, parseOptions, UsageError } from "./usage.ts";
import { openGpu } from "./env_options.ts";

const USAGE = `usage: deno task train [options]
  trains GPT-2 on a text with the WGSL kernels (defaults: nanoGPT's char-level "baby" recipe)
data and model:
  --data FILE          training text (default ${TINY_SHAKESPEARE.path})
  --tokenizer T        char (default) or gpt2
  --init DIR           fine-tune this checkpoint (its tokenizer and shape) instead of a new model
  --n-layer N          4        --n-head N   4        --n-embd N   128
  --block-size N       tokens per sequence and the model's context (default 64)
schedule:
  --batch-size N       sequences per step (default 12)
  --max-iters N        training steps (default 2000)
  --lr X               peak learning rate (default 1e-3)
  --min-lr X           learning rate at the end of the cosine decay (default 1e-4)
  --warmup N           linear warm-up steps (default 100)
evaluation:
  --eval-interval N    evaluate train and val loss every N steps (default 250)
  --eval-iters N       batches per evaluation (default 20)
  --log-interval N     print the loss every N steps (default 10)
output:
  --seed N             batches and init (default 1337)
  --out DIR            checkpoint folder (default out/shakespeare-char)
  --resume             continue the run in --out exactly where it stopped
  --json               progress as JSON lines
  -h, --help           this text
Ctrl-C saves a checkpoint and exits.`;

/** The resolved settings of a run, stored in its checkpoint. */
interface Settings {
  data: string;
  tokenizer: "char" | "gpt2";
  init: string | null;
  nLayer: number;
  nHead: number;
  nEmbd: number;
  blockSize: number;
  batchSize: number;
  maxIters: number;
  lr: number;
  minLr: number;
  warmup: number;
  evalInterval: number;
  evalIters: number;
  logInterval: number;
  seed: number;
}

const INTEGER_OPTIONS = {
  "n-layer": 4,
  "n-head": 4,
  "n-embd": 128,
  "block-size": 64,
  "batch-size": 12,
  "max-iters": 2000,
  warmup: 100,
  "eval-interval": 250,
  "eval-iters": 20,
  "log-interval": 10,
  seed: 1337,
} as const;

const FLOAT_OPTIONS = { lr: 1e-3, "min-lr": 1e-4 } as const;

function parseCommandLine(args: string[]) {
  const strings = [...Object.keys(INTEGER_OPTIONS), ...Object.keys(FLOAT_OPTIONS)];
  const { values } = parseOptions(USAGE, args, {
    ...Object.fromEntries(strings.map((k) => [k, { type: "string" as const }])),
    data: { type: "string", default: TINY_SHAKESPEARE.path },
    tokenizer: { type: "string", default: "char" },
    init: { type: "string" },
    out: { type: "string", default: "out/shakespeare-char" },
    resume: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  });
  const v = values as Record<string, string | boolean | undefined>;
  const given = (k: string) => v[k] as string | undefined;
  const int = (k: keyof typeof INTEGER_OPTIONS, min: number) =>
    given(k) === undefined ? INTEGER_OPTIONS[k] : integer(`--${k}`, given(k)!, min, Infinity);
  const float = (k: keyof typeof FLOAT_OPTIONS) =>
    given(k) === undefined
      ? FLOAT_OPTIONS[k]
      : number(`--${k}`, given(k)!, "a number >= 0", (x) => x >= 0);
  const tokenizer = v.tokenizer as string;
  if (tokenizer !== "char" && tokenizer !== "gpt2") {
    throw new UsageError(`--tokenizer: expected char or gpt2, got "${tokenizer}"`);
  }
  const settings: Settings = {
    data: v.data as string,
    tokenizer,
    init: given("init") ?? null,
    nLayer: int("n-layer", 1),
    nHead: int("n-head", 1),
    nEmbd: int("n-embd", 4),
    blockSize: int("block-size", 1),
    batchSize: int("batch-size", 1),
    maxIters: int("max-iters", 0),
    lr: float("lr"),
    minLr: float("min-lr"),
    warmup: int("warmup", 0),
    evalInterval: int("eval-interval", 1),
    evalIters: int("eval-iters", 1),
    logInterval: int("log-interval", 1),
    seed: int("seed", 0),
  };
  return {
    settings,
    maxItersGiven: given("max-iters") !== undefined,
    out: v.out as string,
    resume: v.resume as boolean,
    json: v.json as boolean,
  };
}

/** The model to train: a new one of the settings' shape, or the --init/resumed checkpoint. */
async function openModel(gpu: Gpu, s: Settings, from: string | null, tokenizer: Tokenizer) {
  if (from) {
    const { config, weights } = await loadCheckpoint(from);
    if (config.vocabSize < tokenizer.vocabSize) {
      throw new Error(
        `${from}: vocabulary of ${config.vocabSize}, the tokenizer has ${tokenizer.vocabSize}`,
      );
    }
    return new GPT2(gpu, config, weights);
  }
  let config: GPT2Config;
  try {
    config = parseConfig({
      vocab_size: tokenizer.vocabSize,
      n_positions: s.blockSize,
      n_embd: s.nEmbd,
      n_layer: s.nLayer,
      n_head: s.nHead,
      // A char vocabulary has no end-of-text (nor start) token: none, not a character.
      bos_token_id: tokenizer.name === "gpt2" ? tokenizer.eosTokenId : null,
      eos_token_id: tokenizer.name === "gpt2" ? tokenizer.eosTokenId : null,
    }, "the model options");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return new GPT2(gpu, config, gpt2Init(config, s.seed));
}

main("train", async () => {
  const cl = parseCommandLine(Deno.args);
  const print = (line: string, record: Record<string, unknown>) =>
    console.log(cl.json ? JSON.stringify(record) : line);
  let settings = cl.settings;
  let state: TrainState = { iteration: 0, settings: { ...settings }, log: [] };
  if (cl.resume) {
    const path = `${cl.out}/train_state.json`;
    try {
      state = JSON.parse(await Deno.readTextFile(path));
    } catch (e) {
      const why = e instanceof Deno.errors.NotFound ? "not found: nothing to resume" : "unreadable";
      throw new Error(`${path}: ${why}`);
    }
    settings = { ...(state.settings as unknown as Settings) };
    if (cl.maxItersGiven) settings.maxIters = cl.settings.maxIters;
  }

  // Tokenizer: the checkpoint's own (char when it has vocab.json), else the option's.
  const from = cl.resume ? cl.out : settings.init;
  if (from) {
    const { nPositions } = await loadConfig(`${from}/config.json`);
    if (settings.blockSize > nPositions) {
      throw new UsageError(
        `--block-size ${settings.blockSize} is larger than the model's context (n_positions ${nPositions})`,
      );
    }
  }
  const text = await readText(settings.data);
  const saved = from ? await CharTokenizer.load(from) : null;
  const tokenizer: Tokenizer = saved ??
    (from || settings.tokenizer === "gpt2" ? gpt2Tokenizer() : CharTokenizer.fromText(text));
  const data = splitDataset(text, tokenizer);
  const B = settings.batchSize;
  const T = settings.blockSize;
  if (data.val.length < T + 1) {
    throw new Error(
      `${settings.data}: the validation split (${data.val.length} tokens) is shorter than one window`,
    );
  }

  const gpu = await openGpu();
  const model = await openModel(gpu, settings, from, tokenizer);
  const trainer = new Trainer(model, { B, T });
  if (cl.resume) {
    state = { ...(await resumeCheckpoint(cl.out, trainer)), settings: { ...settings } };
  }
  const charTokenizer = tokenizer instanceof CharTokenizer ? tokenizer : null;
  const { config } = model;
  if (!cl.json) {
    console.log(`adapter: ${gpu.description}`);
    console.log(
      `model:   ${config.nLayer} layers, ${config.nHead} heads, n_embd ${config.nEmbd}, ` +
        `context ${config.nPositions}, vocabulary ${config.vocabSize} (${tokenizer.name}), ` +
        `${(trainer.parameterCount / 1e6).toFixed(2)}M parameters` +
        (from ? ` from ${from}` : " (GPT-2 init)"),
    );
    console.log(
      `data:    ${settings.data}: ${data.train.length} train + ${data.val.length} val tokens; ` +
        `batch ${B} x ${T}; ${cl.resume ? `resuming at iteration ${state.iteration}` : "new run"}`,
    );
  }

  const schedule: Schedule = {
    lr: settings.lr,
    minLr: settings.minLr,
    warmup: settings.warmup,
    decayIters: settings.maxIters,
  };
  const evaluate = async (it: number) => {
    const losses: Record<string, number> = {};
    for (const [split, ids, stream] of [["train", data.train, 1], ["val", data.val, 2]] as const) {
      let sum = 0;
      for (let k = 0; k < settings.evalIters; k++) {
        sum += await trainer.loss(
          sampleBatch(ids, B, T, batchRng(settings.seed, it * 1000 + k, stream)),
        );
      }
      losses[split] = sum / settings.evalIters;
    }
    const record = { iter: it, train_loss: losses.train, val_loss: losses.val };
    state.log.push(record);
    print(
      `eval ${it}: train loss ${losses.train.toFixed(4)}, val loss ${losses.val.toFixed(4)}`,
      record,
    );
    return losses;
  };
  const evaluatedAt = (it: number) => state.log.some((r) => "val_loss" in r && r.iter === it);
  const save = async (it: number) => {
    state.iteration = it;
    await saveCheckpoint(cl.out, trainer, charTokenizer, state);
  };

  let stop = false;
  const onInterrupt = () => {
    stop = true;
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  const t0 = performance.now();
  let tLog = t0;
  let itLog = state.iteration;
  let it = state.iteration;
  try {
    for (; it < settings.maxIters && !stop; it++) {
      if (it % settings.evalInterval === 0 && !evaluatedAt(it)) {
        await evaluate(it);
        await save(it);
      }
      const lr = cosineLr(schedule, it);
      const batch = sampleBatch(data.train, B, T, batchRng(settings.seed, it));
      const logNow = (it + 1) % settings.logInterval === 0 || it + 1 === settings.maxIters;
      const loss = await trainer.step(batch, { lr, loss: logNow });
      if (logNow) {
        const now = performance.now();
        const msPerIter = (now - tLog) / (it + 1 - itLog);
        const record = {
          iter: it + 1,
          loss,
          lr,
          ms_per_iter: msPerIter,
          tok_s: (B * T * 1000) / msPerIter,
          eta_s: ((settings.maxIters - it - 1) * msPerIter) / 1000,
        };
        state.log.push(record);
        print(
          `iter ${it + 1}/${settings.maxIters}: loss ${loss.toFixed(4)}, lr ${
            lr.toExponential(2)
          }, ` +
            `${msPerIter.toFixed(1)} ms/iter, ${record.tok_s.toFixed(0)} tok/s, ` +
            `ETA ${record.eta_s.toFixed(0)} s`,
          record,
        );
        tLog = now;
        itLog = it + 1;
      }
    }
    if (stop) {
      await save(it);
      console.error(
        `train: interrupted at iteration ${it}; checkpoint saved to ${cl.out} (continue with --resume)`,
      );
      return 0;
    }
    const final = await evaluate(it);
    await save(it);
    const wall = (performance.now() - t0) / 1000;
    await writeLossChart(cl.out, state);
    await Deno.writeTextFile(`${cl.out}/log.json`, JSON.stringify(state.log, null, 1) + "\n");
    print(
      `done: ${it} iterations, train loss ${final.train.toFixed(4)}, val loss ` +
        `${final.val.toFixed(4)}, ${
          wall.toFixed(1)
        } s; checkpoint, loss.svg and log.json in ${cl.out}`,
      { done: true, iterations: it, train_loss: final.train, val_loss: final.val, wall_s: wall },
    );
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
    trainer.destroy();
    model.destroy();
  }
});

/** loss.svg: the logged training loss and the evaluated train/val losses by iteration. */
async function writeLossChart(out: string, state: TrainState): Promise<void> {
  const points = state.log.flatMap((r) =>
    "val_loss" in r
      ? [
        { iter: r.iter, loss: r.train_loss, series: "train (eval)" },
        { iter: r.iter, loss: r.val_loss, series: "val (eval)" },
      ]
      : [{ iter: r.iter, loss: r.loss, series: "train (step)" }]
  );
  const svg = await renderSvg({
    title: "training loss",
    width: 520,
    height: 300,
    data: { values: points },
    mark: { type: "line", point: false },
    encoding: {
      x: { field: "iter", type: "quantitative", title: "iteration" },
      y: { field: "loss", type: "quantitative", title: "cross-entropy", scale: { zero: false } },
      color: { field: "series", type: "nominal", title: null },
    },
  });
  await Deno.writeTextFile(`${out}/loss.svg`, svg);
}
