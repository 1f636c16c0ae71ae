"""Speculative decoding bench: built-in prompts, both workload mixes, per-task summary and disparity.

    python benchmarks/bench_specdec.py                       # tiny random Qwen2 pair (seconds; checks plumbing)
    python benchmarks/bench_specdec.py --verifier V --drafter D --max-new-tokens 64   # saved model directories

With the tiny pair, speed-ups are below 1 (both models are the same size, c ~ 1, and the per-step Python overhead
dominates); the acceptance columns and the theory-vs-measurement agreement are what it checks.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from reprogrid.specdec.disparity import disparity
from reprogrid.specdec.pairs import load_pair
from reprogrid.specdec.prompts import MIXES, load_prompts
from reprogrid.specdec.study import run_study


def tiny_pair(noise: float = 0.03):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=272, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=1024,
                      initializer_range=0.2, tie_word_embeddings=True)
    verifier = Qwen2ForCausalLM(cfg).eval()
    drafter = copy.deepcopy(verifier)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in drafter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise * p.std().clamp_min(1e-3))
    return verifier, drafter, tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verifier")
    ap.add_argument("--drafter")
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--per-task", type=int, default=2, help="prompts per task (built-in set has 4)")
    ap.add_argument("--chat-template", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.verifier:
        verifier, drafter, tok = load_pair(args.verifier, args.drafter)
        stop_at_eos = True
    else:
        verifier, drafter, tok = tiny_pair()
        stop_at_eos = False  # random models emit EOS at random; fixed lengths make the comparison cleaner
    prompts, seen = [], {}
    for p in load_prompts():
        if seen.get(p["task"], 0) < args.per_task:
            prompts.append(p)
            seen[p["task"]] = seen.get(p["task"], 0) + 1

    frames = []
    for mix in MIXES:
        t0 = time.perf_counter()
        df = run_study(verifier, drafter, tok, prompts, gamma=args.gamma, max_new_tokens=args.max_new_tokens,
                       mix=mix, chat_template=args.chat_template, stop_at_eos=stop_at_eos)
        print(f"mix={mix}: {len(df)} prompts in {time.perf_counter() - t0:.1f} s")
        frames.append(df)
    import pandas as pd

    df = pd.concat(frames, ignore_index=True)
    cols = ["alpha_analytic", "alpha_greedy", "alpha_empirical", "tokens_per_step", "expected_tokens_per_step_greedy",
            "c", "speedup_measured", "speedup_predicted_greedy", "cross_entropy"]
    print(df.groupby(["mix", "task"])[cols].mean().round(3).to_string())
    print("greedy outputs identical:", bool(df["outputs_identical"].all()),
          "| replay == recorded steps:", bool(df["replay_matches_observed"].all()))
    for value in ("tokens_per_step", "speedup_measured"):
        d = disparity(df[df["mix"] == "single"], value=value, n_boot=1000)
        print(f"{value}: max/min {d['max_min_ratio']:.3f} {d['max_min_ratio_ci']}, cv {d['cv']:.3f}, "
              f"ce_variance {d['ce_variance']:.4f}")


if __name__ == "__main__":
    main()
