"""`reprogrid ruler-data`: build and cache RULER docs for one (task, length, tokenizer, seed)."""

from __future__ import annotations

import sys
from pathlib import Path

HELP = "build and cache RULER docs for one (task, length, tokenizer, seed)"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="verb", required=True)
    d = sub.add_parser("docs", help="build the docs of one (task, length, tokenizer, seed)")
    d.add_argument("--task", required=True)
    d.add_argument("--length", type=int, required=True)
    d.add_argument("--tokenizer", required=True, help="tokenizer directory")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--asset-dir", default=None)
    d.add_argument("--out", required=True)
    t = sub.add_parser("tokenizer", help="save the sizing tokenizer of a model or tokenizer slug")
    t.add_argument("--config", required=True)
    t.add_argument("--slug", required=True)
    t.add_argument("--out", required=True)


def run(args) -> int:
    from reprogrid import ruler
    from reprogrid.io import write_parquet

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.verb == "docs":
        log(f"[ruler] building {args.task} at {args.length} tokens (seed {args.seed})")
        df = ruler.build_docs(args.task, args.length, args.tokenizer, args.seed, args.asset_dir)
        write_parquet(df, args.out)
        log(f"[ruler] {len(df)} docs -> {args.out}")
    else:
        from reprogrid import tokenizers
        from reprogrid.study import load_study

        cfg = load_study(args.config)
        info = tokenizers.save_tokenizer(args.slug, cfg, Path(args.out), log=log)
        log(f"[ruler] tokenizer {info['slug']} ({info['class']}, vocab {info['vocab_size']}) -> {args.out}")
    return 0
