#!/usr/bin/env python3
"""Make a random-weight GPT-2 checkpoint of any shape with HF's own code, plus its HF reference outputs.

GPT2Config + GPT2LMHeadModel + save_pretrained, weights re-drawn large (data/tiny-gpt2/README.md,
"Weight init") so that a wrong GELU, LayerNorm epsilon or a dropped bias shows at 1e-5. Then runs
scripts/hf_reference.py on the folder with random prompt ids and writes a README.md.
With the tiny fixture's shape (--vocab 50257 --n-layer 2 --n-head 4 --n-embd 64 --n-positions 128
--seed 1234 --no-reference) it writes data/tiny-gpt2's config.json, generation_config.json and
model.safetensors byte for byte.
"""
import argparse
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

HERE = Path(__file__).resolve().parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--n-positions", type=int, default=128)
    p.add_argument("--n-inner", type=int, help="MLP width (default 4*n_embd, stored as null)")
    p.add_argument("--untied", action="store_true", help="tie_word_embeddings=false, own lm_head.weight")
    p.add_argument("--layout", choices=("hf", "hub"), default="hf",
                   help="hf: save_pretrained keys (transformer.h.N...); hub: bare keys (h.N..., wte.weight) "
                        "plus the h.N.attn.bias / h.N.attn.masked_bias buffers, like the hub's gpt2 file")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--lengths", help="prompt lengths, comma-separated (default 1,7,n_positions-30)")
    p.add_argument("--no-reference", action="store_true", help="only write the checkpoint")
    return p.parse_args()


def init_weights(model, seed):
    """Large-magnitude weights; all draws from one generator, in named_parameters() order."""
    g = torch.Generator().manual_seed(seed)
    C, H = model.config.n_embd, model.config.n_head
    d, inner = C // H, model.config.n_inner or 4 * C
    normal = lambda shape, std: torch.randn(shape, generator=g) * std
    rand = lambda shape: torch.rand(shape, generator=g)
    uniform = lambda shape, lo, hi: lo + (hi - lo) * rand(shape)  # float op order kept: tiny-gpt2 bitwise
    signed = lambda shape, lo, hi: uniform(shape, lo, hi) * torch.where(rand(shape) < 0.5, -1.0, 1.0)
    # per-head score scales g_h, log-spaced over the heads; Q and K columns both get sqrt(g_h)
    gains = torch.logspace(math.log10(0.3), math.log10(2.5), H).tolist()
    for name, p in model.named_parameters():
        s, kind = p.shape, name.removeprefix("transformer.")
        if kind == "wte.weight" or kind == "lm_head.weight":
            v = normal(s, 1 / math.sqrt(C))  # logits std ~1
        elif kind == "wpe.weight":
            v = normal(s, 1.5 / math.sqrt(C))
        elif ".ln_" in name or kind.startswith("ln_f"):
            v = 1 + (rand(s) * 2 - 1) * 0.3 if name.endswith("weight") else signed(s, 0.05, 0.3)
        elif kind.endswith("attn.c_attn.weight"):
            v = normal(s, 1 / math.sqrt(C))
            for h, gain in enumerate(gains[i] for i in torch.randperm(H, generator=g).tolist()):
                for part in (0, C):  # Q, K
                    v[:, part + h * d: part + (h + 1) * d] *= math.sqrt(gain)
        elif kind.endswith("mlp.c_fc.weight"):
            v = normal(s, 1.2 / math.sqrt(C))  # GELU inputs std ~1.3
        elif kind.endswith("mlp.c_fc.bias"):
            v = signed(s, 0.05, 0.4)
        elif kind.endswith("mlp.c_proj.weight"):
            v = normal(s, 1 / math.sqrt(inner))
        elif kind.endswith("attn.c_proj.weight"):
            v = normal(s, 1 / math.sqrt(C))
        elif name.endswith("bias"):  # attn.c_attn, attn.c_proj, mlp.c_proj
            v = signed(s, 0.05, 0.3)
        else:
            raise SystemExit(f"no init rule for {name}")
        p.copy_(v)


def to_hub_layout(path, cfg):
    """Rewrite model.safetensors with bare GPT2Model keys and the old causal-mask buffers."""
    sd = {k.removeprefix("transformer."): v for k, v in load_file(path).items()}
    P = cfg.n_positions
    for i in range(cfg.n_layer):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(P, P)).view(1, 1, P, P)
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(sd, path, metadata={"format": "pt"})


def readme(args, cfg, command, ref_cmd):
    ref = json.loads((args.out / "reference.json").read_text())
    sizes = {f.name: f.stat().st_size for f in sorted(args.out.iterdir()) if f.name != "README.md"}
    keys = load_file(args.out / "model.safetensors")
    noise, sens = ref["hf_noise_floor"], ref.get("sensitivity_max_abs_logit_change_long_prompt", {})
    C, L = cfg.n_embd, cfg.n_layer
    lines = [
        f"# {args.out.name}: random-weight GPT-2 with HuggingFace reference outputs", "",
        f"n_layer {L}, n_head {cfg.n_head} (head_dim {C // cfg.n_head}), n_embd {C}, "
        f"n_inner {cfg.n_inner or 4 * C}{'' if cfg.n_inner else ' (null in config.json)'}, "
        f"n_positions {cfg.n_positions}, vocab_size {cfg.vocab_size}, "
        f"tie_word_embeddings {str(cfg.tie_word_embeddings).lower()}, weight seed {args.seed}; "
        f"bos/eos id {cfg.eos_token_id} (the last id, as in GPT-2).", "",
        "Made with:", "", "```", command, "```", "",
        "which builds the model with transformers' GPT2Config/GPT2LMHeadModel, re-draws every weight as in "
        "`data/tiny-gpt2/README.md` (\"Weight init\"; mlp.c_proj std 1/sqrt(n_inner)"
        + ("" if cfg.tie_word_embeddings else ", untied lm_head.weight drawn like wte")
        + "), saves it with `save_pretrained`, checks that `from_pretrained` loads it back bit for bit, "
        "then runs:", "", "```", ref_cmd, "```", "",
        "Tensor names and semantics of `reference.safetensors` are those of `data/tiny-gpt2` "
        "(see its README); `reference.json` lists every tensor with its shape. Prompt ids are random "
        "(torch.randint, seed = weight seed); decode ids are hf_reference.py's derived ones.", "",
    ]
    if args.layout == "hub":
        lines += [
            "Layout: hub-style `model.safetensors`, written by `save_file` after `save_pretrained`: bare "
            "GPT2Model keys as in the hub's `gpt2` file (`wte.weight`, `wpe.weight`, `h.N.…`, `ln_f.…`"
            + ("" if cfg.tie_word_embeddings else ", and `lm_head.weight`")
            + f"), plus the causal-mask buffers of old GPT-2 checkpoints: per layer `h.N.attn.bias` (F32 "
            f"[1, 1, {cfg.n_positions}, {cfg.n_positions}], lower-triangular ones) and `h.N.attn.masked_bias` "
            "(F32 scalar, shape [], -1e4). A loader must ignore both; `from_pretrained` drops them.", ""]
    else:
        lines += ["Layout: as `save_pretrained` wrote it (`transformer.`-prefixed keys"
                  + (", no `lm_head.weight`: tied to wte" if cfg.tie_word_embeddings else ", own `lm_head.weight`")
                  + ").", ""]
    lines += [
        "Prompts: " + ", ".join(f"{p['name']}: T={p['length']}" for p in ref["prompts"])
        + f"; each with {len(ref['prompts'][0]['decode_ids'])} decode tokens and a "
        f"{ref['prompts'][0]['generate_new_tokens']}-token greedy generation.", "",
        f"HF's own noise floor (max over prompts): cached decode vs no-cache logits "
        f"{noise['decode_vs_nocache_logits_max_abs_diff']:.3g}, decode vs one-shot K/V "
        f"{noise['decode_vs_one_shot_kv_max_abs_diff']:.3g}, float32 vs float64 logits "
        f"{noise['float32_vs_float64_logits_max_abs_diff']:.3g}.", "",
    ]
    if sens:
        biases = {k: v for k, v in sens["zeroing one bias (each in turn)"].items() if "K part" not in k}
        lines += ["Sensitivity (max |Δlogit| on the longest prompt, tolerance 1e-5): "
                  + "; ".join(f"{k}: {v:.3g}" for k, v in sens.items() if not isinstance(v, dict))
                  + f"; zeroing one bias (K part of c_attn.bias aside, which softmax cancels): "
                  f"{min(biases.values()):.3g} to {max(biases.values()):.3g}.", ""]
    lines += ["| file | bytes |", "| --- | --- |", *[f"| `{k}` | {v} |" for k, v in sizes.items()],
              f"| total | {sum(sizes.values())} |", "", f"model.safetensors holds {len(keys)} tensors.", ""]
    (args.out / "README.md").write_text("\n".join(lines))


def main():
    args = parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    cfg = GPT2Config(vocab_size=args.vocab, n_positions=args.n_positions, n_embd=args.n_embd,
                     n_layer=args.n_layer, n_head=args.n_head, n_inner=args.n_inner,
                     tie_word_embeddings=not args.untied, bos_token_id=args.vocab - 1, eos_token_id=args.vocab - 1)
    if args.n_embd % args.n_head:
        raise SystemExit("n_embd must be a multiple of n_head")
    model = GPT2LMHeadModel(cfg).eval()
    init_weights(model, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    if args.layout == "hub":
        to_hub_layout(args.out / "model.safetensors", cfg)

    # from_pretrained must give back exactly these weights (tied or not, either key layout).
    loaded, info = GPT2LMHeadModel.from_pretrained(args.out, dtype=torch.float32, output_loading_info=True)
    want, got = model.state_dict(), loaded.state_dict()
    bad = [k for k in want if not torch.equal(want[k], got[k])]
    if bad or info["missing_keys"] or info["mismatched_keys"] or want.keys() != got.keys():
        raise SystemExit(f"from_pretrained differs: {bad} {info}")
    tied = loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    if tied == args.untied:
        raise SystemExit("lm_head tying not as asked")
    ignored = sorted(info["unexpected_keys"])
    print(f"from_pretrained: all {len(want)} tensors identical; unexpected keys ignored: {ignored}")
    if args.no_reference:
        return

    g = torch.Generator().manual_seed(args.seed)
    lengths = [int(n) for n in args.lengths.split(",")] if args.lengths else [1, 7, args.n_positions - 30]
    ids = [",".join(map(str, torch.randint(args.vocab, (n,), generator=g).tolist())) for n in lengths]
    extra = json.dumps({"seed": args.seed, "weights": "scripts/make_fixture.py", "layout": args.layout})
    ref_cmd = [sys.executable, str(HERE / "hf_reference.py"), str(args.out), "--config-extra", extra]
    for i in ids:
        ref_cmd += ["--ids", i]
    subprocess.run(ref_cmd, check=True)
    shown = ["python", "scripts/hf_reference.py", str(args.out), "--config-extra", extra] + [
        a if len(a) < 60 else f"<{a.count(',') + 1} ids, see reference.json>" for a in ref_cmd[5:]]
    readme(args, cfg, shlex.join(["python", "scripts/make_fixture.py", *sys.argv[1:]]), shlex.join(shown))


if __name__ == "__main__":
    main()
