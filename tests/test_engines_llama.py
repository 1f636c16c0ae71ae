"""The llama_cpp engine for real: llama.cpp's quantizer on a tiny random Qwen2 GGUF, the server's answers not
depending on request order (its prompt cache reuses the previous request's prefix), and a tiny grid run end to
end through Snakemake with engine [hf, llama_cpp] on the same GGUF: same prompts, same record schema, the
tasks' generation limits applied, the engine in provenance; then a kill mid-generation leaves no server and
the run resumes to the same tables."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, snakemake

llama_cpp = pytest.importorskip("llama_cpp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _server_pids() -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"llama_cpp.server" in cmd and any(b"tiny" in c for c in cmd):
                out.add(int(d.name))
    return out


@pytest.fixture(scope="module")
def prepared_tiny(tiny_gguf, tmp_path_factory) -> Path:
    from reprogrid import models

    out = tmp_path_factory.mktemp("prep") / "tiny--gguf_source"
    info = models.prepare_gguf("tiny", {"source": "gguf", "path": str(tiny_gguf)}, "source",
                               tmp_path_factory.mktemp("res"), out, log=lambda _: None)
    assert (out / "model.gguf").resolve() == tiny_gguf.resolve() and (out / "tokenizer.json").is_file()
    assert info["weights_sha256"] == models.weights_digest(out) and info["level"] == "source"
    return out


def test_llama_cpp_quantizer_makes_the_file_types(tiny_gguf, tmp_path):
    import gguf

    from reprogrid.models import quantize_gguf

    want = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0,
            "f16": gguf.GGMLQuantizationType.F16}
    for level, qtype in want.items():
        out = tmp_path / f"{level}.gguf"
        info = quantize_gguf(tiny_gguf, out, level)
        assert info["ftype"] == level.upper()
        types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(out)).tensors}
        assert types["blk.0.ffn_up.weight"] == qtype, (level, types["blk.0.ffn_up.weight"])
        assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32  # norms stay float
    assert (tmp_path / "q4_0.gguf").stat().st_size < (tmp_path / "q8_0.gguf").stat().st_size < tiny_gguf.stat().st_size


def _complete(lm, prompt: str) -> str:
    payload = lm._create_payload(prompt, generate=True, gen_kwargs={"max_gen_toks": 12, "until": ["\n\n"],
                                                                     "do_sample": False, "temperature": 0.0})
    req = urllib.request.Request(lm.base_url, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["choices"][0]["text"]


def test_answers_do_not_depend_on_request_order(prepared_tiny):
    from reprogrid.engines.llama_cpp import serve

    haystack = " ".join(f"line {i}: the value of key-{i} is {i * 7919 % 1000}." for i in range(60))
    prompts = [f"{haystack}\nWhat is the value of key-{k}? Answer:" for k in (3, 17, 42, 58)]
    with serve(prepared_tiny, {}, n_ctx=2048, threads=2, seed=7, field="t", log=lambda _: None) as (lm, tok):
        forward = [_complete(lm, p) for p in prompts]
        backward = [_complete(lm, p) for p in reversed(prompts)][::-1]
        again = [_complete(lm, p) for p in prompts]
        pid = next(iter(_server_pids()))
    assert forward == backward == again
    assert any(forward) and max(len(tok(a, add_special_tokens=False).input_ids) for a in forward) <= 12 + 2
    deadline = time.time() + 15
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), "the server outlived its context"


def _study(tiny_gguf: Path, wd: Path) -> Path:
    cfg = {"study": "engines-tiny", "seed": 7, "paths": {"results": "results-engines"},
           "models": {"tiny": {"source": "gguf", "path": str(tiny_gguf)}},
           "ruler": {"tasks": ["niah_single_1"], "n_items": 2},
           "factors": {"model": ["tiny"], "context_length": [512], "chat_template": [False, True],
                       "engine": ["hf", "llama_cpp"]},
           "attribution": {"bootstrap": 10}, "resources": {"threads": 2}}
    path = wd / "engines-tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def engines_run(tiny_gguf, tmp_path_factory):
    wd = tmp_path_factory.mktemp("engines")
    (wd / "configs").symlink_to(REPO / "configs")
    config = _study(tiny_gguf, wd)
    res = snakemake(wd, "--cores", "2", "--configfile", str(config), timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return wd, wd / "results-engines", config


@pytest.mark.workflow
def test_llama_cpp_records_match_the_hf_records(engines_run):
    wd, R, _ = engines_run
    gens = {}
    for meta in sorted((R / "generations").glob("*/*.json")):
        info = json.loads(meta.read_text())
        gens[(info["engine"], info["generation"]["chat_template"])] = (pd.read_parquet(meta.with_suffix(".parquet")), info)
    assert sorted(gens) == [("hf", False), ("hf", True), ("llama_cpp", False), ("llama_cpp", True)]
    for chat in (False, True):
        hf, hf_info = gens[("hf", chat)]
        ll, ll_info = gens[("llama_cpp", chat)]
        assert list(ll.columns) == list(hf.columns) and dict(ll.dtypes) == dict(hf.dtypes)
        for col in ("item_id", "prompt_sha256", "prompt_tokens", "max_length", "max_gen_toks", "truncated", "target"):
            assert ll[col].tolist() == hf[col].tolist(), col  # same docs, same prompt text, same budget
        assert ll_info["engine_version"] == llama_cpp.__version__ and hf_info["engine"] == "hf"
        assert ll_info["model"]["weights_sha256"] != hf_info["model"]["weights_sha256"]  # GGUF vs safetensors
    # the task's generation limit reaches the server (not its default of 16 tokens): a random model talks on
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(R / "models" / "tiny--gguf_source")
    lengths = [len(tok(r, add_special_tokens=False).input_ids) for r in gens[("llama_cpp", False)][0]["response"]]
    assert max(lengths) > 16 and max(lengths) <= 128 + 2, lengths
    cells = pd.read_parquet(R / "tables" / "cells.parquet")
    assert set(cells["engine"].astype(str)) == {"hf", "llama_cpp"}
    assert not _server_pids()


@pytest.mark.workflow
def test_kill_during_llama_cpp_generation_leaves_no_server_and_resumes(engines_run):
    wd, R, config = engines_run
    reference = (R / "tables" / "samples.parquet").read_bytes()
    for d in ("generations", "tables", "attribution", "report"):
        shutil.rmtree(R / d, ignore_errors=True)
    shutil.rmtree(R / "logs" / "generate", ignore_errors=True)
    bindir = str(Path(sys.executable).parent)
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(wd),
         "--workflow-profile", str(REPO / "profiles/default"), "--cores", "1", "--configfile", str(config),
         f"{R.name}/generations/tiny--gguf_source.manifest.json"],
        cwd=wd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]})
    log = R / "logs" / "generate" / "tiny--gguf_source.log"
    deadline, pids = time.time() + 600, set()
    while time.time() < deadline and proc.poll() is None:
        text = log.read_text() if log.exists() else ""
        if "ready on 127.0.0.1" in text:  # the job is running with its server up
            pids = _server_pids()
            break
        time.sleep(0.02)
    assert pids, "the llama.cpp server never became ready"
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the job; the server is in its own process group
    proc.wait()
    deadline = time.time() + 20
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), "the llama.cpp server outlived the killed job"
    res = snakemake(wd, "--unlock", "--configfile", str(config), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    res = snakemake(wd, "--cores", "2", "--configfile", str(config), timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (R / "tables" / "samples.parquet").read_bytes() == reference
    assert not _server_pids()
