"""``load_study``: a study config with every whole-study cross-check done once, at the edge.

``reprogrid.config.load_config`` checks one file against the schema; the checks here need other
stages: the expanded grid (GPU settings per generation), the claims files (the pair's ids), the
speculative decoding prompts. Commands and the Snakefile load a study through this module; analysis
modules never load a config.
"""

from __future__ import annotations

from pathlib import Path

from reprogrid import grid
from reprogrid.catalogue import (CHECKPOINT_LEVELS, GGUF_ENGINE_LEVELS, GGUF_ENGINES, GPU_LEVELS,
                                 factor_catalogue)
from reprogrid.claims import load_claims
from reprogrid.config import Config, all_levels, load_config
from reprogrid.errors import UserError
from reprogrid.pitfalls import check_reference
from reprogrid.specdec.cells import check_specdec


def load_study(path: str | Path) -> Config:
    cfg = load_config(path)
    check_claim_pair(cfg)
    check_gpu_settings(cfg)
    check_specdec(cfg)
    if cfg.raw.get("pitfalls"):
        check_reference(cfg.raw["pitfalls"]["reference"], {n: cfg.factors[n] for n in cfg.listed},
                        f"{cfg.path}: pitfalls.reference")
    return cfg


def check_claim_pair(cfg: Config) -> None:
    claims = cfg.claims
    if not (claims.get("files") and ("low" in claims or "high" in claims)):
        return
    ids = {c.id for c in load_claims(claims["files"])}
    for key in ("low", "high"):
        if key in claims and claims[key] not in ids:
            raise UserError(f"'{claims[key]}' is not a claim id in {', '.join(claims['files'])}",
                            field=f"{cfg.path}: claims.{key}")


def check_gpu_settings(cfg: Config) -> None:
    """GPU-only settings must be coherent (device, checkpoints, engine). Whether this machine has a GPU is
    not asked here: a cluster's login node parses the config for GPU nodes (see gpu_needs)."""
    where = str(cfg.path)
    seen = set()
    for g in grid.generations(cfg).values():
        slug, q = g["model"], g["quantization"]
        key = (slug, q, g["engine"], g["attn_implementation"], g["dtype"], g["batch_size"])
        if key in seen:
            continue
        seen.add(key)
        entry = cfg.models[slug]
        device = entry.get("device", "cpu")
        if q in GPU_LEVELS and device != "cuda":
            raise UserError(f"quantization '{q}' runs on CUDA only and model '{slug}' has device {device}; set "
                            f"models.{slug}.device: cuda or exclude the pair", field=f"{where}: models.{slug}.device")
        if q in CHECKPOINT_LEVELS and g["engine"] not in GGUF_ENGINES:
            ck = (entry.get("quantized") or {}).get(q)
            if not ck or not ({"id", "path"} & set(ck)):
                raise UserError(f"'{q}' uses the official pre-quantized checkpoint of '{slug}': set its "
                                "{id, revision} (e.g. Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4) or {path}, or exclude the pair",
                                field=f"{where}: models.{slug}.quantized.{q}")
            if "id" in ck and not ck.get("revision"):
                raise UserError("a hub checkpoint needs a pinned `revision` (commit hash or tag)",
                                field=f"{where}: models.{slug}.quantized.{q}.revision")
        check_engine(g, entry, where)


def check_engine(g: dict, entry: dict, where: str) -> None:
    """One generation's engine against its model entry and generation settings: what an engine cannot run,
    or where a factor would be a silent no-op, is refused in one line before any job starts."""
    slug, q, engine = g["model"], g["quantization"], g["engine"]
    device = entry.get("device", "cpu")
    cat = factor_catalogue()
    if engine == "vllm":
        if device != "cuda":
            raise UserError(f"engine vllm runs on CUDA only and model '{slug}' has device {device}; set "
                            f"models.{slug}.device: cuda or use engine hf", field=f"{where}: factors.engine")
        if q in {"int8_dynamic", "bnb_8bit"}:
            raise UserError(f"quantization '{q}' has no vLLM path (torch dynamic int8 / 8-bit bitsandbytes); "
                            f"use engine hf for model '{slug}' or drop the level", field=f"{where}: factors.engine")
    if engine in GGUF_ENGINES:
        if entry["source"] not in {"embedded", "gguf"}:
            raise UserError(f"engine {engine} runs GGUF files and model '{slug}' has source {entry['source']}; "
                            "use a gguf or embedded source or exclude the pair", field=f"{where}: factors.engine")
        if device != "cpu":
            raise UserError(f"engine {engine} runs on CPU here (llama-cpp-python is built without CUDA) and model "
                            f"'{slug}' has device {device}; use engine vllm or hf on CUDA", field=f"{where}: factors.engine")
        if q not in GGUF_ENGINE_LEVELS:
            raise UserError(f"quantization '{q}' has no llama.cpp file type; engine {engine} takes "
                            f"{', '.join(sorted(GGUF_ENGINE_LEVELS))}", field=f"{where}: factors.quantization")
        if int(g["batch_size"]) != 1:
            raise UserError(f"engine {engine} serves one request at a time: batch_size {g['batch_size']} would be "
                            "a no-op; keep [1]", field=f"{where}: factors.batch_size")
    if engine != "hf":  # the engine picks its own kernels: these transformers settings would be no-ops
        for name in ("attn_implementation",) + (("dtype",) if engine in GGUF_ENGINES else ()):
            if g[name] != cat[name].default:
                raise UserError(f"engine {engine} chooses its own {name.replace('_', ' ')}: {name} '{g[name]}' "
                                f"would be a no-op for model '{slug}'; keep [{cat[name].default}] or use engine hf",
                                field=f"{where}: factors.{name}")


def gpu_needs(cfg: Config) -> list[str]:
    """The settings of this study that need a CUDA GPU (empty: it runs on CPU)."""
    needs = [f"models.{s}.device: cuda" for s, e in cfg.models.items()
             if e.get("device") == "cuda" and s in all_levels(cfg, "model")]
    needs += [f"quantization {q}" for q in all_levels(cfg, "quantization") if q in GPU_LEVELS]
    sd = cfg.raw.get("specdec") or {}
    for pair in sd.get("pairs", []):
        for role in ("verifier", "drafter"):
            if cfg.models.get(pair.get(role), {}).get("device") == "cuda":
                needs.append(f"specdec {role} {pair[role]}: device cuda")
    return sorted(set(needs))
