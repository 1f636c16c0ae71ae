"""What every output records about how it was made: code version, package versions, checksums.

One home for these facts, so that a generation's provenance, the tables' provenance and the report's
provenance section say the same thing in the same words.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from reprogrid.io import sha256_file

PACKAGES = ("reprogrid", "torch", "transformers", "lm_eval", "datasets", "gguf", "pandas", "pyarrow",
            "numpy", "snakemake", "statsmodels", "scipy", "peft", "pyDOE3", "llama_cpp_python", "vllm",
            "bitsandbytes", "gptqmodel", "autoawq")


# engine (the `engine` factor's levels) -> the distribution whose version a generation records
ENGINE_PACKAGES = {"hf": "transformers", "llama_cpp": "llama_cpp_python", "vllm": "vllm"}


def engine_version(engine: str) -> str | None:
    """The installed version of the package behind an engine (None: not installed)."""
    return package_versions().get(ENGINE_PACKAGES[engine])


@functools.cache
def package_versions() -> dict:
    """Installed versions of the packages that can change a result (None: not installed)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


@functools.cache
def code_version() -> str:
    """The git commit of the checkout this package runs from, with ``+dirty`` for uncommitted changes
    to tracked files; ``unknown`` outside a checkout."""
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_checksums(paths, root: str | os.PathLike | None = None) -> dict[str, str]:
    """sha256 of each existing file, keyed by its path (relative to ``root`` when given)."""
    out = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            continue
        key = str(p)
        if root is not None:
            try:
                key = str(p.relative_to(root))
            except ValueError:
                pass
        out[key] = sha256_file(p)
    return out


def stamp(cfg=None, **extra) -> dict:
    """The common provenance block: config path and hashes, code version, package versions."""
    out = {"code_version": code_version(), "packages": package_versions()}
    if cfg is not None:
        out.update(config_path=str(cfg.path), config_sha256=cfg.sha256, config_content_sha256=cfg.content_hash)
    out.update(extra)
    return out
