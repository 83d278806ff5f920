/**
 * `deno task train` as a user runs it: a short run writes a checkpoint that loads again, Ctrl-C
 * saves one, `--resume` continues with exactly the numbers of a run that never stopped, and bad
 * input exits 2 (usage) or 1 with one line.
 */
import assert from "node:assert/strict";
import { loadCheckpoint } from "../model/weights.ts";
import { CharTokenizer } from "../tokenizers/char.ts";
import { needs, runScript, slow } from "./helpers.ts";

/** A small model so that 40 steps take seconds. */
const SMALL = [
  "--n-layer=1",
  "--n-head=2",
  "--n-embd=16",
  "--block-size=16",
  "--batch-size=4",
  "--eval-interval=20",
  "--eval-iters=2",
  "--log-interval=1",
  "--json",
];

type Record = { iter?: number; loss?: number; val_loss?: number; done?: boolean };

function records(stdout: string): Record[] {
  return stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

Deno.test(
  "train CLI: a run writes an HF-layout checkpoint with its char vocabulary and charts",
  needs("read", "write", "run"),
  async () => {
    const out = await Deno.makeTempDir();
    try {
      const run = await runScript("cli/train.ts", ...SMALL, "--max-iters=20", `--out=${out}`);
      assert.equal(run.code, 0, run.stderr);
      const done = records(run.stdout).at(-1)!;
      assert.equal(done.done, true);
      const { config, weights } = await loadCheckpoint(out);
      assert.equal(config.nLayer, 1);
      assert.equal(config.vocabSize, 65);
      assert.equal(weights.lmHead, null); // tied, as GPT-2
      assert.equal((await CharTokenizer.load(out))!.vocabSize, 65);
      // A char vocabulary has no end-of-text token: none is written, not id 0 ("\n").
      assert.equal(config.eosTokenId, null);
      const json = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
      assert.equal(json.eos_token_id, null);
      assert.equal(json.bos_token_id, null);
      for (const f of ["optimizer.safetensors", "train_state.json", "loss.svg", "log.json"]) {
        assert.ok((await Deno.stat(`${out}/${f}`)).size > 0, f);
      }
      const names = await Deno.readTextFile(`${out}/model.safetensors`).catch(() => "");
      assert.ok(names.includes('"transformer.h.0.attn.c_attn.weight"'));
      assert.ok(names.includes('"shape":[16,48]')); // Conv1D [in, out], as HF stores it
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
);

Deno.test(
  "train CLI: Ctrl-C saves a checkpoint and --resume continues with the same numbers",
  slow("read", "write", "run"),
  async () => {
    const whole = await Deno.makeTempDir();
    const split = await Deno.makeTempDir();
    try {
      const full = await runScript("cli/train.ts", ...SMALL, "--max-iters=40", `--out=${whole}`);
      assert.equal(full.code, 0, full.stderr);
      // The same run, interrupted once it has logged iteration 25, then resumed.
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "cli/train.ts", ...SMALL, "--max-iters=40", `--out=${split}`],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      let text = "";
      let interrupted = false;
      const dec = new TextDecoder();
      for await (const chunk of child.stdout) {
        text += dec.decode(chunk);
        if (!interrupted && records(text).some((r) => r.iter === 25 && r.loss !== undefined)) {
          child.kill("SIGINT");
          interrupted = true;
        }
      }
      assert.equal((await child.status).code, 0);
      const stoppedAt = JSON.parse(await Deno.readTextFile(`${split}/train_state.json`)).iteration;
      assert.ok(stoppedAt > 25 && stoppedAt < 40, `saved at iteration ${stoppedAt}`);
      const resumed = await runScript("cli/train.ts", "--resume", "--json", `--out=${split}`);
      assert.equal(resumed.code, 0, resumed.stderr);
      const want = records(full.stdout).filter((r) => r.iter !== undefined && r.iter > 30);
      const got = records(resumed.stdout).filter((r) => r.iter !== undefined && r.iter > 30);
      assert.ok(want.length >= 10);
      assert.deepEqual(
        got.map((r) => [r.iter, r.loss, r.val_loss]),
        want.map((r) => [r.iter, r.loss, r.val_loss]),
      );
    } finally {
      await Deno.remove(whole, { recursive: true });
      await Deno.remove(split, { recursive: true });
    }
  },
);

Deno.test(
  "train CLI: bad flags exit 2, bad data exits 1, with one line",
  needs("read", "write", "run"),
  async () => {
    for (
      const [args, code, pattern] of [
        [["--max-iters=-3"], 2, /--max-iters: expected an integer >= 0/],
        [["--tokenizer=bpe"], 2, /--tokenizer: expected char or gpt2/],
        [["--frobnicate"], 2, /frobnicate/],
        [["--n-embd=30", "--n-head=4"], 2, /n_embd/],
        [["--data=data/no-such.txt"], 1, /no-such.txt: not found/],
        [["--init=data/tiny-gpt2", "--block-size=200"], 2, /larger than the model's context/],
        [["--resume", "--out=data/no-such-run"], 1, /train_state.json: not found/],
      ] as const
    ) {
      const run = await runScript("cli/train.ts", "--max-iters=1", ...args);
      assert.equal(run.code, code, `${args}: ${run.stderr}`);
      assert.match(run.stderr, pattern);
      assert.ok(!run.stderr.includes("    at "), `no stack trace: ${run.stderr}`);
    }
  },
);
