"""Expand a study config into its grid of cells.

One cell = one combination of the listed factors' levels. Cells that differ only in scoring factors
(metric, scale, aggregation, split), or in settings that cannot change the generation (temperature
under greedy decoding, system prompt or template family without a chat template), share a ``generation_id`` and so
share one model run.
"""

from __future__ import annotations

import itertools

import pandas as pd

from reprogrid.catalogue import generation_factors, late_factors, level_text, prepared_key
from reprogrid.config import Config
from reprogrid.designs import plan
from reprogrid.errors import UserError
from reprogrid.io import short_hash

MAX_CELLS = 1_000_000


def generation_params(cfg: Config, levels: dict) -> dict:
    """The canonical description of one model run: everything that can change what the model emits."""
    p = {name: levels[name] for name in generation_factors()}
    if p["decoding"] == "greedy":
        p["temperature"] = None
    if not p["chat_template"]:
        p["system_prompt"] = None
        p["template_family"] = None
    if "ruler_cwe" not in cfg.ruler["tasks"]:
        p["cwe_oneshot"] = None
    p["sizing_tokenizer"] = p["model"] if p["tokenizer"] == "model" else p["tokenizer"]
    return p


def generation_id(cfg: Config, params: dict) -> str:
    ruler = cfg.ruler
    late = late_factors()
    key = {
        "params": {k: v for k, v in params.items() if not (k in late and v in (None, late[k]))},
        "model_entry": cfg.models[params["model"]],
        "tokenizer_entry": cfg.tokenizers.get(params["tokenizer"]),
        "tasks": list(ruler["tasks"]),
        "n_items": ruler["n_items"],
        "asset_dir": ruler["asset_dir"],
        "format": 1,
    }
    return "g" + short_hash(key, 10)


def cell_id(levels: dict, gid: str) -> str:
    """A cell's id: every factor's level and the generation id; a late factor (``x-id: non-default``) at its
    default is left out, as in generation ids, so cells of studies that never name it keep their ids."""
    late = late_factors()
    kept = {k: levels[k] for k in sorted(levels) if not (k in late and levels[k] in (None, late[k]))}
    return "c" + short_hash({"levels": kept, "g": gid}, 10)


def _excluded(levels: dict, rules: list[dict]) -> bool:
    return any(all(levels.get(k) == v for k, v in rule.items()) for rule in rules)


def _expand(cfg: Config) -> tuple[pd.DataFrame, dict[str, dict]]:
    listed = cfg.listed
    n = 1
    for name in listed:
        n *= len(cfg.factors[name])
    if n > MAX_CELLS:
        raise UserError(f"the grid has {n:,} cells, more than {MAX_CELLS:,}; list fewer levels",
                        field=f"{cfg.path}: factors")
    fixed = {name: cfg.factors[name][0] for name in cfg.factors if name not in listed}
    rules = cfg.raw.get("exclude", [])
    design = plan(cfg)  # None: the full grid
    rows = []
    runs: dict[tuple, tuple[str, dict]] = {}
    seen: set[tuple] = set()
    single = {name: cfg.factors[name][0] for name in listed if len(cfg.factors[name]) == 1}
    included = [{**fixed, **single, **cell} for cell in cfg.raw.get("include", [])]
    product = ({**fixed, **dict(zip(listed, combo))}
               for combo in itertools.product(*(cfg.factors[name] for name in listed)))
    for extra, levels in itertools.chain(((False, lv) for lv in product), ((True, lv) for lv in included)):
        if not extra and (_excluded(levels, rules) or (design is not None and not design.keeps(levels))):
            continue
        if included:  # an included cell the product already has is not added twice
            key = tuple(levels[name] for name in listed)
            if key in seen:
                continue
            seen.add(key)
        gen_key = tuple(levels[k] for k in generation_factors())
        if gen_key not in runs:
            params = generation_params(cfg, levels)
            params["prepared_key"] = prepared_key(levels["model"], levels["quantization"], levels["engine"])
            runs[gen_key] = (generation_id(cfg, params), params)
        gid, params = runs[gen_key]
        row = {name: levels[name] for name in listed}
        row["cell_id"] = cell_id(levels, gid)
        row["generation_id"] = gid
        row["prepared_key"] = params["prepared_key"]
        rows.append(row)
    if not rows:
        raise UserError("every cell is excluded; the grid is empty", field=f"{cfg.path}: exclude")
    df = pd.DataFrame(rows, columns=["cell_id", *listed, "generation_id", "prepared_key"])
    return df, {gid: {**params, "generation_id": gid} for gid, params in runs.values()}


def _expanded(cfg: Config) -> tuple[pd.DataFrame, dict[str, dict]]:
    """The expansion of this config, computed once per loaded config (validation, the Snakefile and the
    stages all ask for it)."""
    cached = getattr(cfg, "_expansion", None)
    if cached is None:
        cached = _expand(cfg)
        object.__setattr__(cfg, "_expansion", cached)
    return cached


def expand(cfg: Config) -> pd.DataFrame:
    """The cell table: cell_id, every listed factor, generation_id (and the prepared model key)."""
    return _expanded(cfg)[0].copy()


def generations(cfg: Config) -> dict[str, dict]:
    """generation_id -> every generation setting of that run, the sizing tokenizer and prepared key."""
    return {gid: dict(g) for gid, g in _expanded(cfg)[1].items()}


def design_plan(cfg: Config):
    """The study's fractional design (:class:`reprogrid.designs.Plan`), or None for a full grid."""
    return plan(cfg)


def to_tsv(df: pd.DataFrame) -> str:
    cols = [c for c in df.columns if c != "prepared_key"]
    return df[cols].map(level_text).to_csv(sep="\t", index=False, lineterminator="\n")
