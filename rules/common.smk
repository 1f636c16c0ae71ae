# Shared set-up: load and validate the study config once, expand the grid, map wildcards to paths.
import os
import shutil
import sys
from pathlib import Path

from reprogrid.errors import UserError

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from reprogrid.cli import job_environment

# Jobs run `python -m reprogrid`. In the venv (the default) that is this interpreter (its bin directory
# goes first on PATH, so a venv that is not activated works); with `--sdm conda` it is the python of the
# rule's environment (envs/*.yaml pins the dependencies only) with this checkout's src/ on PYTHONPATH.
job_environment(conda=DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method,
                src=Path(workflow.basedir, "src"))
# Conda environments per stage group (paths relative to the rules/ files that use them).
ENV_MODEL = "../envs/model.yaml"  # torch, transformers, lm-eval: models, tokenizers, docs, generation, specdec runs
ENV_ANALYSIS = "../envs/analysis.yaml"  # pandas, scipy, matplotlib: grid, scoring, attribution, claims, report

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



def _cuda_available():
    try:
        import torch
    except ImportError:
        return shutil.which("nvidia-smi") is not None
    return torch.cuda.is_available()


onstart:
    # Jobs that run here (not on a cluster's nodes) and need a GPU: refuse before any job starts.
    # Dry runs and cluster submissions are not refused: the GPU is where the jobs go.
    if workflow.local_exec:
        from reprogrid.config import gpu_needs

        _needs = gpu_needs(CFG)
        if _needs and not _cuda_available():
            sys.stderr.write(
                f"error: {CONFIG_PATH}: this study needs a CUDA GPU ({'; '.join(_needs[:3])}"
                f"{'; ...' if len(_needs) > 3 else ''}) and this machine has none: run it on a GPU machine "
                "or submit it with --profile profiles/slurm\n")
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


# --- speculative decoding study (rules/specdec.smk) ---
import re

from reprogrid.specdec import study_cells as _specdec_cells

SPECDEC_CELLS = _specdec_cells(CFG) if CFG.raw.get("specdec") else {}  # safe to include unconditionally
SD = f"{R}/specdec"


def specdec_models(wc):
    c = SPECDEC_CELLS[wc.sdcell]
    return {"verifier": f"{R}/models/{c['verifier_key']}", "drafter": f"{R}/models/{c['drafter_key']}"}


def specdec_gpu(wc):
    c = SPECDEC_CELLS[wc.sdcell]
    return int(any(CFG.models[c[role]].get("device") == "cuda" for role in ("verifier", "drafter")))
