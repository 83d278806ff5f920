/**
 * Training a {@link GPT2} on the GPU: a step is one submission of the forward over B
 * sequences of T tokens, the cross-entropy loss, the backward to every parameter's
 * gradient, the global gradient norm and an AdamW update of every parameter, exactly as
 * `torch.optim.AdamW` with `clip_grad_norm_` does it. Parameters, gradients and moments stay
 * on the GPU; the CPU reads the loss only when asked. The same model then generates with
 * its cache: training updates its weights in place.
 *
 * @module
 */
import { type AdamWOptions, adamwPartials, adamwStep } from "../kernels/adamw.ts";
import { TensorArena } from "../kernels/arena.ts";
import type { Gpu, Plan, Tensor } from "../kernels/gpu.ts";
import { type RowChunks, transpose } from "../kernels/matmul.ts";
import { crossEntropyGradInPlace } from "../kernels/softmax.ts";
import type { GPT2, Gradients, Parameter } from "../model/gpt2.ts";
import { TrainingActivations } from "./activations.ts";

/** AdamW's settings; the learning rate can change every step. */
export interface TrainerOptions extends AdamWOptions {
  /** Learning rate of a step that names none. */
  lr: number;
}

/** nanoGPT's recipe for small models: lr 1e-3, betas (0.9, 0.99), decay 0.1, clip 1.0. */
export const DEFAULT_TRAINER_OPTIONS: TrainerOptions = {
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.99,
  eps: 1e-8,
  weightDecay: 0.1,
  gradClip: 1.0,
};

/** Options of one {@link Trainer.step}. */
export interface StepOptions {
  /** This step's learning rate (default: the trainer's). */
  lr?: number;
  /** Read the loss back (one CPU wait); default true. */
  loss?: boolean;
  /** Time every dispatch (GPU timestamps; read them with `gpu.readProfile()`). */
  profile?: boolean;
}

/**
 * What the optimizer keeps for one parameter: its gradient and AdamW's two moments, views of
 * buffers laid out as the model's parameter arena.
 */
interface Slot {
  readonly parameter: Parameter;
  readonly grads: readonly Tensor[]; // like parameter.parts
  readonly m: readonly Tensor[];
  readonly v: readonly Tensor[];
}

/**
 * Trains a model on batches of B token sequences of T + 1 ids each (inputs ids[0..T-1],
 * targets ids[1..T]), with the batch shape fixed at construction.
 */
export class Trainer {
  /** AdamW steps taken. */
  steps = 0;
  readonly options: TrainerOptions;
  readonly activations: TrainingActivations;
  readonly #slots: Slot[];
  readonly #gradOf = new Map<Tensor, Tensor>();
  readonly #grads: Tensor; //    every gradient, laid out as the model's parameter arena
  readonly #m: Tensor; //        AdamW's first moments, the same layout
  readonly #v: Tensor; //        and its second moments
  readonly #stepInfo: Tensor; // [4] f32: lr, 1 - beta1^t, 1 - beta2^t, 0
  readonly #norm: Tensor; //     [4] f32: the global gradient norm in word 0
  readonly #partials: Tensor; // f32 scratch of the norm
  readonly #owned: Tensor[] = [];
  #plans = new Map<string, Plan>();

  constructor(
    readonly model: GPT2,
    readonly batch: { B: number; T: number },
    options: Partial<TrainerOptions> = {},
  ) {
    if (model.weightFormat !== "f32") {
      throw new Error(`training needs f32 weights; this model stores ${model.weightFormat}`);
    }
    this.options = { ...DEFAULT_TRAINER_OPTIONS, ...options };
    checkOptions(this.options);
    const gpu = this.gpu;
    this.activations = new TrainingActivations(gpu, model.config, batch.B, batch.T);
    const { whole } = model.arena;
    this.#grads = this.#own(gpu.tensor(whole.shape, "gradients"));
    this.#m = this.#own(gpu.tensor(whole.shape, "adamw m"));
    this.#v = this.#own(gpu.tensor(whole.shape, "adamw v"));
    const at = (mirror: Tensor, t: Tensor) =>
      TensorArena.at(mirror, { ...t, offset: t.offset - whole.offset });
    this.#slots = model.parameters().map((parameter) => {
      const grads = parameter.parts.map((t) => at(this.#grads, t));
      grads.forEach((g, i) => this.#gradOf.set(parameter.parts[i], g));
      return {
        parameter,
        grads,
        m: parameter.parts.map((t) => at(this.#m, t)),
        v: parameter.parts.map((t) => at(this.#v, t)),
      };
    });
    this.#stepInfo = this.#own(gpu.tensor([4], "adamw step"));
    this.#norm = this.#own(gpu.tensor([4], "grad norm"));
    const partials = adamwPartials(gpu, whole.shape[0]);
    this.#partials = this.#own(gpu.tensor([partials], "grad norm partials"));
  }

  /** Parameters trained (a tied lm_head counted once). */
  get parameterCount(): number {
    return this.#slots.reduce((n, s) => n + s.parameter.shape.reduce((a, b) => a * b, 1), 0);
  }

  /** Compute dispatches in one training step (forward, backward and update). */
  get dispatchesPerStep(): number {
    return this.#plan("step").filter((s) => "pipeline" in s).length;
  }

  get gpu(): Gpu {
    return this.model.gpu;
  }

  /**
   * One training step on `batch` (B rows of T + 1 token ids): forward, loss, backward and an
   * AdamW update, in one submission. Returns the mean loss before the update, when asked.
   */
  async step(batch: readonly (readonly number[])[], options: StepOptions = {}): Promise<number> {
    const lr = options.lr ?? this.options.lr;
    if (!(lr >= 0) || !Number.isFinite(lr)) throw new RangeError(`lr must be >= 0, got ${lr}`);
    this.#writeBatch(batch);
    const t = ++this.steps;
    const { beta1, beta2 } = this.options;
    this.gpu.write(this.#stepInfo, new Float32Array([lr, 1 - beta1 ** t, 1 - beta2 ** t, 0]));
    this.gpu.run(this.#plan("step"), { profile: options.profile });
    this.model.weightsVersion++;
    return options.loss === false ? NaN : await this.#meanLoss();
  }

  /** The mean loss on `batch` without any update (e.g. validation). */
  async loss(batch: readonly (readonly number[])[]): Promise<number> {
    this.#writeBatch(batch);
    this.gpu.run(this.#plan("loss"));
    return await this.#meanLoss();
  }

  /**
   * Forward and backward on `batch` without an update: the mean loss, and afterwards
   * {@link Trainer.gradients} holds this batch's gradients.
   */
  async lossAndGradients(batch: readonly (readonly number[])[]): Promise<number> {
    this.#writeBatch(batch);
    this.gpu.run(this.#plan("gradients"));
    return await this.#meanLoss();
  }

  /** The gradients of the last step, by HF parameter name, in HF's layout. */
  async gradients(): Promise<Map<string, Float32Array>> {
    return await this.#readNamed((s) => s.grads);
  }

  /** The parameters, by HF name, in HF's layout. */
  async parameters(): Promise<Map<string, Float32Array>> {
    return await this.#readNamed((s) => s.parameter.parts);
  }

  /** HF's shape of the parameter `name`. */
  shapeOf(name: string): readonly number[] {
    const slot = this.#slots.find((s) => s.parameter.name === name);
    if (!slot) throw new Error(`no parameter named ${name}`);
    return slot.parameter.shape;
  }

  /** The optimizer's moments by HF name (for checkpoints): m then v. */
  async moments(): Promise<{ m: Map<string, Float32Array>; v: Map<string, Float32Array> }> {
    return { m: await this.#readNamed((s) => s.m), v: await this.#readNamed((s) => s.v) };
  }

  /** Restores the optimizer's moments and step count (from a checkpoint). */
  setMoments(m: Map<string, Float32Array>, v: Map<string, Float32Array>, steps: number): void {
    for (const s of this.#slots) {
      this.#writeNamed(s, s.m, m.get(s.parameter.name), "m");
      this.#writeNamed(s, s.v, v.get(s.parameter.name), "v");
    }
    this.steps = steps;
  }

  /** Frees the activations, gradients and moments (the model stays). */
  destroy(): void {
    this.activations.destroy();
    for (const t of this.#owned.splice(0)) this.gpu.destroy(t);
    this.#plans.clear();
  }

  [Symbol.dispose](): void {
    this.destroy();
  }

  /** The plan of `what`, recorded once. */
  #plan(what: "step" | "loss" | "gradients"): Plan {
    let plan = this.#plans.get(what);
    if (!plan) {
      const { model, activations: a } = this;
      const forward = [
        ...model.record(a.pass()), // logits: [N, ldy]
        ...crossEntropyGradInPlace(
          this.gpu,
          a.logits,
          model.config.vocabSize,
          a.targets,
          a.losses,
          1 / a.N,
        ), // losses: [N]; logits -> d logits
      ];
      const grads: Gradients = {
        of: (p) => this.#gradOf.get(p)!,
        chunks: (w: RowChunks) => ({
          ...w,
          parts: w.parts.map((c) => ({ row0: c.row0, tensor: this.#gradOf.get(c.tensor)! })),
        }),
      };
      const backward = model.backward(a.pass(), a.T, a.grads, grads);
      plan = what === "loss"
        ? forward
        : what === "gradients"
        ? [...forward, ...backward]
        : [...forward, ...backward, ...this.#update()];
      this.#plans.set(what, plan);
    }
    return plan;
  }

  /**
   * The global gradient norm, then AdamW on every parameter at once: the arena puts the
   * matrices (HF's parameters of two dimensions, which torch recipes decay) first.
   */
  #update(): Plan {
    const { arena } = this.model;
    const state = { param: arena.whole, grad: this.#grads, m: this.#m, v: this.#v };
    return adamwStep(
      this.gpu,
      state,
      this.#stepInfo,
      this.#partials,
      this.#norm,
      this.options,
      arena.matrixWords,
    );
  }

  #writeBatch(batch: readonly (readonly number[])[]): void {
    const { B, T } = this.activations;
    const V = this.model.config.vocabSize;
    if (batch.length !== B) throw new RangeError(`batch: ${batch.length} sequences, expected ${B}`);
    const ids = new Uint32Array(B * T);
    const targets = new Uint32Array(B * T);
    batch.forEach((row, b) => {
      if (row.length !== T + 1) {
        throw new RangeError(
          `batch: sequence ${b} has ${row.length} ids, expected T + 1 = ${T + 1}`,
        );
      }
      row.forEach((id, t) => {
        if (!Number.isInteger(id) || id < 0 || id >= V) {
          throw new RangeError(
            `batch: token id ${id} (sequence ${b}, position ${t}) is outside 0..${V - 1}`,
          );
        }
        if (t < T) ids[b * T + t] = id;
        if (t > 0) targets[b * T + t - 1] = id;
      });
    });
    this.gpu.write(this.activations.ids, ids);
    this.gpu.write(this.activations.targets, targets);
  }

  async #meanLoss(): Promise<number> {
    const losses = await this.gpu.read1(this.activations.losses);
    let sum = 0;
    for (const l of losses) sum += l;
    return sum / losses.length;
  }

  async #readNamed(tensors: (s: Slot) => readonly Tensor[]): Promise<Map<string, Float32Array>> {
    const parts = this.#slots.map(tensors);
    const data = await this.gpu.read(parts.flat());
    const out = new Map<string, Float32Array>();
    let at = 0;
    this.#slots.forEach((s, i) => {
      const chunks = data.slice(at, at += parts[i].length);
      const joined = chunks.length === 1 ? chunks[0] : concat(chunks);
      const [rows, cols] = s.parameter.shape;
      out.set(s.parameter.name, s.parameter.transposed ? transpose(joined, cols, rows) : joined);
    });
    return out;
  }

  #writeNamed(s: Slot, to: readonly Tensor[], data: Float32Array | undefined, what: string): void {
    const { name, shape, transposed } = s.parameter;
    const n = shape.reduce((a, b) => a * b, 1);
    if (!data || data.length !== n) {
      throw new Error(`optimizer state: ${what} of ${name} is missing or not ${n} values`);
    }
    const stored = transposed ? transpose(data, shape[0], shape[1]) : data;
    let at = 0;
    for (const t of to) {
      const len = t.shape.reduce((a, b) => a * b, 1);
      this.gpu.write(t, stored.subarray(at, at += len));
    }
    this.model.weightsVersion++;
  }

  #own(t: Tensor): Tensor {
    this.#owned.push(t);
    return t;
  }
}

function checkOptions(o: TrainerOptions): void {
  const bad = (what: string, v: number) => {
    throw new RangeError(`trainer: ${what} must be ${v}`);
  };
  if (!(o.lr >= 0)) bad("lr >= 0, got", o.lr);
  if (!(o.beta1 >= 0 && o.beta1 < 1)) bad("beta1 in [0, 1), got", o.beta1);
  if (!(o.beta2 >= 0 && o.beta2 < 1)) bad("beta2 in [0, 1), got", o.beta2);
  if (!(o.eps > 0)) bad("eps > 0, got", o.eps);
  if (!(o.weightDecay >= 0)) bad("weightDecay >= 0, got", o.weightDecay);
  if (!(o.gradClip >= 0)) bad("gradClip >= 0 (0: off), got", o.gradClip);
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}
