# Shared set-up: the study (validated once, with its whole-study checks), its layout and its jobs come
# from reprogrid.workflow; the rules only name them.
import sys
from pathlib import Path

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from reprogrid.errors import UserError
from reprogrid.workflow import StudyWorkflow, cuda_available, job_environment

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
    W = StudyWorkflow(CONFIG_PATH)
except UserError as _exc:
    sys.stderr.write(f"error: {_exc}\n")
    sys.exit(2)

L = W.layout
THREADS = W.threads


onstart:
    # Jobs that run here (not on a cluster's nodes) and need a GPU: refuse before any job starts.
    # Dry runs and cluster submissions are not refused: the GPU is where the jobs go.
    if workflow.local_exec:
        _needs = W.gpu_needs()
        if _needs and not cuda_available():
            sys.stderr.write(
                f"error: {CONFIG_PATH}: this study needs a CUDA GPU ({'; '.join(_needs[:3])}"
                f"{'; ...' if len(_needs) > 3 else ''}) and this machine has none: run it on a GPU machine "
                "or submit it with --profile profiles/slurm\n")
            sys.exit(2)
        _problem = W.engine_problem()
        if _problem:
            sys.stderr.write(f"error: {_problem}\n")
            sys.exit(2)


wildcard_constraints:
    pkey=r"[a-z0-9][a-z0-9._-]*--[a-z0-9_]+",
    tok=r"[a-z0-9][a-z0-9._-]*",
    task=r"[a-z0-9_]+",
    length=r"\d+",
    seed=r"\d+",


CAPTIONS = "../src/reprogrid/templates"


def report_item(path, caption, category, name, kind):
    """An output registered for `snakemake --report` with its caption file."""
    return report(path, caption=f"{CAPTIONS}/{caption}", category=category, labels={"name": name, "type": kind})
