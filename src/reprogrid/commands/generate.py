"""`reprogrid generate`: run every generation of one prepared model through lm-eval."""

from __future__ import annotations

from pathlib import Path

HELP = "run every generation of one prepared model through lm-eval"


def add_arguments(p) -> None:
    p.add_argument("--config", required=True)
    p.add_argument("--prepared-key", required=True)
    p.add_argument("--model-dir", required=True, help="prepared model directory")
    p.add_argument("--docs", required=True, help="root of the RULER docs cache")
    p.add_argument("--out", required=True, help="directory for per-generation records")
    p.add_argument("--manifest", required=True)
    p.add_argument("--threads", type=int, default=1)


def run(args) -> int:
    from reprogrid.generate import log, run_model
    from reprogrid.study import load_study

    cfg = load_study(args.config)
    res = run_model(cfg, args.prepared_key, Path(args.model_dir), Path(args.docs), Path(args.out),
                    Path(args.manifest), args.threads)
    failed = [g for g, s in res["generations"].items() if s["status"] != "ok"]
    log(f"[generate] {args.prepared_key}: {len(res['generations']) - len(failed)} ok, {len(failed)} failed")
    return 0
