"""GPU-only levels and the vLLM engine on a machine without a GPU: everything that can be checked here.

What runs here: the prepared directory of an official pre-quantized checkpoint (GPTQ/AWQ files are only
linked and their quantization_config checked, so no GPU is needed), the config checks, the refusals in
one line before loading, the arguments handed to lm-eval's vllm model, and snakemake refusing to start
GPU jobs on this machine while still dry-running them. What cannot: loading GPTQ/AWQ/bitsandbytes weights
and running vLLM (no CUDA GPU, no vllm wheel for CPU) -- those paths were never executed here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, snakemake
from reprogrid import generate, models
from reprogrid.catalogue import prepared_key
from reprogrid.study import gpu_needs, load_study
from reprogrid.errors import UserError

GPU_MODEL = {"source": "hf", "id": "Qwen/Qwen2.5-7B-Instruct", "revision": "a09a3545", "device": "cuda",
             "family": "qwen2.5-large",
             "quantized": {"gptq_int4": {"id": "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", "revision": "b1c2d3"}}}
BASE = {
    "study": "gpu",
    "models": {"m": GPU_MODEL},
    "ruler": {"tasks": ["niah_single_1"], "n_items": 2},
    "factors": {"model": ["m"], "quantization": ["source", "gptq_int4"], "context_length": [4096]},
}


def cfg(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def with_(path: tuple, value) -> dict:
    d = copy.deepcopy(BASE)
    node = d
    for k in path[:-1]:
        node = node[k]
    if value is None:
        node.pop(path[-1])
    else:
        node[path[-1]] = value
    return d


def test_gpu_config_is_valid_and_its_needs_are_listed(tmp_path):
    c = load_study(cfg(tmp_path, BASE))
    assert gpu_needs(c) == ["models.m.device: cuda", "quantization gptq_int4"]
    # the GPTQ level has its own prepared directory (other weights); bitsandbytes reuses the source one
    assert prepared_key("m", "gptq_int4") == "m--gptq_int4"
    assert prepared_key("m", "bnb_4bit") == "m--source"


@pytest.mark.parametrize("path,value,field", [
    (("models", "m", "device"), "cpu", "models.m.device"),  # a GPU level on a CPU model
    (("models", "m", "quantized"), None, "models.m.quantized.gptq_int4"),  # which checkpoint?
    (("models", "m", "quantized"), {"gptq_int4": {"id": "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"}},
     "models.m.quantized.gptq_int4.revision"),
    (("models", "m", "quantized"), {"gptq_int8": {"id": "Qwen/x", "revision": "r"}}, "models.m.quantized.gptq_int4"),
    (("models", "m", "quantized"), {"q4_0": {"id": "Qwen/x", "revision": "r"}}, "models.m.quantized"),  # schema
])
def test_bad_gpu_settings_name_the_field(tmp_path, path, value, field):
    with pytest.raises(UserError) as e:
        load_study(cfg(tmp_path, with_(path, value)))
    assert field in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("change,field,words", [
    ({"device": "cpu"}, "factors.engine", "CUDA only"),
    ({"quantization": ["int8_dynamic"]}, "factors.engine", "no vLLM path"),
    ({"quantization": ["bnb_8bit"]}, "factors.engine", "no vLLM path"),
    ({"attn_implementation": ["sdpa", "eager"]}, "factors.attn_implementation", "no-op"),
])
def test_vllm_engine_refuses_what_it_cannot_do(tmp_path, change, field, words):
    d = copy.deepcopy(BASE)
    d["factors"]["engine"] = ["vllm"]
    for k, v in change.items():
        if k in d["models"]["m"]:
            d["models"]["m"][k] = v
        else:
            d["factors"][k] = v
    with pytest.raises(UserError, match=words) as e:
        load_study(cfg(tmp_path, d))
    assert field in str(e.value)


def test_vllm_model_args_follow_the_generation(tmp_path):
    d = copy.deepcopy(BASE)
    d["models"]["m"].update(vllm={"gpu_memory_utilization": 0.8, "tensor_parallel_size": 2})
    d["factors"].update(quantization=["source", "bnb_4bit"], dtype=["bfloat16"], batch_size=[8], engine=["vllm"])
    c = load_study(cfg(tmp_path, d))
    from reprogrid.grid import generations

    gens = {g["quantization"]: g for g in generations(c).values()}
    args = generate.vllm_model_args(Path("/p/m--source"), c.models["m"], gens["bnb_4bit"], 6000, 7)
    assert args == {"pretrained": "/p/m--source", "tokenizer": "/p/m--source", "dtype": "bfloat16",
                    "max_model_len": 6000, "seed": 7, "batch_size": 8, "trust_remote_code": False,
                    "gpu_memory_utilization": 0.8, "tensor_parallel_size": 2, "quantization": "bitsandbytes"}
    assert "quantization" not in generate.vllm_model_args(Path("/p"), c.models["m"], gens["source"], 6000, 7)
    # the engine's max_model_len covers the longest budget of its generations (fit: L + gen + chat margin)
    assert generate._max_length(gens["source"], ["niah_single_1"]) == 4096 + 128 + generate.CHAT_MARGIN
    with pytest.raises(UserError, match="vllm"):  # not installed here (and no CUDA)
        generate.load_vllm(Path("/p"), c.models["m"], gens["source"], 6000, 7)


def _gptq_like(src: Path, dst: Path, bits: int) -> Path:
    """A transformers directory whose config says it holds GPTQ weights (the files are the tiny model's)."""
    import shutil

    shutil.copytree(src, dst)
    conf = json.loads((dst / "config.json").read_text())
    conf["quantization_config"] = {"quant_method": "gptq", "bits": bits, "group_size": 128, "desc_act": False}
    (dst / "config.json").write_text(json.dumps(conf))
    return dst


def test_prepare_links_an_official_checkpoint_and_checks_its_level(tiny_model_dir, tmp_path):
    ck = _gptq_like(tiny_model_dir, tmp_path / "ck4", bits=4)
    entry = {"source": "local_dir", "path": str(tiny_model_dir), "family": "qwen2.5-large",
             "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
             "quantized": {"gptq_int4": {"path": str(ck)}}}
    info = models.prepare("tiny", entry, "gptq_int4", tmp_path, tmp_path / "out" / "tiny--gptq_int4",
                          log=lambda _: None)
    out = tmp_path / "out" / "tiny--gptq_int4"
    weights = sorted(out.glob("*.safetensors"))
    assert weights and all(f.is_symlink() and f.resolve().parent == ck.resolve() for f in weights)
    assert info["weights_sha256"] == models.weights_digest(ck)  # the checkpoint's own bytes
    assert info["level"] == "gptq_int4" and info["quantization"]["quantization_config"]["bits"] == 4
    conf = json.loads((out / "config.json").read_text())
    assert conf["rope_scaling"]["type"] == "yarn" and conf["quantization_config"]["quant_method"] == "gptq"
    assert json.loads((out / "reprogrid_model.json").read_text())["checkpoint"] == {"path": str(ck.resolve())}
    assert not list((tmp_path / "out").glob("*.partial"))
    # the level is what the checkpoint holds: an 8-bit checkpoint named for gptq_int4 is refused
    ck8 = _gptq_like(tiny_model_dir, tmp_path / "ck8", bits=8)
    with pytest.raises(UserError, match="bits=8"):
        models.prepare("tiny", entry | {"quantized": {"gptq_int4": {"path": str(ck8)}}}, "gptq_int4", tmp_path,
                       tmp_path / "out" / "bad", log=lambda _: None)
    with pytest.raises(UserError, match="quant_method=none"):  # a plain float checkpoint is not GPTQ
        models.prepare("tiny", entry | {"quantized": {"gptq_int4": {"path": str(tiny_model_dir)}}}, "gptq_int4",
                       tmp_path, tmp_path / "out" / "bad", log=lambda _: None)
    assert not (tmp_path / "out" / "bad").exists()
    # loading it is refused here, in one line, before any weights are read
    with pytest.raises(UserError, match="runs on CUDA only"):
        models.load_prepared(out, quantization="gptq_int4", device="cpu")
    with pytest.raises(UserError, match="pip install 'reprogrid\\[gpu\\]'"):
        models.check_gpu_level("gptq_int4", "cuda")  # gptqmodel is not installed here
    with pytest.raises(UserError, match="bitsandbytes"):
        models.check_gpu_level("bnb_4bit", "cuda")


def test_prepare_without_a_named_checkpoint_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="quantized.gptq_int4"):
        models.prepare("tiny", {"source": "local_dir", "path": str(tiny_model_dir)}, "gptq_int4", tmp_path,
                       tmp_path / "x", log=lambda _: None)


def test_snakemake_refuses_gpu_jobs_here_but_dry_runs_them(tiny_model_dir, tmp_path):
    d = {"study": "gpu-here", "paths": {"results": "results-gpu"},
         "models": {"m": {"source": "local_dir", "path": str(tiny_model_dir), "device": "cuda"}},
         "ruler": {"tasks": ["niah_single_1"], "n_items": 1},
         "factors": {"model": ["m"], "context_length": [512]}}
    c = cfg(tmp_path, d)
    dry = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(c), timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "generate" in dry.stdout + dry.stderr
    res = snakemake(tmp_path, "--cores", "1", "--configfile", str(c), timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs a CUDA GPU (models.m.device: cuda)" in errors[0]
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "results-gpu").exists()  # nothing started
