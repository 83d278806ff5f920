/**
 * Training parity against PyTorch: runs the model's training step through the WGSL kernels
 * on the batch of a reference folder (`train_reference.safetensors` + `.json`, written by
 * HF's GPT2LMHeadModel and torch.optim.AdamW) and compares the loss, every parameter's
 * gradient by HF name, the loss before each of K AdamW steps, and every parameter after them.
 *
 * @module
 */
import type { Gpu } from "../kernels/gpu.ts";
import { GPT2 } from "../model/gpt2.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { maxAbsDiff } from "../base/max_abs_diff.ts";
import { readText } from "./data.ts";
import { Trainer, type TrainerOptions } from "./trainer.ts";

/** Bounds: torch's own f32-vs-f64 noise is 6e-8 (gradients), 1e-5 (steps), 4.3e-4 (final). */
export const GRADCHECK_TOLERANCE = { loss: 1e-5, grad: 1e-5, stepLoss: 1e-4, final: 1e-3 };

/** One compared tensor. */
export interface GradcheckRow {
  /** `loss`, `grad.<name>`, `step_losses` or `final.<name>`. */
  tensor: string;
  shape: readonly number[];
  maxAbsDiff: number;
  /** Largest |reference| value. */
  maxAbsRef: number;
  tolerance: number;
  pass: boolean;
}

/** The result of one reference folder. */
export interface GradcheckReport {
  model: string;
  rows: GradcheckRow[];
  /** Largest gradient diff. */
  maxGradDiff: number;
  /** Largest loss diff: the first loss and every step's. */
  maxLossDiff: number;
  pass: boolean;
}

/** What the reference's JSON says of its optimizer and batch. */
interface ReferenceSettings {
  steps: number;
  options: TrainerOptions;
}

/** Runs the whole check on `dir`; a missing or malformed reference throws, naming the file. */
export async function runGradcheck(gpu: Gpu, dir: string): Promise<GradcheckReport> {
  const jsonPath = `${dir}/train_reference.json`;
  const tensorsPath = `${dir}/train_reference.safetensors`;
  const settings = readSettings(jsonPath, await readText(jsonPath));
  const ref = await SafetensorsFile.open(tensorsPath);
  const bad = (what: string): never => {
    throw new Error(`${tensorsPath}: ${what}`);
  };
  for (const name of ["ids", "loss", "step_losses"]) if (!ref.has(name)) bad(`no "${name}" tensor`);
  const [B, T1] = ref.info("ids").shape;
  if (ref.info("ids").shape.length !== 2 || T1 < 2) bad(`ids must be [B, T+1], T >= 1`);
  const ids = ref.i32("ids");
  const batch = Array.from({ length: B }, (_, b) => [...ids.subarray(b * T1, (b + 1) * T1)]);
  const stepLosses = ref.f32("step_losses");
  if (stepLosses.length !== settings.steps) {
    bad(`step_losses has ${stepLosses.length} values, the JSON says ${settings.steps} steps`);
  }

  const model = await GPT2.load(gpu, dir);
  const trainer = new Trainer(model, { B, T: T1 - 1 }, settings.options);
  const rows: GradcheckRow[] = [];
  const compare = (tensor: string, got: Float32Array, tolerance: number) => {
    if (!ref.has(tensor)) bad(`no "${tensor}" tensor`);
    const want = ref.f32(tensor);
    const d = maxAbsDiff(got, want);
    const maxAbsRef = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    rows.push({
      tensor,
      shape: ref.info(tensor).shape,
      maxAbsDiff: d,
      maxAbsRef,
      tolerance,
      pass: d <= tolerance,
    });
  };
  const tol = GRADCHECK_TOLERANCE;
  try {
    const loss = await trainer.lossAndGradients(batch);
    compare("loss", new Float32Array([loss]), tol.loss);
    for (const [name, grad] of await trainer.gradients()) compare(`grad.${name}`, grad, tol.grad);
    const losses = new Float32Array(settings.steps);
    for (let k = 0; k < settings.steps; k++) losses[k] = await trainer.step(batch);
    compare("step_losses", losses, tol.stepLoss);
    for (const [name, p] of await trainer.parameters()) compare(`final.${name}`, p, tol.final);
  } finally {
    trainer.destroy();
    model.destroy();
  }
  const max = (prefix: string) =>
    Math.max(0, ...rows.filter((r) => r.tensor.startsWith(prefix)).map((r) => r.maxAbsDiff));
  return {
    model: dir,
    rows,
    maxGradDiff: max("grad."),
    maxLossDiff: Math.max(max("loss"), max("step_losses")),
    pass: rows.every((r) => r.pass),
  };
}

function readSettings(path: string, text: string): ReferenceSettings {
  const bad = (what: string): never => {
    throw new Error(`${path}: ${what}`);
  };
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return bad(`not JSON (${(e as Error).message.slice(0, 80)})`);
  }
  const opt = json?.optimizer as Record<string, unknown> | undefined;
  if (typeof opt !== "object" || opt === null) bad(`no "optimizer" object`);
  const num = (o: Record<string, unknown>, key: string): number => {
    const v = o[key];
    return typeof v === "number" && Number.isFinite(v) ? v : bad(`"${key}" must be a number`);
  };
  const steps = num(json, "steps");
  if (!Number.isInteger(steps) || steps < 1) bad(`"steps" must be a positive integer`);
  if (opt!.lr_schedule !== undefined && opt!.lr_schedule !== "constant") {
    bad(`only a constant lr_schedule is supported, not ${JSON.stringify(opt!.lr_schedule)}`);
  }
  return {
    steps,
    options: {
      lr: num(opt!, "lr"),
      beta1: num(opt!, "beta1"),
      beta2: num(opt!, "beta2"),
      eps: num(opt!, "eps"),
      weightDecay: num(opt!, "weight_decay"),
      gradClip: num(opt!, "grad_clip_global_norm"),
    },
  };
}
