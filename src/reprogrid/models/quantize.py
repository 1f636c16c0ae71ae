"""Weight quantization of a loaded model (gguf-py reference quantizers), its fidelity to the source,
and the check that a GPU-only level can run here."""

from __future__ import annotations

import importlib.util

from reprogrid.catalogue import BNB_LEVELS, CHECKPOINT_LEVELS, GGUF_LEVELS, GPU_LEVELS
from reprogrid.errors import UserError

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


def quantize_gguf(src, dst, level: str, threads: int = 1) -> dict:
    """A GGUF file of ``level`` (q8_0, q4_0, f16, ...) made from ``src`` by llama.cpp's own quantizer
    (``llama_model_quantize``; a quantized source is dequantized first, ``allow_requantize``): the file type a
    GGUF user runs, with llama.cpp's choice of which tensors keep a higher precision."""
    import ctypes
    import time

    from reprogrid.engines import require_engine

    llama_cpp = require_engine("llama_cpp")
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{GGUF_LEVELS[level]}", None)
    if ftype is None:
        raise UserError(f"this llama.cpp has no file type {GGUF_LEVELS[level]}", field="factors.quantization")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = int(threads)
    params.allow_requantize = True
    t0 = time.time()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {GGUF_LEVELS[level]}) returned {rc}")
    return {"method": "llama.cpp llama_model_quantize (allow_requantize)", "ftype": GGUF_LEVELS[level],
            "seconds": round(time.time() - t0, 1)}
