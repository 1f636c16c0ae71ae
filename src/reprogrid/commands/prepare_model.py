"""`reprogrid prepare-model`: resolve, verify, convert and cache one (model, quantization)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HELP = "resolve, verify, convert and cache one (model, quantization)"


def add_arguments(p) -> None:
    p.add_argument("--config", help="study config YAML")
    p.add_argument("--model", help="model slug (a key of `models:` in the config)")
    p.add_argument("--quantization")
    p.add_argument("--join-embedded", metavar="FILE", help="only join + verify the embedded GGUF of this file name")
    p.add_argument("--out", required=True, help="prepared model directory (or joined GGUF file) to write")


def run(args) -> int:
    from reprogrid import models
    from reprogrid.catalogue import gguf_weights_level
    from reprogrid.errors import UserError

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.join_embedded:
        spec = next((s for s in models.EMBEDDED.values() if s.upstream_file == args.join_embedded), None)
        if spec is None:
            raise UserError(f"no embedded model has the file '{args.join_embedded}'", field="--join-embedded")
        models.join_embedded(spec, Path(args.out), log=log)
        log(f"[models] {args.out}: sha256 {spec.sha256} verified")
        return 0
    missing = [f"--{k}" for k in ("config", "model", "quantization") if not getattr(args, k)]
    if missing:
        raise UserError(f"{', '.join(missing)} required (or --join-embedded)", field="prepare-model")
    from reprogrid.study import load_study

    cfg = load_study(args.config)
    if args.model not in cfg.models:
        raise UserError(f"unknown model '{args.model}'", field="--model")
    entry = cfg.models[args.model]
    models.check_source(args.model, entry)
    level = gguf_weights_level(args.quantization)
    if level is not None:  # a prepared GGUF for an engine that runs GGUF files (llama_cpp)
        info = models.prepare_gguf(args.model, entry, level, cfg.resources, Path(args.out), threads=cfg.threads, log=log)
    else:
        info = models.prepare(args.model, entry, args.quantization, cfg.resources, Path(args.out), log=log)
    print(json.dumps({k: info[k] for k in ("prepared_key", "weights_sha256")}))
    return 0
