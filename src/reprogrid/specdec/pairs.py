"""A verifier/drafter pair: the one vocabulary check, and loading a pair of saved model directories.

This study measures transformers' shared-tokenizer assisted path only. A pair whose vocabularies differ (LM-head
sizes, or tokenizers) would take the different-tokenizer path (universal assisted decoding), which is another
algorithm; every refusal of such a pair is written by :func:`refusal`.
"""

from __future__ import annotations

import json
from pathlib import Path

from reprogrid.errors import UserError

NOT_MEASURED = ("transformers would take the different-tokenizer (universal assisted decoding) path, which this "
                "study does not measure")


def refusal(reason: str) -> str:
    """The refusal of a pair that would leave the shared-tokenizer path: ``<reason>: transformers would take ...``."""
    return f"{reason}: {NOT_MEASURED}"


def size_problem(verifier_size: int | None, drafter_size: int | None) -> str | None:
    """The refusal when both LM-head sizes are known and differ; None otherwise."""
    if verifier_size is None or drafter_size is None or verifier_size == drafter_size:
        return None
    return refusal(f"verifier vocabulary {verifier_size} != drafter vocabulary {drafter_size}")


def tokenizer_problem(verifier_vocab: dict, drafter_vocab: dict) -> str | None:
    """The refusal when the two tokenizers' vocabularies (token -> id) differ; None otherwise."""
    return None if verifier_vocab == drafter_vocab else refusal("verifier and drafter tokenizers differ")


def model_vocab_size(model) -> int:
    """LM-head rows of a loaded model (the text config's ``vocab_size`` for multimodal configs)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(cfg.vocab_size)


def config_vocab_size(directory: str | Path) -> int | None:
    """``vocab_size`` from a model directory's config.json (None when unreadable or absent)."""
    try:
        data = json.loads(Path(directory, "config.json").read_text())
    except (OSError, ValueError):
        return None
    data = data.get("text_config", data) if isinstance(data.get("text_config"), dict) else data
    v = data.get("vocab_size")
    return int(v) if isinstance(v, int) else None


def check_pair(verifier, drafter) -> None:
    """Refuse loaded models that transformers would not run on the shared-tokenizer assisted path."""
    problem = size_problem(model_vocab_size(verifier), model_vocab_size(drafter))
    if problem is not None:
        raise UserError(problem, field="vocab")


def shared_vocab(verifier, drafter, vocab_size: int | None) -> int:
    """Number of leading vocabulary rows to compare (handles padding of the LM head beyond the tokenizer)."""
    v, d = model_vocab_size(verifier), model_vocab_size(drafter)
    if v == d:
        return v  # same LM head size: compare in full, as transformers' assisted path does
    if vocab_size is None:
        raise UserError(
            f"verifier vocabulary {v} != drafter vocabulary {d}; pass the tokenizer size to compare the shared "
            "rows, or use models with one tokenizer", field="vocab")
    if vocab_size > min(v, d):
        raise UserError(refusal(f"verifier vocabulary {v} and drafter vocabulary {d} differ beyond padding "
                                f"(tokenizer has {vocab_size} tokens)"), field="vocab")
    return int(vocab_size)


def pair_problem(verifier_dir: str | Path, drafter_dir: str | Path) -> str | None:
    """Why transformers would not run this pair on the shared-tokenizer path (None: it would), from the files."""
    problem = size_problem(config_vocab_size(verifier_dir), config_vocab_size(drafter_dir))
    if problem is not None:
        return problem
    tv, td = Path(verifier_dir, "tokenizer.json"), Path(drafter_dir, "tokenizer.json")
    if tv.is_file() and td.is_file():
        from reprogrid.io import sha256_file

        if sha256_file(tv) != sha256_file(td):
            from transformers import AutoTokenizer

            return tokenizer_problem(AutoTokenizer.from_pretrained(verifier_dir).get_vocab(),
                                     AutoTokenizer.from_pretrained(drafter_dir).get_vocab())
    return None


def require_model_dir(directory: str | Path, field: str, kind: str = "saved") -> Path:
    """A transformers model directory (one with config.json); UserError naming ``field`` otherwise."""
    if not Path(directory, "config.json").is_file():
        raise UserError(f"not a {kind} transformers model directory (no config.json)", field=f"{field} {directory}")
    return Path(directory)


def load_pair(verifier_dir: str | Path, drafter_dir: str | Path, fields: tuple[str, str] = ("--verifier", "--drafter")):
    """Load (verifier, drafter, tokenizer) from two saved model directories; refuse tokenizers that differ.

    ``fields`` name the two directories in errors (the command-line flags by default)."""
    from reprogrid.models import load_prepared

    verifier_dir = require_model_dir(verifier_dir, fields[0])
    drafter_dir = require_model_dir(drafter_dir, fields[1])
    verifier, tok = load_prepared(verifier_dir)
    drafter, dtok = load_prepared(drafter_dir)
    problem = tokenizer_problem(tok.get_vocab(), dtok.get_vocab())
    if problem is not None:
        raise UserError(problem, field=fields[1])
    return verifier, drafter, tok
