"""Memory estimates and guards: refuse a model or a generation the machine cannot hold, before loading."""

from __future__ import annotations

import json
from pathlib import Path

from reprogrid.catalogue import CHECKPOINT_LEVELS
from reprogrid.errors import UserError


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
