/**
 * Training checkpoints: a folder that HuggingFace's `GPT2LMHeadModel.from_pretrained` loads
 * as it is (`config.json` + `model.safetensors` in HF's own layout: `transformer.`-prefixed
 * names, Conv1D weights [in, out], no `lm_head.weight` when tied), plus what training needs
 * to continue: the tokenizer (`vocab.json` for a char model), AdamW's moments
 * (`optimizer.safetensors`) and `train_state.json` (iteration, settings, log). Every file is
 * written under a temporary name and renamed; each records the iteration it belongs to, and
 * loading refuses a folder whose files disagree.
 *
 * @module
 */
import type { GPT2Config } from "../model/config.ts";
import { isNotFound, makeDir, readText, writeFileAtomic } from "../base/files.ts";
import { SafetensorsFile, type TensorData, writeSafetensors } from "../io/safetensors.ts";
import { CHAR_VOCAB_FILE, type CharTokenizer } from "../tokenizers/char.ts";
import type { Trainer } from "./trainer.ts";

/** The file of AdamW's moments. */
export const OPTIMIZER_FILE = "optimizer.safetensors";
/** The file of the training state. */
export const STATE_FILE = "train_state.json";

/** What a run records besides the tensors: enough to continue it exactly. */
export interface TrainState {
  /** Iterations done. */
  iteration: number;
  /** The run's settings (the command line, resolved). */
  settings: Record<string, unknown>;
  /** Whatever the run logs (losses, evaluations, timings). */
  log: Record<string, unknown>[];
}

/** GPT2Config as HF's `config.json`. */
export function hfConfig(c: GPT2Config): Record<string, unknown> {
  return {
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    vocab_size: c.vocabSize,
    n_positions: c.nPositions,
    n_embd: c.nEmbd,
    n_layer: c.nLayer,
    n_head: c.nHead,
    n_inner: c.nInner === 4 * c.nEmbd ? null : c.nInner,
    activation_function: "gelu_new",
    layer_norm_epsilon: c.layerNormEpsilon,
    tie_word_embeddings: c.tieWordEmbeddings,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    initializer_range: 0.02,
    scale_attn_weights: true,
    use_cache: true,
  };
}

/** Writes a checkpoint of the trainer's model and optimizer into `dir` (created if needed). */
export async function saveCheckpoint(
  dir: string,
  trainer: Trainer,
  tokenizer: CharTokenizer | null,
  state: TrainState,
): Promise<void> {
  await makeDir(dir);
  const iteration = String(state.iteration);
  const f32 = (m: Map<string, Float32Array>, prefix = "") =>
    Object.fromEntries(
      [...m].map(([name, data]) => [
        `${prefix}${name}`,
        { dtype: "F32", shape: trainer.shapeOf(name), data } as TensorData,
      ]),
    );
  const { m, v } = await trainer.moments();
  await writeSafetensors(`${dir}/model.safetensors`, f32(await trainer.parameters()), {
    format: "pt",
    iteration,
  });
  await writeSafetensors(`${dir}/${OPTIMIZER_FILE}`, { ...f32(m, "m."), ...f32(v, "v.") }, {
    iteration,
    adamw_steps: String(trainer.steps),
  });
  await writeText(`${dir}/config.json`, JSON.stringify(hfConfig(trainer.model.config), null, 2));
  if (tokenizer) await writeText(`${dir}/${CHAR_VOCAB_FILE}`, JSON.stringify(tokenizer.toJSON()));
  await writeText(`${dir}/${STATE_FILE}`, JSON.stringify(state, null, 1));
}

/**
 * Reads a checkpoint's training state and restores AdamW's moments into `trainer` (whose
 * model was loaded from the same folder). Throws, naming the file, when anything is missing
 * or the files come from different iterations.
 */
export async function resumeCheckpoint(dir: string, trainer: Trainer): Promise<TrainState> {
  const statePath = `${dir}/${STATE_FILE}`;
  let state: TrainState;
  try {
    state = JSON.parse(await readText(statePath));
  } catch (e) {
    const why = isNotFound(e) ? "not found (nothing to resume)" : "unreadable";
    throw new Error(`${statePath}: ${why}`);
  }
  if (!Number.isInteger(state?.iteration) || !Array.isArray(state.log)) {
    throw new Error(`${statePath}: no iteration or log`);
  }
  const iterationOf = async (file: string) => {
    const st = await SafetensorsFile.open(`${dir}/${file}`);
    if (st.metadata.iteration !== String(state.iteration)) {
      throw new Error(
        `${dir}/${file}: written at iteration ${st.metadata.iteration ?? "?"}, ` +
          `${STATE_FILE} says ${state.iteration} (an interrupted save); start again without --resume`,
      );
    }
    return st;
  };
  await iterationOf("model.safetensors");
  const opt = await iterationOf(OPTIMIZER_FILE);
  const named = (prefix: string) =>
    new Map(
      [...opt.tensors.keys()].filter((k) => k.startsWith(prefix)).map((
        k,
      ) => [k.slice(prefix.length), opt.f32(k)]),
    );
  trainer.setMoments(named("m."), named("v."), Number(opt.metadata.adamw_steps ?? 0));
  return state;
}

// Writes text under a temporary name, then renames it over `path`.
async function writeText(path: string, text: string): Promise<void> {
  await writeFileAtomic(path, new TextEncoder().encode(text + "\n"));
}
