"""`reprogrid specdec ...`: speculative decoding measurements (theory, measure, summarize) and the
workflow's verbs (cells, run, collect, attribute)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from reprogrid.errors import UserError
from reprogrid.specdec.cells import cell_id, study_cells, study_settings
from reprogrid.specdec.collect import attribute_study, collect
from reprogrid.specdec.disparity import disparity
from reprogrid.specdec.hooks import DRAFTER_WARPERS
from reprogrid.specdec.pairs import load_pair
from reprogrid.specdec.prompts import MIXES, load_prompts
from reprogrid.specdec.runner import run_cell
from reprogrid.specdec.study import DECODINGS, run_study
from reprogrid.specdec.theory import check_gamma, expected_speedup, expected_tokens_per_step
from reprogrid.study import load_study

HELP = "speculative decoding measurements"
WORKFLOW_VERBS = ("cells", "run", "collect", "attribute")
MITIGATE_FLAGS = (  # (flag, type, help); defaults: reprogrid.specdec.mitigate.MitigationSettings
    ("--train-per-task", int, "training prompts per task (the first ones of each task in the file)"),
    ("--heldout-per-task", int, "held-out prompts per task (the next ones), measured before and after"),
    ("--under-served", int, "train on the N lowest-acceptance tasks (default 0: the tasks below the mean)"),
    ("--lora-rank", int, "LoRA rank"),
    ("--lora-alpha", float, "LoRA alpha (scale alpha/rank)"),
    ("--top-k", int, "verifier tokens kept per position in the distillation data"),
    ("--distill-tokens", int, "verifier greedy tokens per training prompt"),
    ("--budget", int, "training examples drawn in all (steps = budget // batch size)"),
    ("--batch-size", int, "training examples per optimiser step"),
    ("--lr", float, "AdamW learning rate"),
    ("--deficit-power", float, "task weight = (deficit + floor)^power"),
    ("--deficit-floor", float, "task weight = (deficit + floor)^power"),
    ("--gamma", int, "draft tokens per verifier step when re-measuring"),
    ("--max-new-tokens", int, "tokens generated per held-out prompt when re-measuring"),
    ("--timing-steps", int, "decode steps timed per prompt for c"),
    ("--n-boot", int, "bootstrap replicates of the before/after comparison"),
    ("--seed", int, "seed of LoRA init, task sampling, generation and bootstrap"),
)


def _add_workflow_arguments(sub) -> None:
    c = sub.add_parser("cells", help="list the measurement cells of a config's specdec section (TSV)")
    c.add_argument("--config", required=True)

    r = sub.add_parser("run", help="measure one cell of a config's specdec study (the workflow's per-cell job)")
    r.add_argument("--config", required=True, help="study config with a specdec section")
    r.add_argument("--cell", default=None, help="cell id (see 'reprogrid specdec cells'); or give the factors below")
    r.add_argument("--pair", default=None, help="pair name (default: the only pair)")
    r.add_argument("--gamma", type=int, default=None)
    r.add_argument("--decoding", choices=DECODINGS, default=None)
    r.add_argument("--mix", choices=MIXES, default=None)
    r.add_argument("--chat-template", choices=("true", "false"), default=None)
    r.add_argument("--verifier-dir", required=True, help="prepared model directory of the pair's verifier")
    r.add_argument("--drafter-dir", required=True, help="prepared model directory of the pair's drafter")
    r.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    r.add_argument("--out", required=True, help="directory for <cell>.parquet, <cell>.steps.parquet, <cell>.json")

    k = sub.add_parser("collect", help="concatenate cell tables; per-task disparity (disparity.json)")
    k.add_argument("--config", required=True)
    k.add_argument("tables", nargs="+", metavar="CELL_TABLE", help="<cell>.parquet files written by 'run'")
    k.add_argument("--n-boot", type=int, default=None, help="bootstrap replicates (default: specdec.bootstrap)")
    k.add_argument("--out", required=True, help="directory for specdec.parquet, specdec_steps.parquet, disparity.json")

    a = sub.add_parser("attribute", help="attribute speed-up and acceptance spread to the study's factors")
    a.add_argument("table", help="specdec.parquet written by 'collect'")
    a.add_argument("--bootstrap", type=int, default=200)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", required=True, help="directory for attribution_speedup.* and attribution_acceptance.*")


def _resolve_cell(cfg, args) -> str:
    if args.cell:
        return args.cell
    s = study_settings(cfg)
    names = [p["name"] for p in s["pairs"]]

    def one(value, levels, flag):
        if value is not None:
            return value
        if len(levels) == 1:
            return levels[0]
        raise UserError(f"the config has several levels ({', '.join(map(str, levels))}); pick one", field=flag)

    pair = one(args.pair, names, "--pair")
    chat = None if args.chat_template is None else args.chat_template == "true"
    return cell_id(pair, one(args.gamma, s["gamma"], "--gamma"), one(args.decoding, s["decoding"], "--decoding"),
                   one(args.mix, s["mix"], "--mix"), one(chat, s["chat_template"], "--chat-template"))


def run_workflow(args) -> int:
    if args.specdec_command == "attribute":
        if not Path(args.table).is_file():
            raise UserError("file not found", field=args.table)
        summary = attribute_study(args.table, args.out, bootstrap=args.bootstrap, seed=args.seed)
        for name, info in summary.items():
            print(f"{name}: {info['response']} over {', '.join(info['factors']) or '(none)'}"
                  + (f" - {info['degenerate']}" if info["degenerate"] else ""))
        return 0
    cfg = load_study(args.config)
    if args.specdec_command == "cells":
        cells = study_cells(cfg)
        keys = ["cell_id", "pair", "verifier_key", "drafter_key", "gamma", "decoding", "temperature", "mix",
                "chat_template", "backend"]
        print("\t".join(keys))
        for c in cells.values():
            print("\t".join("" if c[k] is None else str(c[k]) for k in keys))
        return 0
    if args.specdec_command == "collect":
        result = collect(cfg, args.tables, args.out, n_boot=args.n_boot)
        if result.get("groups"):
            print(f"speedup_measured by task (all cells): max/min {result['max_min_ratio']:.3f}, cv {result['cv']:.3f}")
        else:
            print(result.get("note", "no measured cells"))
        return 0
    # run
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cid = _resolve_cell(cfg, args)
    meta = run_cell(cfg, cid, args.verifier_dir, args.drafter_dir, args.out, threads=args.threads,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"{cid}: {meta['status']}, {meta['n_prompts']} prompts, {meta['wall_s']:.1f} s -> {args.out}")
    return 0


# ------------------------------------------------------------------------------------------------------------------
# CLI: reprogrid specdec {theory, measure, summarize} (+ the workflow verbs above)


def add_arguments(parser: object) -> None:
    sub = parser.add_subparsers(dest="specdec_command", metavar="ACTION", required=True)

    t = sub.add_parser("theory", help="print expected tokens per step and speed-up for alpha, gamma, c")
    t.add_argument("--alpha", type=float, required=True)
    t.add_argument("--gamma", type=int, required=True)
    t.add_argument("--c", type=float, default=0.0)

    m = sub.add_parser("measure", help="measure speculative decoding per prompt for one verifier/drafter pair")
    m.add_argument("--verifier", required=True, help="saved transformers model directory (with tokenizer)")
    m.add_argument("--drafter", required=True, help="saved transformers model directory (same tokenizer)")
    m.add_argument("--prompts", default=None, help="JSONL prompts (task, prompt_id, text|messages); default built-in")
    m.add_argument("--gamma", type=int, default=4, help="draft tokens per verifier step (constant)")
    m.add_argument("--decoding", choices=DECODINGS, default="greedy")
    m.add_argument("--temperature", type=float, default=None, help="sampling temperature (sample only; default 1)")
    m.add_argument("--max-new-tokens", type=int, default=128)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--mix", choices=MIXES, default=None, help="workload order (default: file order)")
    m.add_argument("--chat-template", action="store_true", help="wrap 'text' prompts in the chat template")
    m.add_argument("--no-eos", action="store_true", help="do not stop at EOS (fixed-length outputs)")
    m.add_argument("--drafter-warpers", choices=DRAFTER_WARPERS, default="once",
                   help="sampling only: 'once' = drafter at the verifier's temperature (textbook); 'library' = "
                        "transformers 5.23 as is (temperature applied twice to the drafter)")
    m.add_argument("--timing-steps", type=int, default=8)
    m.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    m.add_argument("--out", required=True, help="output directory (specdec.parquet, specdec_steps.parquet, meta)")

    s = sub.add_parser("summarize", help="per-task means, intervals and disparity measures of a specdec table")
    s.add_argument("table", help="specdec.parquet written by 'measure'")
    s.add_argument("--value", default="speedup_measured")
    s.add_argument("--by", default="task")
    s.add_argument("--n-boot", type=int, default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output directory (disparity.json)")

    _add_workflow_arguments(sub)
    _add_mitigate_arguments(sub)


def _add_mitigate_arguments(sub) -> None:
    from reprogrid.specdec.mitigate import MitigationSettings

    g = sub.add_parser("mitigate", help="fine-tune the drafter (LoRA, peft) toward the verifier on its under-served "
                                        "tasks (reprogrid's s-CDF) and re-measure acceptance and disparity")
    g.add_argument("--config", default=None, help="study config: settings from specdec.mitigation, tasks, "
                                                  "chat_template, dtype, timing_steps, bootstrap and the pair's "
                                                  "device (flags override)")
    g.add_argument("--verifier", required=True, help="saved transformers model directory (with tokenizer)")
    g.add_argument("--drafter", required=True, help="saved transformers model directory (same tokenizer)")
    g.add_argument("--prompts", default=None, help="JSONL prompts (task, prompt_id, text|messages); default built-in")
    g.add_argument("--tasks", default=None, help="comma-separated tasks (default: every task of the prompts)")
    defaults = MitigationSettings(verifier="", drafter="", out="")
    for flag, kind, text in MITIGATE_FLAGS:
        g.add_argument(flag, type=kind, default=None,
                       help=f"{text} (default {getattr(defaults, flag[2:].replace('-', '_'))})")
    g.add_argument("--chat-template", action="store_true", default=None,
                   help="wrap 'text' prompts in the chat template")
    g.add_argument("--device", choices=("cpu", "cuda"), default=None, help="where both models run (default cpu)")
    g.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    g.add_argument("--out", required=True, help="output directory (drafter/, adapter/, tables, mitigation.json)")


def _mitigation_settings(args):
    """MitigationSettings from the config (when given), then the flags that were set."""
    from reprogrid.specdec.mitigate import MitigationSettings

    values: dict = {}
    if args.config:
        from reprogrid.specdec.cells import mitigation_pair, mitigation_values

        cfg = load_study(args.config)
        settings = study_settings(cfg)
        values = mitigation_values(settings)
        values.update(dtype=settings["dtype"],
                      device=cfg.models[mitigation_pair(cfg)["verifier"]].get("device", "cpu"))
    for flag, _, _ in MITIGATE_FLAGS:
        name = flag[2:].replace("-", "_")
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.tasks:
        values["tasks"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for name in ("chat_template", "device"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return MitigationSettings(verifier=args.verifier, drafter=args.drafter, out=args.out, prompts=args.prompts,
                              **values)


def run_mitigate(args) -> int:
    from reprogrid.specdec.mitigate_run import run_mitigation

    settings = _mitigation_settings(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    summary = run_mitigation(settings, log=lambda m: print(m, file=sys.stderr, flush=True))
    fair, check = summary["comparison"]["fairness"], summary["comparison"]["verifier_outputs"]
    alpha = summary["comparison"]["change"]["alpha_analytic"]
    print(f"mean acceptance {alpha['mean']['before']:.3f} -> {alpha['mean']['after']:.3f}; cv "
          f"{alpha['cv']['before']:.3f} -> {alpha['cv']['after']:.3f}")
    if fair:
        lo, hi = fair["relative_change_pct_ci"]
        print(f"ce_variance (reprogrid's fairness measure) {fair['relative_change_pct']:+.1f}% "
              f"[{lo:+.1f}%, {hi:+.1f}%]")
    print(f"verifier outputs identical: {check['identical']}; drafter -> {summary['drafter_dir']}")
    return 0


def run(args) -> int:
    from reprogrid.io import read_table, short_hash, write_json, write_parquet

    if args.specdec_command in WORKFLOW_VERBS:
        return run_workflow(args)
    if args.specdec_command == "mitigate":
        return run_mitigate(args)

    if args.specdec_command == "theory":
        e = expected_tokens_per_step(args.alpha, args.gamma)
        s = expected_speedup(args.alpha, args.gamma, args.c)
        print(f"expected_tokens_per_step\t{e:.4f}\nexpected_speedup\t{s:.4f}")
        return 0

    if args.specdec_command == "summarize":
        df = read_table(args.table)
        result = disparity(df, value=args.value, by=args.by, n_boot=args.n_boot, seed=args.seed)
        result["input"] = str(args.table)
        write_json(Path(args.out) / "disparity.json", result)
        print(f"{args.value} by {args.by}: max/min {result['max_min_ratio']:.3f}, cv {result['cv']:.3f}")
        return 0

    # measure
    import torch
    import transformers

    check_gamma(args.gamma)
    if args.max_new_tokens < 1:
        raise UserError("must be >= 1", field="--max-new-tokens")
    if args.temperature is not None and args.decoding != "sample":
        raise UserError("only applies to --decoding sample", field="--temperature")
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = load_prompts(args.prompts)
    verifier, drafter, tok = load_pair(args.verifier, args.drafter)
    df, steps = run_study(verifier, drafter, tok, prompts, gamma=args.gamma, max_new_tokens=args.max_new_tokens,
                          decoding=args.decoding, temperature=args.temperature, seed=args.seed,
                          chat_template=args.chat_template, mix=args.mix, timing_steps=args.timing_steps,
                          stop_at_eos=not args.no_eos, drafter_warpers_mode=args.drafter_warpers,
                          return_steps=True)
    out = Path(args.out)
    write_parquet(df, out / "specdec.parquet")
    write_parquet(steps, out / "specdec_steps.parquet")
    write_json(out / "specdec_meta.json", {
        "verifier": str(args.verifier), "drafter": str(args.drafter), "prompts": args.prompts or "built-in",
        "prompts_hash": short_hash(prompts), "gamma": args.gamma, "decoding": args.decoding,
        "temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "seed": args.seed, "mix": args.mix,
        "chat_template": args.chat_template, "stop_at_eos": not args.no_eos,
        "drafter_warpers": args.drafter_warpers, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__, "python": sys.version.split()[0],
        "definitions": {"alpha_empirical": "A/(A+R), R = verifier steps with a rejection",
                        "c": "median drafter / verifier single-token cached decode step time",
                        "speedup_measured": "assisted tokens/s divided by plain verifier tokens/s"},
    })
    print(f"{len(df)} prompts; mean speed-up {df['speedup_measured'].mean():.3f}; "
          f"mean tokens/step {df['tokens_per_step'].mean():.3f} -> {out}")
    return 0
