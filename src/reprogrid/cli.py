"""The ``reprogrid`` command. Each subcommand is a module of ``reprogrid.commands`` (argument parsing
and printing only) exposing ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported only when their subcommand runs, so ``reprogrid grid`` does not pay for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from reprogrid.errors import UserError

# subcommand -> (module under reprogrid.commands, one-line help)
COMMANDS = {
    "grid": ("grid", "print the cell table of a study config as TSV"),
    "prepare-model": ("prepare_model", "resolve, verify, convert and cache one (model, quantization)"),
    "ruler-data": ("ruler_data", "build and cache RULER docs for one (task, length, tokenizer, seed)"),
    "generate": ("generate", "run every generation of one prepared model through lm-eval"),
    "score": ("score", "score stored generations per cell and write the tidy tables"),
    "attribute": ("attribute", "variance shares of a response over factors, with intervals"),
    "estimate": ("estimate", "shares, predicted unrun cells and a held-out check from an incomplete (fractional) grid"),
    "adapt": ("adapt", "add the next follow-up round of an adaptive design (where predictions are least certain)"),
    "gstudy": ("gstudy", "variance components (items, tasks, seeds vs protocol), G coefficient and design advice"),
    "claims": ("claims", "check published claims for internal consistency and map them onto a grid"),
    "pitfalls": ("pitfalls", "measure each protocol mistake against the reference protocol, paired on items"),
    "explain": ("explain", "decompose the gap between two protocols into factor contributions"),
    "report": ("report", "write the attribution report (Markdown + self-contained HTML)"),
    "specdec": ("specdec", "speculative decoding measurements"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reprogrid", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(f"reprogrid.commands.{module_name}")
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    only = command if command in COMMANDS else "__none__"
    try:
        parser = build_parser(only)
        args = parser.parse_args(argv)
        return int(args._module.run(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
