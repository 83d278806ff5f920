#!/usr/bin/env python3
"""HuggingFace reference outputs for a GPT-2 checkpoint, in the data/tiny-gpt2 fixture format.

Loads MODEL_DIR with transformers' own GPT2LMHeadModel (eager attention, float32, CPU, 1 thread)
and writes reference.safetensors + reference.json (see data/tiny-gpt2/README.md for every tensor).

Prompts (one source, repeatable):
  --prompts-from REF.json  reuse the ids/decode ids/texts of an existing reference.json
  --prompt TEXT            GPT-2 BPE text; "PROMPT|CONTINUATION": the decode ids are the tokens that
                           follow PROMPT's tokens when the whole text (without "|") is tokenized
  --ids 1,2,3              token ids; "1,2,3|4,5,...": the decode ids given explicitly
Decode ids not given either way are drawn as
  torch.randint(vocab_size, (decode_steps,), generator=torch.Generator().manual_seed(prompt index)).
"""
import argparse
import copy
import hashlib
import json
import os
import platform
from pathlib import Path

import huggingface_hub
import safetensors
import torch
import transformers
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel
from transformers.activations import ACT2FN
from transformers.models.gpt2 import modeling_gpt2


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path)
    p.add_argument("--out", type=Path, help="output folder (default MODEL_DIR)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts-from", type=Path, metavar="REF.json")
    src.add_argument("--prompt", action="append", metavar="TEXT")
    src.add_argument("--ids", action="append", metavar="IDS")
    p.add_argument("--decode-steps", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=20)
    p.add_argument("--tokenizer", type=Path, help="folder with vocab.json + merges.txt "
                   "(default $GPT2_TOKENIZER_DIR or ~/.cache/gpt2tok)")
    p.add_argument("--config-extra", type=json.loads, default={}, metavar="JSON",
                   help="JSON object appended to reference.json's config (e.g. the weight seed)")
    p.add_argument("--no-sensitivity", action="store_true",
                   help="skip the perturbation study (about 8 forwards per layer on the longest prompt)")
    return p.parse_args()


def load_prompts(args, vocab_size):
    """List of dicts: ids, text, decode_ids, decode_text, source_text."""
    if args.prompts_from:
        keys = ("ids", "text", "decode_ids", "decode_text", "source_text")
        return [{k: p.get(k) for k in keys} for p in json.loads(args.prompts_from.read_text())["prompts"]]
    prompts = []
    if args.prompt:
        from transformers import GPT2Tokenizer
        tok_dir = args.tokenizer or Path(os.environ.get("GPT2_TOKENIZER_DIR", Path.home() / ".cache/gpt2tok"))
        tok = GPT2Tokenizer.from_pretrained(tok_dir)  # a local folder: no hub access
        for arg in args.prompt:
            text, sep, rest = arg.partition("|")
            ids = tok.encode(text)
            decode = None
            if sep:
                full = tok.encode(text + rest)
                if full[: len(ids)] != ids:
                    raise SystemExit(f"prompt {text!r}: its tokens are not a prefix of the whole text's tokens")
                decode = full[len(ids): len(ids) + args.decode_steps]
            prompts.append(dict(ids=ids, text=text, decode_ids=decode, source_text=text + rest if sep else None))
    for arg in args.ids or []:
        ids, sep, rest = arg.partition("|")
        prompts.append(dict(ids=[int(i) for i in ids.split(",")], text=None, source_text=None,
                            decode_ids=[int(i) for i in rest.split(",")] if sep else None))
    for i, p in enumerate(prompts):
        if p["decode_ids"] is None:
            g = torch.Generator().manual_seed(i)
            p["decode_ids"] = torch.randint(vocab_size, (args.decode_steps,), generator=g).tolist()
        p["decode_text"] = tok.decode(p["decode_ids"]) if p["text"] is not None else None
    return prompts


def maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def cache_kv(cache):
    """[(key, value)] per layer, each [n_head, T, head_dim] (batch 1 removed)."""
    return [(layer.keys[0].clone(), layer.values[0].clone()) for layer in cache.layers]


def run_prompt(model, ids, decode_ids, new_tokens, pad_id):
    """Reference tensors and HF self-consistency numbers for one prompt."""
    x = torch.tensor([ids])
    blocks, gelu_in = [], []
    hooks = [b.register_forward_hook(lambda m, i, o: blocks.append(o[0] if isinstance(o, tuple) else o))
             for b in model.transformer.h]
    hooks += [b.mlp.act.register_forward_hook(lambda m, i, o: gelu_in.append(i[0].flatten()))
              for b in model.transformer.h]
    out = model(x, use_cache=False, output_hidden_states=True)
    for h in hooks:
        h.remove()
    logits = out.logits[0]
    t = {"input_ids": x[0], "logits": logits, "hidden_states": torch.stack(out.hidden_states)[:, 0],
         "block_outputs": torch.stack(blocks)[:, 0]}

    # Prefill through the cache, then feed the decode ids one at a time.
    pre = model(x, use_cache=True)
    cache = pre.past_key_values
    present = cache_kv(cache)
    steps = [model(torch.tensor([[i]]), past_key_values=cache, use_cache=True).logits[0, -1] for i in decode_ids]
    decode_logits = torch.stack(steps)
    for n, ((pk, pv), (dk, dv)) in enumerate(zip(present, cache_kv(cache))):
        t |= {f"layer.{n}.present_key": pk, f"layer.{n}.present_value": pv,
              f"layer.{n}.decode_key": dk, f"layer.{n}.decode_value": dv}
    t |= {"decode_input_ids": torch.tensor(decode_ids), "decode_logits": decode_logits}

    # Greedy generation; checked against hand-run greedy loops with and without the cache.
    gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=new_tokens,
                         pad_token_id=pad_id)[0]
    t["generated_ids"] = gen
    new = gen[len(ids):].tolist()
    cached, gaps, seq = [], [], list(ids)
    step = model(x, use_cache=True)
    for _ in range(len(new)):
        top2 = step.logits[0, -1].topk(2).values
        gaps.append((top2[0] - top2[1]).item())
        cached.append(step.logits[0, -1].argmax().item())
        step = model(torch.tensor([[cached[-1]]]), past_key_values=step.past_key_values, use_cache=True)
    for _ in range(len(new)):
        seq.append(model(torch.tensor([seq]), use_cache=False).logits[0, -1].argmax().item())

    # HF against itself: the same numbers by other routes.
    full_ids = torch.tensor([ids + decode_ids])
    full = model(full_ids, use_cache=False).logits[0]
    one_shot = cache_kv(model(full_ids, use_cache=True).past_key_values)
    plain = lambda m: m(x, use_cache=False).logits[0]
    noise = {
        "logits_with_vs_without_output_hidden_states_max_abs_diff": maxdiff(logits, plain(model)),
        "prefill_cached_vs_nocache_logits_max_abs_diff": maxdiff(logits, pre.logits[0]),
        "decode_vs_nocache_full_forward_logits_max_abs_diff": maxdiff(decode_logits, full[len(ids):]),
        "decode_cache_vs_one_shot_prefill_cache_kv_max_abs_diff": max(
            maxdiff(a, b) for kv, kv1 in zip(cache_kv(cache), one_shot) for a, b in zip(kv, kv1)),
        "prefix_logits_of_longer_nocache_forward_vs_prompt_forward_max_abs_diff":
            maxdiff(logits, full[: len(ids)]),
        "generate_new_tokens": len(new),
        "generate_min_top1_top2_logit_gap": min(gaps, default=None),
        "generate_matches_manual_cached_greedy": cached == new,
        "generate_matches_nocache_greedy": seq[len(ids):] == new,
        # same weights in freshly allocated memory (MKL's SIMD path can depend on alignment)
        "reloaded_vs_in_memory_logits_max_abs_diff": maxdiff(logits, plain(copy.deepcopy(model))),
        "float32_vs_float64_logits_max_abs_diff": maxdiff(logits, plain(copy.deepcopy(model).double())),
    }
    return t, noise, torch.cat(gelu_in).view(len(model.transformer.h), -1)


def describe(field, L, T, S, pad_id, new_tokens):
    """The tiny fixture's description of tensor p<i>.<field>, for any shape."""
    if field.startswith("layer."):
        _, n, kind = field.split(".")
        return {"present_key": f"layer {n} key cache after the use_cache=True prefill of the prompt",
                "present_value": f"layer {n} value cache after the prefill",
                "decode_key": f"layer {n} key cache after the {S} decode steps",
                "decode_value": f"layer {n} value cache after the decode steps"}[kind]
    return {
        "input_ids": "prompt token ids",
        "logits": "logits of one full forward over the prompt, use_cache=False (row t predicts token t+1)",
        "hidden_states": f"HF output_hidden_states=True, stacked: [0] = wte[ids] + wpe[0..T-1] (block 0 input); "
                         f"[i] for 1<=i<={L - 1} = output of block i-1; [{L}] = ln_f(output of block {L - 1}) "
                         f"(HF replaces the last block's raw output with the post-ln_f state)",
        "block_outputs": f"raw output of every block (forward hooks), so [{L - 1}] is the last block's output "
                         f"BEFORE ln_f; block_outputs[i-1] == hidden_states[i] bitwise for 1<=i<L",
        "decode_input_ids": f"tokens fed one at a time after the prompt, through the cache "
                            f"(positions {T}..{T + S - 1})",
        "decode_logits": "logits of each single-token cached step (row j = after feeding decode_input_ids[j])",
        "generated_ids": f"model.generate(do_sample=False, max_new_tokens={new_tokens}, pad_token_id={pad_id}) "
                         f"output: prompt followed by the greedy tokens",
    }[field]


def sensitivity(model, ids, logits):
    """Max |logit change| on one prompt when one piece of GPT-2 math is done wrong."""
    x = torch.tensor([ids])
    run = lambda **kw: maxdiff(logits, model(x, use_cache=False, **kw).logits[0])
    blocks, lns = model.transformer.h, [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    act = blocks[0].mlp.act
    s = {}
    for name, label in (("gelu", "gelu (exact erf)"),
                        ("gelu_pytorch_tanh", "gelu_pytorch_tanh (torch tanh-approx kernel)")):
        for b in blocks:
            b.mlp.act = ACT2FN[name]
        s[f"activation {label} instead of {model.config.activation_function}"] = run()
    for b in blocks:
        b.mlp.act = act
    for eps in (1e-6, 1e-12, 0):
        for m in lns:
            m.eps = eps
        s[f"layer_norm_epsilon {eps:g} instead of {model.config.layer_norm_epsilon:g}"] = run()
    for m in lns:
        m.eps = model.config.layer_norm_epsilon
    scale = [b.attn.scaling for b in blocks]
    for b in blocks:
        b.attn.scaling = 1.0
    s["attention not scaled by 1/sqrt(head_dim)"] = run()
    for b, sc in zip(blocks, scale):
        b.attn.scaling = sc
    if len(ids) < model.config.n_positions:
        shifted = torch.arange(1, len(ids) + 1)[None]
        s["position ids off by one (1..T instead of 0..T-1)"] = run(position_ids=shifted)
    zeroed, C = {}, model.config.n_embd
    for name, p in model.named_parameters():
        if not name.endswith("bias") or p.dim() != 1:
            continue
        parts = [("Q part", 0), ("K part", C), ("V part", 2 * C)] if "c_attn" in name else [("", None)]
        for part, lo in parts:
            view = p if lo is None else p[lo: lo + C]
            saved = view.clone()
            view.zero_()
            zeroed[f"{name}[{part}]" if part else name] = run()
            view.copy_(saved)
    s["zeroing one bias (each in turn)"] = zeroed
    return s


def stats(model, ids, prompt_logits, gelu_in):
    """How large the activations are: what a wrong GELU/epsilon/bias would be scaled by."""
    ps = [p for n, p in model.named_parameters() if n.endswith("bias")]
    lnw = torch.cat([m.weight for m in model.modules() if isinstance(m, torch.nn.LayerNorm)])
    biases = torch.cat(ps).abs()
    pre = []
    for layer, v in enumerate(gelu_in):
        q = torch.quantile(v, torch.tensor([0.001, 0.01, 0.5, 0.99, 0.999])).tolist()
        pre.append({"layer": layer, "min": v.min().item(), "max": v.max().item(), "std": v.std().item(),
                    "p0_1": q[0], "p1": q[1], "median": q[2], "p99": q[3], "p99_9": q[4],
                    "frac_abs_gt_2": (v.abs() > 2).float().mean().item()})
    att = model(torch.tensor([ids]), use_cache=False, output_attentions=True).attentions
    rows = slice(min(8, len(ids) - 1), None)  # query rows 8.. (9+ keys; the last row if the prompt is shorter)
    heads = []
    for layer, a in enumerate(att):
        mx = a[0, :, rows].max(-1).values  # [H, rows]
        for h, m in enumerate(mx):
            heads.append({"layer": layer, "head": h, "mean_max_prob": m.mean().item(),
                          "frac_rows_max_gt_0_5": (m > 0.5).float().mean().item(),
                          "min_max_prob": m.min().item(), "largest_max_prob": m.max().item()})
    uniform = (1.0 / torch.arange(1, len(ids) + 1)[rows]).mean().item()
    return {"layernorm_weight_min_max": [lnw.min().item(), lnw.max().item()],
            "bias_abs_min_max": [biases.min().item(), biases.max().item()], "bias_tensors": len(ps),
            "all_biases_nonzero": bool(all((p != 0).all() for p in ps)), "mlp_pre_gelu": pre,
            "logits_std_per_prompt": [l.std().item() for l in prompt_logits],
            "logits_min_max_per_prompt": [[l.min().item(), l.max().item()] for l in prompt_logits],
            "attention_long_prompt": heads, "attention_uniform_baseline_mean_max_prob": uniform}


def write_atomic(path, write):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def main():
    args = parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    model = GPT2LMHeadModel.from_pretrained(args.model_dir, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    cfg = model.config
    pad_id = cfg.eos_token_id if cfg.eos_token_id is not None else 0
    prompts = load_prompts(args, cfg.vocab_size)
    for i, p in enumerate(prompts):
        n = len(p["ids"]) + max(len(p["decode_ids"]), args.new_tokens)
        if not p["ids"] or n > cfg.n_positions or max(p["ids"] + p["decode_ids"]) >= cfg.vocab_size:
            raise SystemExit(f"prompt {i}: needs 1..{cfg.n_positions} positions ({n} asked) and ids < vocab_size")

    tensors, entries, gelu_in = {}, [], []
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            t, noise, g = run_prompt(model, p["ids"], p["decode_ids"], args.new_tokens, pad_id)
            gelu_in.append(g)
            tensors |= {f"p{i}.{k}": v.contiguous() for k, v in t.items()}
            entries.append({"name": f"p{i}", "length": len(p["ids"]), "ids": p["ids"], "text": p["text"],
                            "decode_ids": p["decode_ids"], "decode_text": p["decode_text"],
                            "generated_new_ids": t["generated_ids"][len(p["ids"]):].tolist(),
                            "source_text": p["source_text"], **noise})
        longest = max(range(len(prompts)), key=lambda i: len(prompts[i]["ids"]))
        long_ids = prompts[longest]["ids"]
        magnitude = stats(model, long_ids, [tensors[f"p{i}.logits"] for i in range(len(prompts))],
                          torch.cat(gelu_in, 1))
        sens = None if args.no_sensitivity else sensitivity(model, long_ids, tensors[f"p{longest}.logits"])
    tensors = {k: v.to(torch.int32) if v.dtype == torch.int64 else v for k, v in tensors.items()}

    def desc(name):
        i, field = name.split(".", 1)
        p = prompts[int(i[1:])]
        return describe(field, cfg.n_layer, len(p["ids"]), len(p["decode_ids"]), pad_id, args.new_tokens)

    L = cfg.n_layer
    mod_file = Path(modeling_gpt2.__file__)
    ref = {
        "fixture": args.model_dir.resolve().name,
        "produced_by": {
            "transformers": transformers.__version__, "torch": torch.__version__,
            "safetensors": safetensors.__version__, "huggingface_hub": huggingface_hub.__version__,
            "python": platform.python_version(), "torch_num_threads": torch.get_num_threads(),
            "stubs": "none: scripts/hf_reference.py only calls into transformers' GPT2LMHeadModel",
            "modeling_file": "transformers/models/gpt2/modeling_gpt2.py sha256 "
                             + hashlib.sha256(mod_file.read_bytes()).hexdigest(),
        },
        "config": {"vocab_size": cfg.vocab_size, "n_positions": cfg.n_positions, "n_embd": cfg.n_embd,
                   "n_layer": L, "n_head": cfg.n_head, "head_dim": cfg.n_embd // cfg.n_head,
                   "n_inner": cfg.n_inner or 4 * cfg.n_embd, "activation_function": cfg.activation_function,
                   "layer_norm_epsilon": cfg.layer_norm_epsilon, "tie_word_embeddings": cfg.tie_word_embeddings,
                   "attn_implementation": "eager", "dtype": "float32", **args.config_extra},
        "hidden_states_index": {"0": "embeddings: wte[ids] + wpe[positions] (input of block 0)",
                                **{str(i): f"output of block {i - 1} (input of block {i})" for i in range(1, L)},
                                str(L): f"ln_f(output of block {L - 1}) -- the final hidden state fed to lm_head"},
        "prompts": entries,
        "hf_noise_floor": {
            "decode_vs_nocache_logits_max_abs_diff":
                max(e["decode_vs_nocache_full_forward_logits_max_abs_diff"] for e in entries),
            "decode_vs_one_shot_kv_max_abs_diff":
                max(e["decode_cache_vs_one_shot_prefill_cache_kv_max_abs_diff"] for e in entries),
            "float32_vs_float64_logits_max_abs_diff":
                max(e["float32_vs_float64_logits_max_abs_diff"] for e in entries),
            "same_weights_other_memory_alignment_logits_max_abs_diff":
                max(e["reloaded_vs_in_memory_logits_max_abs_diff"] for e in entries),
            "note": "HF's own disagreement with itself: its cached single-token steps vs its no-cache forward "
                    "of the same sequence, its float32 run vs a float64 run of the same weights, and the loaded "
                    "model vs a deepcopy of it (same values, other memory). Tolerance is 1e-5.",
        },
        "magnitude_stats": magnitude,
        **({"sensitivity_max_abs_logit_change_long_prompt": sens} if sens else {}),
        "tensors": {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape),
                        "description": desc(k)} for k, v in sorted(tensors.items())},
    }
    out = args.out or args.model_dir
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "reference.safetensors", lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    write_atomic(out / "reference.json", lambda p: p.write_text(json.dumps(ref, indent=1) + "\n"))
    print(f"wrote {out}/reference.safetensors ({len(tensors)} tensors) and reference.json")


if __name__ == "__main__":
    main()
