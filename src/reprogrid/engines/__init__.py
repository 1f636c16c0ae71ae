"""Inference engines other than transformers, each behind lm-eval: ``llama_cpp`` (llama-cpp-python's
OpenAI-compatible server, started and stopped by the generate job; lm-eval's local-completions model) and
the server lifecycle it needs. ``vllm`` is lm-eval's own vllm model (reprogrid.generate)."""

from __future__ import annotations

import importlib

from reprogrid.errors import UserError
from reprogrid.provenance import ENGINE_PACKAGES

INSTALL = {"llama_cpp": "pip install 'reprogrid[engines]' (or `make setup-engines`: builds llama-cpp-python "
                        "once, about 9 CPU-minutes, and reuses the wheel)",
           "vllm": "pip install 'reprogrid[gpu]' (CUDA machines)"}
MODULES = {"llama_cpp": "llama_cpp", "vllm": "vllm", "hf": "transformers"}


def require_engine(engine: str, field: str = "factors.engine"):
    """The engine's Python module, or one line saying how to install it."""
    try:
        return importlib.import_module(MODULES[engine])
    except ImportError:
        raise UserError(f"engine {engine} needs the {ENGINE_PACKAGES[engine]} package: {INSTALL[engine]}",
                        field=field) from None


def check_ready(gens, model_entries: dict, where: str) -> None:
    """What would stop an engine on this machine, refused in one line before any generation starts: its package
    missing, a configured server port in use (GPU needs are refused separately, see reprogrid.study)."""
    from reprogrid.engines.server import choose_port

    gens = list(gens)
    if any(g["engine"] == "llama_cpp" for g in gens):
        require_engine("llama_cpp", field=f"{where}: factors.engine")
        for slug in sorted({g["model"] for g in gens if g["engine"] == "llama_cpp"}):
            port = int((model_entries[slug].get("llama_cpp") or {}).get("port", 0))
            if port:
                choose_port(port, field=f"{where}: models.{slug}.llama_cpp.port")
