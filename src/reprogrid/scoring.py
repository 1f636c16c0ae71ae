"""Score stored generations per cell: metric interpretation, scale, aggregation and split. No model.

Writes the tidy tables:
* ``samples.parquet``: one row per cell x item (factor columns, task, item id, score, prompt tokens,
  truncation flag, response);
* ``cells.parquet``: one row per cell (factor columns, score, n_items, n_truncated, status, reason).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from reprogrid.errors import UserError


_CTRL = re.compile(r"[\x00-\x1f]")
_WORD = re.compile(r"[\w-]+")


def _clean(pred: str) -> str:
    """lm-eval's RULER postprocessing: strip, control characters to newlines."""
    return _CTRL.sub("\n", pred.strip()).strip()


def all_match(pred: str, refs: list[str]) -> float:
    """lm-eval / upstream string_match_all: fraction of references found (case-insensitive substring)."""
    p = _clean(pred).lower()
    return sum(r.lower() in p for r in refs) / len(refs)


def any_match(pred: str, refs: list[str]) -> float:
    """Upstream RULER's QA string_match_part: full credit if any reference is found."""
    p = _clean(pred).lower()
    return float(any(r.lower() in p for r in refs))


def exact_match(pred: str, refs: list[str]) -> float:
    """Strict answer parsing: the prediction's words are exactly the references' words (order-free)."""
    words = set(_WORD.findall(_clean(pred).lower()))
    want = set(w for r in refs for w in _WORD.findall(r.lower()))
    return float(words == want)


METRICS = {"all_match": all_match, "any_match": any_match, "exact_match": exact_match}


def split_mask(split: str, tasks: pd.Series, doc_ids: pd.Series) -> np.ndarray:
    niah = tasks.str.startswith("niah_").to_numpy()
    if split == "all":
        return np.ones(len(tasks), dtype=bool)
    if split == "niah":
        return niah
    if split == "non_niah":
        return ~niah
    if split == "even":
        return (doc_ids.to_numpy() % 2) == 0
    if split == "odd":
        return (doc_ids.to_numpy() % 2) == 1
    raise UserError(f"unknown split '{split}'", field="factors.split")


def load_generations(manifests: list[Path]) -> tuple[pd.DataFrame, dict[str, str]]:
    """All generation records listed as ok by the manifests; and failed generation ids with reasons."""
    frames, failed = [], {}
    for m in manifests:
        data = json.loads(Path(m).read_text())
        base = Path(m).with_suffix("").with_suffix("")  # results/generations/<key>.manifest.json -> <key>
        for gid, st in sorted(data["generations"].items()):
            if st["status"] == "ok":
                frames.append(pd.read_parquet(base / st["records"]))
            else:
                failed[gid] = st.get("reason", "failed")
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["generation_id", "task", "doc_id", "item_id", "target", "response", "prompt_tokens",
                 "sizing_tokens", "max_length", "truncated"])
    return records, failed


def score(cells: pd.DataFrame, records: pd.DataFrame, failed: dict[str, str],
          factor_defaults: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply each cell's scoring levels to its generation's records."""
    factor_cols = [c for c in cells.columns if c not in ("cell_id", "generation_id", "prepared_key")]
    # Raw per-metric scores once per record, not once per cell.
    records = records.copy()
    for name, fn in METRICS.items():
        records[f"_m_{name}"] = [fn(r, list(t)) for r, t in zip(records["response"], records["target"])]
    by_gid = dict(tuple(records.groupby("generation_id", sort=False)))
    sample_frames, cell_rows = [], []
    for cell in cells.itertuples(index=False):
        c = cell._asdict()
        lv = {k: c[k] if k in c else factor_defaults[k] for k in ("metric", "scale", "aggregation", "split")}
        gid = c["generation_id"]
        base = {k: c[k] for k in ["cell_id", *factor_cols, "generation_id"]}
        if gid in failed or gid not in by_gid:
            cell_rows.append({**base, "score": np.nan, "n_items": 0, "n_truncated": 0, "status": "failed",
                              "reason": failed.get(gid, "no records")})
            continue
        rec = by_gid[gid]
        rec = rec[split_mask(lv["split"], rec["task"], rec["doc_id"])]
        factor = 100.0 if lv["scale"] == "percent" else 1.0
        s = rec[f"_m_{lv['metric']}"].to_numpy() * factor
        if len(s) == 0:
            cell_rows.append({**base, "score": np.nan, "n_items": 0, "n_truncated": 0, "status": "failed",
                              "reason": f"split '{lv['split']}' selects no items of the study's tasks"})
            continue
        if lv["aggregation"] == "task_mean":
            cell_score = float(pd.Series(s).groupby(rec["task"].to_numpy()).mean().mean())
        else:
            cell_score = float(s.mean())
        frame = pd.DataFrame({
            **{k: [v] * len(rec) for k, v in base.items()},
            "task": rec["task"].to_numpy(), "item_id": rec["item_id"].to_numpy(),
            "doc_id": rec["doc_id"].to_numpy(), "score": s,
            "prompt_tokens": rec["prompt_tokens"].to_numpy(), "sizing_tokens": rec["sizing_tokens"].to_numpy(),
            "max_length": rec["max_length"].to_numpy(), "truncated": rec["truncated"].to_numpy(),
            "response": rec["response"].to_numpy(),
            "target": ["|".join(t) for t in rec["target"]],
        })
        sample_frames.append(frame)
        cell_rows.append({**base, "score": cell_score, "n_items": int(len(rec)),
                          "n_truncated": int(rec["truncated"].sum()), "status": "ok", "reason": ""})
    samples = pd.concat(sample_frames, ignore_index=True) if sample_frames else pd.DataFrame()
    cells_out = pd.DataFrame(cell_rows)
    return samples, cells_out
