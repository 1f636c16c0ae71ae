"""Shared fixtures. Everything a test needs is built here from the package index's installed files,
never taken from an earlier run's results/ or caches."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Fixtures that bring a real model file or build a model: a test that uses one is in the `model` tier.
MODEL_FIXTURES = {"embedded_gguf", "qwen_tokenizer_dir", "tiny_model_dir", "tiny_pair", "tiny_gguf", "chromium"}


def pytest_collection_modifyitems(config, items):
    """Tiers: `model` (a real or tiny model, lm-eval, torch generation), `browser` (Chromium), `slurm`,
    `workflow` (snakemake end to end). `make test-fast` deselects all four."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "chromium" in fixtures:
            item.add_marker(pytest.mark.browser)
        if fixtures & MODEL_FIXTURES - {"chromium"}:
            item.add_marker(pytest.mark.model)


@pytest.fixture(scope="session")
def embedded_gguf(tmp_path_factory) -> Path:
    """The real Qwen2.5-Coder-0.5B-Instruct GGUF joined from its wheels and sha256-verified."""
    from reprogrid.models import EMBEDDED, join_embedded

    spec = EMBEDDED["qwen2.5-coder-0.5b-instruct-q4_k_m"]
    return join_embedded(spec, tmp_path_factory.mktemp("gguf") / spec.upstream_file, log=lambda m: None)


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(embedded_gguf, tmp_path_factory) -> Path:
    """The real Qwen2.5 tokenizer (with its chat template), saved as a transformers directory."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tok") / "qwen"
    tok = AutoTokenizer.from_pretrained(str(embedded_gguf.parent), gguf_file=embedded_gguf.name)
    tok.save_pretrained(out)
    return out


def byte_tokenizer():
    """A byte-level BPE tokenizer without merges (256 bytes + Qwen's three specials = 259 ids): tiny models built
    on it share Qwen2.5's special tokens without its 151k-row vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])


def make_tiny_qwen2(out: Path, tokenizer_dir: Path, seed: int = 0, layers: int = 2) -> Path:
    """A randomly initialised Qwen2 with the real tokenizer: fast enough for lm-eval in a unit test."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, bos_token_id=None)
    model = Qwen2ForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(qwen_tokenizer_dir, tmp_path_factory) -> Path:
    return make_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "tiny-qwen2", qwen_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, embedded_gguf, tmp_path_factory) -> Path:
    """The tiny random Qwen2 as a float32 GGUF (same weights as tiny_model_dir, the real Qwen2.5 tokenizer)."""
    from tiny_gguf import make_tiny_gguf

    return make_tiny_gguf(tiny_model_dir, embedded_gguf, tmp_path_factory.mktemp("tinygguf") / "tiny-qwen2.gguf")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the `reprogrid` command in a subprocess (as a user would)."""
    return subprocess.run([sys.executable, "-m", "reprogrid", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def run_main(*args: str) -> subprocess.CompletedProcess:
    """Run the `reprogrid` command in this process (``reprogrid.cli.main``, what ``python -m reprogrid``
    calls), with the same result object as ``run_cli``. For the many bad-input cases: a subprocess costs a
    second of interpreter and import start-up each. An exception that the command would print as a traceback
    propagates and fails the test; the real entry point keeps its own subprocess tests (``run_cli``)."""
    import contextlib
    import io

    from reprogrid.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as exc:  # argparse: usage errors and --help
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(["reprogrid", *args], rc, out.getvalue(), err.getvalue())


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A fresh workflow directory: the repo's configs linked in, results written under it."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    return tmp_path


def snakemake(workdir: Path, *args: str, timeout: int = 3000, env: dict | None = None):
    bindir = str(Path(sys.executable).parent)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
         "--workflow-profile", str(REPO / "profiles" / "default"), *args],
        cwd=workdir, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"], **(env or {})})


__all__ = ["REPO", "run_cli", "run_main", "write_config", "snakemake", "make_tiny_qwen2", "byte_tokenizer", "shutil"]
