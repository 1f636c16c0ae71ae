"""RULER documents, built once per (task, length, sizing tokenizer, seed) with lm-eval's own generators.

lm-eval builds RULER data at task-load time, seeded by the global ``random``/``numpy`` state, with
500 samples per length and lengths chained into one split. reprogrid instead calls the same generator
functions once per (task, length, tokenizer, seed), stores the 500 docs as Parquet, and hands the
first ``n_items`` of them to lm-eval at generation time. The same docs therefore serve every cell
that shares those four values, whatever else differs (model, quantization, chat template, metric...).

Two deviations from calling the generators through lm-eval, both deliberate:
* the sizing tokenizer is loaded with ``trust_remote_code=False`` (lm-eval hard-codes True);
* nltk's ``punkt_tab`` download at import is skipped when offline (the offline tasks do not use it).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd

from reprogrid.catalogue import OFFLINE_TASKS, TASKS
from reprogrid.errors import UserError

@functools.cache
def _safe_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if len(tok("The quick brown fox jumps over the lazy dog.").input_ids) == 0:
        raise UserError(f"tokenizer '{path}' encodes text to 0 tokens; it cannot size RULER contexts")
    return tok


def _offline_nltk():
    """Import lm-eval's RULER modules without letting nltk reach for the network."""
    import nltk

    original = nltk.download
    nltk.download = lambda *a, **k: False
    try:
        importlib.import_module("lm_eval.tasks.ruler.prepare_niah")
    finally:
        nltk.download = original


@contextlib.contextmanager
def _patched_tokenizer_loader(module):
    original = module.get_tokenizer
    module.get_tokenizer = lambda tokenizer=None, pretrained=None, **_: _safe_tokenizer(tokenizer or pretrained)
    try:
        yield
    finally:
        module.get_tokenizer = original


# The files an asset directory holds for the 7 online tasks (what lm-eval would download).
ASSET_FILES = {
    "essays": "paul_graham_essays.jsonl",  # one JSON object per line with a "text" field (baber/paul_graham_essays)
    "dev-v2.0.json": "squad-dev-v2.0.json",  # SQuAD 2.0 dev set
    "hotpot_dev_distractor_v1.json": "hotpot_dev_distractor_v1.json",  # HotpotQA dev (distractor)
}


def _asset(asset_dir: Path, name: str) -> Path:
    path = Path(asset_dir) / ASSET_FILES[name]
    if not path.is_file():
        raise UserError(f"'{path}' is missing: the asset directory must hold {ASSET_FILES[name]}",
                        field="ruler.asset_dir")
    return path


@contextlib.contextmanager
def _local_assets(module, asset_dir):
    """Serve the data lm-eval's online RULER tasks download from files in ``asset_dir`` instead."""
    if asset_dir is None:
        yield
        return
    import json

    patched = []
    if hasattr(module, "get_haystack"):
        original_haystack = module.get_haystack

        def get_haystack(type_haystack):
            if type_haystack != "essay":
                return original_haystack(type_haystack)
            import nltk

            nltk_dir = Path(asset_dir) / "nltk_data"
            if str(nltk_dir) not in nltk.data.path:
                nltk.data.path.insert(0, str(nltk_dir))
            try:
                nltk.data.find("tokenizers/punkt_tab")
            except LookupError:
                raise UserError(f"'{nltk_dir}/tokenizers/punkt_tab' is missing: the essay haystack splits "
                                "sentences with nltk's punkt_tab, which must be in the asset directory",
                                field="ruler.asset_dir") from None
            lines = _asset(asset_dir, "essays").read_text(encoding="utf-8").splitlines()
            text = " ".join(json.loads(line)["text"] for line in lines if line.strip())
            return re.sub(r"\s+", " ", text).split(" ")

        module.get_haystack = get_haystack
        patched.append(("get_haystack", original_haystack))
    if hasattr(module, "download_json"):
        original_download = module.download_json

        def download_json(url):
            return json.loads(_asset(asset_dir, url.rsplit("/", 1)[-1]).read_text(encoding="utf-8"))

        module.download_json = download_json
        patched.append(("download_json", original_download))
    try:
        yield
    finally:
        for name, fn in patched:
            setattr(module, name, fn)


def build_docs(task: str, length: int, tokenizer_dir: str | Path, seed: int,
               asset_dir: str | Path | None = None) -> pd.DataFrame:
    """All RULER docs of one (task, length, tokenizer, seed), in lm-eval's order, as a DataFrame."""
    if task not in TASKS:
        raise UserError(f"unknown RULER task '{task}'; expected one of {', '.join(TASKS)}")
    if task not in OFFLINE_TASKS and asset_dir is None:
        raise UserError(f"task '{task}' needs data that is not available offline; set ruler.asset_dir "
                        "to a local copy of its data")
    _offline_nltk()
    module_name, fn_name, _ = TASKS[task]
    module = importlib.import_module(f"lm_eval.tasks.ruler.{module_name}")
    random.seed(seed)
    np.random.seed(seed)
    kwargs = {"tokenizer": str(tokenizer_dir), "max_seq_lengths": [int(length)]}
    with _patched_tokenizer_loader(module), _local_assets(module, asset_dir):
        dataset = getattr(module, fn_name)(**kwargs)["test"]
    df = dataset.to_pandas()
    df.insert(0, "doc_id", np.arange(len(df), dtype=np.int64))
    # Normalise list-valued columns to plain lists of str for stable Parquet output.
    df["outputs"] = df["outputs"].map(lambda xs: [str(x) for x in xs])
    empty = int((df["outputs"].map(len) == 0).sum())
    if empty:
        raise UserError(f"lm-eval's {task} generator made {empty} of {len(df)} docs with no reference answer "
                        f"at {length} tokens (the context is too short for the task); raise the length")
    return df


def load_docs(path: str | Path, n_items: int) -> list[dict]:
    df = pd.read_parquet(path)
    records = df.head(n_items).to_dict("records")
    for r in records:
        r["outputs"] = [str(x) for x in r["outputs"]]
        r["max_length"] = int(r["max_length"])
    return records
