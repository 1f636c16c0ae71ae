"""The prepared-model cache: one directory per (model variant, quantization) with its provenance;
official pre-quantized checkpoints linked in; loading a prepared directory for generation."""

from __future__ import annotations

import json
import os
from pathlib import Path

from reprogrid.catalogue import BNB_LEVELS, CHECKPOINT_LEVELS, GGUF_LEVELS, GPU_LEVELS, RUNTIME_LEVELS, prepared_key
from reprogrid.errors import UserError
from reprogrid.io import sha256_file, write_json
from reprogrid.models.memory import memory_guard
from reprogrid.models.quantize import check_gpu_level, fidelity, quantize_gguf, quantize_weights
from reprogrid.models.sources import apply_rope_scaling, gguf_source, load_source, source_config, source_dir


def weights_digest(directory: Path) -> str:
    """sha256 over the safetensors (or GGUF) files of a prepared directory (sorted by name)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted([*directory.glob("*.safetensors"), *directory.glob("*.gguf")]):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()

def prepare(slug: str, entry: dict, quantization: str, resources: Path, out_dir: Path, log=print) -> dict:
    """Make the prepared directory for (model, quantization); return its provenance."""
    import copy

    import torch

    torch.manual_seed(0)
    if quantization in CHECKPOINT_LEVELS:
        return prepare_checkpoint(slug, entry, quantization, out_dir, log=log)
    if quantization in BNB_LEVELS:  # pragma: no cover - prepared_key maps them to "source"
        raise UserError(f"'{quantization}' is applied at load time; prepare '{slug}' with quantization source")
    if quantization == "source" and entry["source"] in {"hf", "local_dir"}:
        src, where = source_dir(slug, entry)
        if (src / "config.json").is_file() and list(src.glob("*.safetensors")):
            # the weights as the source has them: linked, never rewritten (a 14B in float32 would be 56 GB)
            return _link_prepared(slug, entry, "source", src, where, json.loads((src / "config.json").read_text()),
                                  {"method": "weights as the source provides them"}, out_dir, log=log)
    src_config = source_config(entry)
    if src_config:
        memory_guard(slug, src_config, copies=2.0 if quantization in GGUF_LEVELS else 1.2)
    model, tok, info = load_source(slug, entry, resources, log=log)
    level = "source" if quantization in RUNTIME_LEVELS else quantization
    if level != "source":
        reference = copy.deepcopy(model)
        info["quantization"] = quantize_weights(model, level, log=log)
        info["quantization"].update(fidelity(reference, model, tok))
        del reference
    else:
        info["quantization"] = {"method": "weights as the source provides them"}
    info.update(model=slug, level=level, prepared_key=prepared_key(slug, quantization))
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    log(f"[models] saving {out_dir}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return _finish_prepared(tmp, out_dir, info)


def prepare_gguf(slug: str, entry: dict, quantization: str, resources: Path, out_dir: Path, threads: int = 1,
                 log=print) -> dict:
    """The prepared GGUF of (model, level) for an engine that runs GGUF files (llama_cpp): ``model.gguf`` (the
    source file linked as is for ``source``, else made by llama.cpp's quantizer from it), the tokenizer as a
    transformers directory (lm-eval sizes and templates prompts with it) and the provenance."""
    import shutil

    from transformers import AutoTokenizer

    gguf, info = gguf_source(slug, entry, resources, log=log)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if quantization == "source":
        os.symlink(gguf.resolve(), tmp / "model.gguf")
        info["quantization"] = {"method": "the GGUF file as the source provides it"}
    else:
        log(f"[models] {slug}: llama.cpp quantizer -> {quantization}")
        info["quantization"] = quantize_gguf(gguf, tmp / "model.gguf", quantization, threads=threads)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp)
    info.update(model=slug, level=quantization, engine_format="gguf",
                prepared_key=prepared_key(slug, quantization, engine="llama_cpp"))
    return _finish_prepared(tmp, out_dir, info)


def _finish_prepared(tmp: Path, out_dir: Path, info: dict) -> dict:
    """Checksums and provenance into the temporary directory, then swap it in (never half-written)."""
    import shutil

    info["weights_sha256"] = weights_digest(tmp)
    info["tokenizer_sha256"] = sha256_file(tmp / "tokenizer.json") if (tmp / "tokenizer.json").exists() else None
    write_json(tmp / "reprogrid_model.json", info)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return info


def _checkpoint_dir(slug: str, entry: dict, level: str) -> tuple[Path, dict]:
    """The local directory of the official pre-quantized checkpoint named for (model, level)."""
    q = (entry.get("quantized") or {}).get(level)
    field = f"models.{slug}.quantized.{level}"
    if not q:
        raise UserError(f"no checkpoint named for '{level}': set {{id, revision}} of the official one "
                        "(e.g. Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4) or {path}", field=field)
    if "path" in q and not (Path(q["path"]) / "config.json").is_file():
        raise UserError(f"'{q['path']}' is not a transformers model directory (no config.json)", field=f"{field}.path")
    return source_dir(slug, {"source": "local_dir" if "path" in q else "hf", **q})

def _link_prepared(slug: str, entry: dict, level: str, src: Path, where: dict, config: dict, quantization: dict,
                   out_dir: Path, log=print) -> dict:
    """A prepared directory whose weight and tokenizer files are symlinks to ``src`` (no copy, no load: no
    GPU and no extra disk), with its own config.json (YaRN override applied) and provenance."""
    import shutil

    if entry.get("rope_scaling"):
        from types import SimpleNamespace

        patched = SimpleNamespace()
        apply_rope_scaling(patched, entry["rope_scaling"], entry.get("family", ""), slug)  # refuses small models
        config["rope_scaling"] = patched.rope_scaling
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name not in {"config.json", "reprogrid_model.json"}:
            os.symlink(f.resolve(), tmp / f.name)
    write_json(tmp / "config.json", config)
    info = {"source": entry["source"], "checkpoint": where, "model": slug, "level": level,
            "prepared_key": prepared_key(slug, level), "rope_scaling": entry.get("rope_scaling"),
            "quantization": quantization, "files": "linked"}
    _finish_prepared(tmp, out_dir, info)
    log(f"[models] {slug} {level}: linked {src} (weights sha256 {info['weights_sha256'][:12]})")
    return info


def prepare_checkpoint(slug: str, entry: dict, level: str, out_dir: Path, log=print) -> dict:
    """Prepared directory of an official pre-quantized checkpoint: its files linked, its
    quantization_config checked against the level."""
    src, where = _checkpoint_dir(slug, entry, level)
    config = json.loads((src / "config.json").read_text())
    want_method, want_bits = CHECKPOINT_LEVELS[level]
    qc = config.get("quantization_config") or {}
    method, bits = str(qc.get("quant_method", "")).lower(), qc.get("bits", qc.get("w_bit"))
    if method != want_method or (bits is not None and int(bits) != want_bits):
        raise UserError(f"the checkpoint at {src} is quant_method={method or 'none'} bits={bits}, not the "
                        f"{want_method} {want_bits}-bit weights '{level}' means", field=f"models.{slug}.quantized.{level}")
    return _link_prepared(slug, entry, level, src, where, config,
                          {"method": f"official pre-quantized checkpoint ({method}, {bits}-bit)",
                           "quantization_config": qc}, out_dir, log=log)

def load_prepared(directory: Path, dtype: str = "float32", attn_implementation: str | None = None,
                  quantization: str = "source", device: str = "cpu"):
    """Load a prepared directory for generation, applying load-time levels (dtype, int8_dynamic, GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    check_gpu_level(quantization, device)
    kwargs: dict = {"dtype": getattr(torch, dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization in {"bnb_4bit", "bnb_8bit"}:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=quantization == "bnb_4bit",
                                                           load_in_8bit=quantization == "bnb_8bit")
    if quantization in GPU_LEVELS:
        kwargs["device_map"] = device  # quantized weights are placed by their library at load
    model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    tok = AutoTokenizer.from_pretrained(directory)
    if quantization == "int8_dynamic":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    model.eval()
    if device != "cpu" and quantization not in GPU_LEVELS:  # quantized weights are placed at load
        model.to(device)
    return model, tok


def read_provenance(directory: Path) -> dict:
    return json.loads(Path(directory, "reprogrid_model.json").read_text())
