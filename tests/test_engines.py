"""The `engine` generation factor: its place in the grid and generation ids, provenance, and the one-line
refusals of settings an engine cannot run (llama_cpp on a non-GGUF source, vllm on CPU, a port in use),
before any generation starts. No model is loaded here (the llama.cpp runs are in test_engines_llama.py)."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, run_main
from reprogrid import grid
from reprogrid.catalogue import gguf_weights_level, prepared_key
from reprogrid.engines import check_ready
from reprogrid.errors import UserError
from reprogrid.provenance import engine_version, package_versions
from reprogrid.study import load_study

BASE = {
    "study": "engines",
    "models": {"m": {"source": "gguf", "path": "PLACEHOLDER"}},
    "ruler": {"tasks": ["niah_single_1"], "n_items": 2},
    "factors": {"model": ["m"], "quantization": ["source", "q4_0"], "context_length": [1024],
                "engine": ["hf", "llama_cpp"]},
}


def write(tmp_path: Path, data: dict) -> Path:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    data = copy.deepcopy(data)
    if data["models"]["m"].get("path") == "PLACEHOLDER":
        data["models"]["m"]["path"] = str(gguf)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_engine_is_a_generation_factor_with_its_own_prepared_gguf(tmp_path):
    cfg = load_study(write(tmp_path, BASE))
    gens = list(grid.generations(cfg).values())
    assert len(gens) == 4 and len({g["generation_id"] for g in gens}) == 4
    keys = sorted({g["prepared_key"] for g in gens})
    assert keys == ["m--gguf_q4_0", "m--gguf_source", "m--q4_0", "m--source"]
    assert gguf_weights_level("gguf_q4_0") == "q4_0" and gguf_weights_level("q4_0") is None
    assert prepared_key("m", "int8_dynamic", "hf") == "m--source"  # runtime levels still share the source
    # the default engine leaves generation ids as they were before the factor existed
    no_engine = copy.deepcopy(BASE)
    del no_engine["factors"]["engine"]
    ids_before = {g["quantization"]: g["generation_id"] for g in grid.generations(load_study(write(tmp_path, no_engine))).values()}
    ids_hf = {g["quantization"]: g["generation_id"] for g in gens if g["engine"] == "hf"}
    assert ids_hf == ids_before


@pytest.mark.parametrize("change,field,words", [
    ({"models": {"m": {"source": "local_dir", "path": "."}}}, "factors.engine", "runs GGUF files"),
    ({"factors": {"quantization": ["int8_dynamic"]}}, "factors.quantization", "no llama.cpp file type"),
    ({"factors": {"dtype": ["bfloat16"]}}, "factors.dtype", "no-op"),
    ({"factors": {"attn_implementation": ["eager"]}}, "factors.attn_implementation", "no-op"),
    ({"factors": {"batch_size": [4]}}, "factors.batch_size", "one request at a time"),
    ({"factors": {"engine": ["vllm"]}}, "factors.engine", "CUDA only"),  # vllm on a CPU model
])
def test_bad_engine_settings_get_one_line(tmp_path, change, field, words):
    d = copy.deepcopy(BASE)
    for section, values in change.items():
        for k, v in values.items():
            d[section][k] = v
    if "local_dir" in str(change):
        (tmp_path / "cfg.json").write_text("{}")
        d["models"]["m"]["path"] = str(tmp_path)
        (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match=words) as e:
        load_study(write(tmp_path, d))
    assert field in str(e.value) and "\n" not in str(e.value)
    # and on the command line: one line, exit code 2, no traceback
    r = run_main("grid", "--config", str(tmp_path / "c.yaml"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ")
    assert field in r.stderr and "Traceback" not in r.stderr


def test_old_backend_key_is_refused(tmp_path):
    d = copy.deepcopy(BASE)
    d["models"]["m"]["backend"] = "vllm"
    r = run_main("grid", "--config", str(write(tmp_path, d)))
    assert r.returncode == 2 and "backend" in r.stderr and r.stderr.strip().count("\n") == 0


def test_a_port_in_use_is_refused_before_any_generation(tmp_path):
    pytest.importorskip("llama_cpp")  # without the package, the missing package is what is refused first
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        d = copy.deepcopy(BASE)
        d["models"]["m"]["llama_cpp"] = {"port": port}
        cfg = load_study(write(tmp_path, d))
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is in use") as e:
            check_ready(grid.generations(cfg).values(), cfg.models, str(cfg.path))
        assert "models.m.llama_cpp.port" in str(e.value)
        out = tmp_path / "gen"
        r = run_cli("generate", "--config", str(cfg.path), "--prepared-key", "m--gguf_source", "--model-dir",
                    str(tmp_path / "absent"), "--docs", str(tmp_path / "docs"), "--out", str(out),
                    "--manifest", str(tmp_path / "m.manifest.json"))
    assert r.returncode == 2 and f"port {port}" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not out.exists() and not (tmp_path / "m.manifest.json").exists()  # no partial outputs
    # a free port (0) is chosen by the job and is never refused
    d["models"]["m"]["llama_cpp"] = {"port": 0}
    cfg = load_study(write(tmp_path, d))
    check_ready(grid.generations(cfg).values(), cfg.models, str(cfg.path))


def test_engine_version_is_the_engine_package_version():
    assert engine_version("hf") == package_versions()["transformers"] is not None
    assert engine_version("llama_cpp") == package_versions()["llama_cpp_python"]
