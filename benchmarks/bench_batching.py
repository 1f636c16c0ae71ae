"""Throughput of one generation on CPU vs lm-eval batch size (the main lever for CPU decoding).

Usage: python benchmarks/bench_batching.py [--model-dir results/models/<key>] [--docs results/ruler]
       [--length 1024] [--tasks niah_single_1,ruler_fwe] [--items 4] [--threads 2] [--batch 1,4]
Needs a prepared model directory and its RULER docs (run the default study first, or `reprogrid
prepare-model` / `reprogrid ruler-data`). Prints seconds per sample and whether the responses match.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from reprogrid import models
from reprogrid.generate import run_generation


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default="results/models/qwen25-coder-0.5b-instruct--source")
    ap.add_argument("--docs", default="results/ruler")
    ap.add_argument("--tokenizer-slug", default="qwen25-coder-0.5b-instruct")
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--tasks", default="niah_single_1,ruler_fwe")
    ap.add_argument("--items", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--chat", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lm_eval.models.huggingface import HFLM

    model, tok = models.load_prepared(Path(args.model_dir))
    lm = HFLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=1)
    tasks = args.tasks.split(",")
    outputs = {}
    for b in [int(x) for x in args.batch.split(",")]:
        gen = {"generation_id": f"bench-b{b}", "context_length": args.length, "num_fewshot": 0,
               "chat_template": args.chat, "system_prompt": "default", "decoding": "greedy", "temperature": None,
               "max_gen_toks": 0, "batch_size": b, "length_budget": "fit", "data_seed": 0,
               "sizing_tokenizer": args.tokenizer_slug, "cwe_oneshot": False}
        cache = Path("/tmp/reprogrid-bench-cache") / str(time.time_ns())
        t0 = time.time()
        rec, _ = run_generation(lm, tok, gen, Path(args.docs), tasks, args.items, cache, seed=0)
        dt = time.time() - t0
        outputs[b] = list(rec["response"])
        print(f"batch_size={b}: {len(rec)} samples in {dt:.1f} s = {dt / len(rec):.2f} s/sample, "
              f"mean lm-eval score {rec['lm_eval_score'].mean():.3f}")
    sizes = sorted(outputs)
    for b in sizes[1:]:
        same = sum(x == y for x, y in zip(outputs[sizes[0]], outputs[b]))
        print(f"responses identical to batch_size={sizes[0]}: {same}/{len(outputs[b])} at batch_size={b}")


if __name__ == "__main__":
    main()
