/**
 * Training: gradcheck against PyTorch on every fixture (loss, every gradient, 10 AdamW steps,
 * final parameters), the training workspace's shapes for B > 1, no GPU allocation after the
 * first step, a trained model that generates through its cache with the updated weights,
 * and the trainer's input errors.
 */
import assert from "node:assert/strict";
import type { Plan, RunOptions } from "../kernels/gpu.ts";
import { parseConfig } from "../model/config.ts";
import { GPT2 } from "../model/gpt2.ts";
import { Runner } from "../run/runner.ts";
import { gpt2Init, randomWeights } from "../model/weights.ts";
import { TrainingActivations } from "../train/activations.ts";
import { runGradcheck } from "../train/gradcheck.ts";
import { Trainer } from "../train/trainer.ts";
import { needs, TestRng } from "./helpers.ts";
import { openGpu } from "../cli/env_options.ts";

const gpu = await openGpu();

for (
  const dir of [
    "data/tiny-gpt2",
    "data/shapes/hub-l3-h3-e48",
    "data/shapes/l1-h2-e96",
    "data/shapes/l4-h8-e128-untied",
  ]
) {
  Deno.test(
    `gradcheck: ${dir} matches PyTorch (loss, gradients, 10 AdamW steps)`,
    needs("read"),
    async () => {
      const report = await runGradcheck(gpu, dir);
      const worst = (prefix: string) =>
        report.rows.filter((r) => r.tensor.startsWith(prefix)).reduce((a, b) =>
          b.maxAbsDiff > a.maxAbsDiff ? b : a
        );
      for (const p of ["loss", "grad.", "step_losses", "final."]) {
        const w = worst(p);
        console.log(`  ${dir} ${p}: max abs diff ${w.maxAbsDiff.toExponential(2)} (${w.tensor})`);
      }
      const failed = report.rows.filter((r) => !r.pass).map((r) => `${r.tensor} ${r.maxAbsDiff}`);
      assert.deepEqual(failed, []);
      assert.ok(report.rows.length > 3);
    },
  );
}

/** A small char-sized model: 2 layers, n_embd 32, 65 tokens, context 16. */
const SMALL = parseConfig({
  vocab_size: 65,
  n_positions: 16,
  n_embd: 32,
  n_layer: 2,
  n_head: 4,
  bos_token_id: 0,
  eos_token_id: 0,
}, "small training config");

function batchOf(rng: TestRng, B: number, T: number, V: number): number[][] {
  return Array.from({ length: B }, () => Array.from({ length: T + 1 }, () => rng.int(V)));
}

Deno.test("training workspace: every activation is [B·T, ·], K/V and probs per sequence", () => {
  const { nEmbd: C, nInner: I, nHead: H, headDim, nLayer } = SMALL;
  const B = 3, T = 5, N = 15;
  const a = new TrainingActivations(gpu, SMALL, B, T);
  try {
    assert.equal(a.N, N);
    for (const l of a.layers) {
      for (const t of [l.ln1, l.att, l.mid, l.ln2, l.out]) assert.deepEqual(t.shape, [N, C]);
      assert.deepEqual(l.qkv.shape, [N, 3 * C]);
      assert.deepEqual(l.fcPre!.shape, [N, I]);
      assert.deepEqual(l.fc.shape, [N, I]);
    }
    assert.equal(a.layers.length, nLayer);
    for (const s of a.sequences) {
      assert.deepEqual(s.rows, { row0: 0, T, seqs: B });
      assert.deepEqual(s.cache.k.shape, [B * H, T, headDim]);
      assert.deepEqual(s.probs.shape, [B * H, T, T]);
    }
    assert.equal(a.logits.shape[0], N);
    assert.ok(a.logits.shape[1] >= SMALL.vocabSize);
    assert.deepEqual(a.grads.probs.shape, [B * H, T, T]);
    assert.throws(() => new TrainingActivations(gpu, SMALL, 2, 17), /n_positions/);
  } finally {
    a.destroy();
  }
});

Deno.test("trainer: a step allocates no GPU buffer after the first and is one submission", async () => {
  const model = new GPT2(gpu, SMALL, gpt2Init(SMALL, 1));
  const trainer = new Trainer(model, { B: 2, T: 8 });
  const rng = new TestRng(3);
  try {
    await trainer.step(batchOf(rng, 2, 8, 65));
    const bytes = gpu.bytesAllocated;
    const createBuffer = gpu.device.createBuffer;
    let created = 0;
    let submissions = 0;
    const run = gpu.run;
    gpu.device.createBuffer = (d: GPUBufferDescriptor) => {
      if (d.usage & GPUBufferUsage.STORAGE) created++;
      return createBuffer.call(gpu.device, d);
    };
    gpu.run = (plan: Plan, options?: RunOptions) => {
      submissions++;
      run.call(gpu, plan, options);
    };
    try {
      for (let i = 0; i < 3; i++) await trainer.step(batchOf(rng, 2, 8, 65), { loss: i === 2 });
    } finally {
      gpu.device.createBuffer = createBuffer;
      gpu.run = run;
    }
    assert.equal(created, 0, "storage buffers created by later steps");
    assert.equal(submissions, 3);
    assert.equal(gpu.bytesAllocated, bytes);
  } finally {
    trainer.destroy();
    model.destroy();
  }
});

Deno.test("trainer: the trained model generates through its cache with the updated weights", async () => {
  const model = new GPT2(gpu, SMALL, randomWeights(SMALL, 5));
  const runner = new Runner(model); // runs the model the trainer trains
  const trainer = new Trainer(model, { B: 2, T: 8 }, { lr: 1e-2 });
  const rng = new TestRng(4);
  const batch = batchOf(rng, 2, 8, 65);
  try {
    // Decode once before training, so that any copy of the weights a decode path keeps
    // (the fused step packs them) is filled with the untrained ones.
    const before = model.newCache();
    await runner.decodeGreedy(batch[0][0], before, 4);
    before.destroy();
    const first = await trainer.loss(batch);
    for (let i = 0; i < 5; i++) await trainer.step(batch);
    const after = await trainer.loss(batch);
    assert.ok(after < first - 0.1, `loss ${first} -> ${after} should fall on a repeated batch`);
    // The same weights read back into a fresh model: its logits must equal the trained one's.
    const params = await trainer.parameters();
    const copy = new Runner(new GPT2(gpu, SMALL, weightsFrom(params, SMALL.nLayer)));
    const ids = batch[0].slice(0, 8);
    const cacheA = model.newCache();
    const cacheB = copy.newCache();
    try {
      const a = await runner.forward(ids, cacheA);
      const b = await copy.forward(ids, cacheB);
      assert.deepEqual(a.logits, b.logits);
      // Chained decoding (the fused step where the adapter allows) uses the trained weights.
      const last = ids.at(-1)!;
      const chained = await runner.decodeGreedy(last, cacheA, 7);
      assert.deepEqual(chained, await copy.decodeGreedy(last, cacheB, 7));
    } finally {
      cacheA.destroy();
      cacheB.destroy();
      copy.destroy();
    }
  } finally {
    trainer.destroy();
    runner.destroy(); // and the model
  }
});

Deno.test("trainer: refuses f16 weights, bad batches and bad settings", async () => {
  const f16 = new GPT2(gpu, SMALL, randomWeights(SMALL, 6), { weights: "f16" });
  assert.throws(() => new Trainer(f16, { B: 1, T: 4 }), /f32 weights/);
  f16.destroy();
  const model = new GPT2(gpu, SMALL, randomWeights(SMALL, 6));
  assert.throws(() => new Trainer(model, { B: 1, T: 4 }, { beta1: 1 }), /beta1/);
  const trainer = new Trainer(model, { B: 2, T: 4 });
  try {
    await assert.rejects(() => trainer.step([[1, 2, 3, 4, 5]]), /1 sequences, expected 2/);
    await assert.rejects(() => trainer.step([[1, 2, 3, 4, 5], [1, 2, 3]]), /sequence 1 has 3 ids/);
    await assert.rejects(() => trainer.step([[1, 2, 3, 4, 65], [1, 2, 3, 4, 5]]), /token id 65/);
    await assert.rejects(() => trainer.step([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]], { lr: -1 }), /lr/);
  } finally {
    trainer.destroy();
    model.destroy();
  }
});

/** GPT2Weights from HF-named, HF-shaped tensors (tied, `transformer.` prefix). */
function weightsFrom(p: Map<string, Float32Array>, nLayer: number) {
  const get = (n: string) => p.get(`transformer.${n}`)!;
  const linear = (n: string) => {
    const weight = get(`${n}.weight`);
    const bias = get(`${n}.bias`);
    return { weight, bias, inFeatures: weight.length / bias.length, outFeatures: bias.length };
  };
  const ln = (n: string) => ({ weight: get(`${n}.weight`), bias: get(`${n}.bias`) });
  return {
    wte: get("wte.weight"),
    wpe: get("wpe.weight"),
    blocks: Array.from({ length: nLayer }, (_, i) => ({
      ln1: ln(`h.${i}.ln_1`),
      attn: { cAttn: linear(`h.${i}.attn.c_attn`), cProj: linear(`h.${i}.attn.c_proj`) },
      ln2: ln(`h.${i}.ln_2`),
      mlp: { cFc: linear(`h.${i}.mlp.c_fc`), cProj: linear(`h.${i}.mlp.c_proj`) },
    })),
    lnF: ln("ln_f"),
    lmHead: null,
  };
}
