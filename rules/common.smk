# Shared set-up: load and validate the study config once, expand the grid, map wildcards to paths.
import os
import shutil
import sys
from pathlib import Path

from reprogrid.errors import UserError

from reprogrid.cli import ensure_on_path

ensure_on_path()  # the jobs call `reprogrid`: a venv that is not activated still works

CONFIG_PATH = workflow.overwrite_configfiles[-1] if workflow.overwrite_configfiles else "configs/config.yaml"

try:
    from reprogrid.config import load_config
    from reprogrid import grid as _grid
    from reprogrid.models import EMBEDDED

    CFG = load_config(CONFIG_PATH)
    CELLS = _grid.expand(CFG)
    GENS = _grid.generations(CFG)
except UserError as _exc:
    sys.stderr.write(f"error: {_exc}\n")
    sys.exit(2)

R = str(CFG.results)
THREADS = CFG.threads
PREPARED = sorted({g["prepared_key"] for g in GENS.values()})
TOKENIZERS = sorted({g["sizing_tokenizer"] for g in GENS.values()})
DOCS = sorted({(t, g["context_length"], g["sizing_tokenizer"], g["data_seed"])
               for g in GENS.values() for t in CFG.ruler["tasks"]})


wildcard_constraints:
    pkey=r"[a-z0-9][a-z0-9._-]*--[a-z0-9_]+",
    tok=r"[a-z0-9][a-z0-9._-]*",
    task=r"[a-z0-9_]+",
    length=r"\d+",
    seed=r"\d+",


def prepared_model_entry(pkey):
    return CFG.models[pkey.split("--")[0]]


def embedded_gguf(slug):
    """The joined GGUF a model or tokenizer slug needs, if it comes from the embedded mirror."""
    entry = CFG.models.get(slug) or (CFG.models.get(CFG.tokenizers.get(slug, {}).get("model", "")) or {})
    if entry.get("source") == "embedded":
        return [f"{R}/cache/gguf/{EMBEDDED[entry['embedded']].upstream_file}"]
    return []


def docs_file(task, length, tok, seed):
    return f"{R}/ruler/{task}/L{length}/{tok}/seed{seed}.parquet"


def final_outputs():
    out = [f"{R}/grid/cells.tsv", f"{R}/tables/samples.parquet", f"{R}/tables/cells.parquet",
           f"{R}/attribution/variance_shares.csv", f"{R}/report/summary.md", f"{R}/report/index.html"]
    if CFG.raw.get("claims", {}).get("files"):
        out += [f"{R}/claims/findings.txt", f"{R}/claims/verdicts.json"]
    if CFG.raw.get("specdec"):
        out += [f"{R}/specdec/specdec.parquet", f"{R}/specdec/disparity.json",
                f"{R}/specdec/attribution_speedup.csv", f"{R}/specdec/attribution_acceptance.csv"]
    return out


def generate_inputs(wc):
    gens = [g for g in GENS.values() if g["prepared_key"] == wc.pkey]
    docs = sorted({docs_file(t, g["context_length"], g["sizing_tokenizer"], g["data_seed"])
                   for g in gens for t in CFG.ruler["tasks"]})
    return {"model": f"{R}/models/{wc.pkey}", "docs": docs}


def report_optional_inputs(wc):
    out = {}
    if CFG.raw.get("claims"):
        out["verdicts"] = f"{R}/claims/verdicts.json"
        out["findings"] = f"{R}/claims/findings.txt"
        out["claim_cells"] = f"{R}/claims/claim_cells.csv"
    if CFG.raw.get("specdec"):
        out["specdec"] = f"{R}/specdec/specdec.parquet"
        out["disparity"] = f"{R}/specdec/disparity.json"
    return out


def report_item(path, caption, category, name, kind):
    return report(path, caption=f"{CAPTIONS}/{caption}", category=category, labels={"name": name, "type": kind})
