#!/usr/bin/env python3
"""HuggingFace transformers' cached decode speed on a model folder: the peer of `deno task bench`.

Loads MODEL_DIR (config.json + model.safetensors) into transformers' GPT2LMHeadModel (float32,
CPU, eval mode), prefills PROMPT tokens and times `generate()` of TOKENS new tokens with the
cache, greedy and (--top-k K) sampled at temperature 1. Decode speed counts the decode steps
alone, as kvgpt's bench does: (TOKENS - 1) / (time of TOKENS tokens - time of 1 token), each
the median of REPS runs after a warm-up. Prints one JSON line.

  hf_decode_peer.py MODEL_DIR [--prompt 16] [--tokens 47] [--reps 5] [--threads 2] [--top-k 40]
"""
import argparse
import json
import statistics
import time

import torch
from transformers import GPT2LMHeadModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    ap.add_argument("--tokens", type=int, default=47, help="new tokens per generate()")
    ap.add_argument("--reps", type=int, default=5, help="timed runs after a warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=0, help="also time top-k sampling (0: greedy only)")
    args = ap.parse_args()
    if args.tokens < 2:
        ap.error("--tokens must be at least 2")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT2LMHeadModel.from_pretrained(args.model_dir, attn_implementation="eager").eval()
    vocab = model.config.vocab_size
    # The prompt kvgpt's bench feeds: (i * 7919 + 13) mod vocab.
    ids = torch.tensor([[(i * 7919 + 13) % vocab for i in range(args.prompt)]])
    pad = model.config.eos_token_id if model.config.eos_token_id is not None else 0

    def median_ms(n: int, sampling: dict) -> float:
        def run() -> None:
            model.generate(ids, max_new_tokens=n, min_new_tokens=n, use_cache=True,
                           pad_token_id=pad, **sampling)
        run()
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    out = {"model": args.model_dir, "threads": args.threads, "prompt": args.prompt,
           "tokens": args.tokens, "torch": torch.__version__}
    modes = [("greedy", {"do_sample": False})]
    if args.top_k:
        modes.append((f"topk{args.top_k}", {"do_sample": True, "top_k": args.top_k,
                                            "temperature": 1.0}))
    with torch.inference_mode():
        for name, sampling in modes:
            one = median_ms(1, sampling)
            full = median_ms(args.tokens, sampling)
            if full <= one:
                # Noise larger than the decode steps themselves (a loaded machine, few tokens):
                # no honest rate can be derived from the difference.
                raise SystemExit(f"hf_decode_peer: {name}: {args.tokens} tokens took {full:.1f} ms, "
                                 f"1 token {one:.1f} ms; raise --tokens or --reps")
            out[f"{name}_tok_s"] = (args.tokens - 1) / ((full - one) / 1000)
            out[f"{name}_generate_tok_s"] = args.tokens / (full / 1000)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
