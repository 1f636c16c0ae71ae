"""Run every generation of one prepared model through lm-eval's RULER tasks on its engine: transformers
(``hf``), llama.cpp (``llama_cpp``: a local server the job starts and stops, reprogrid.engines) or vLLM.

One job per prepared model (one set of weights): the weights are loaded once per load setting
(dtype, attention implementation, load-time quantization) and every generation that uses them runs
in the same process. Each generation's per-sample records are written atomically to
``<out>/<generation_id>.parquet`` with a provenance JSON beside it; a finished generation is never
redone, and lm-eval's per-request sqlite cache (one file per generation) lets an interrupted
generation resume where it stopped.

No silent truncation: every record carries its prompt token count (chat template and few-shot
examples included), the ``max_length`` the model was given and whether lm-eval's left truncation
cut it. Under ``length_budget: fit`` max_length is sized so that nothing is cut.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import sys
import time
import traceback
from pathlib import Path

import pandas as pd

from reprogrid import grid, models
from reprogrid.catalogue import BNB_LEVELS, TASKS
from reprogrid.chat_formats import chat_template_args
from reprogrid.errors import UserError
from reprogrid.io import write_json, write_parquet
from reprogrid.layout import docs_file
from reprogrid.provenance import code_version, engine_version, package_versions
from reprogrid.ruler import load_docs

SYSTEM_PROMPTS = {"default": None, "concise": "Answer with the requested values only.", "empty": ""}
CHAT_MARGIN = 256  # tokens reserved for chat-template markup under length_budget: fit
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def max_gen_toks(gen: dict, task: str) -> int:
    return int(gen["max_gen_toks"]) if gen["max_gen_toks"] else TASKS[task][2]


@functools.cache
def ruler_task_manager():
    """lm-eval's TaskManager over the RULER task folder only (indexing every task costs about 14 s)."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False, include_path=str(Path(lm_eval.tasks.__file__).parent / "ruler"))


def _task_config(task: str, docs: list[dict], gen: dict, tm) -> dict:
    """lm-eval's registered config for the task, fed our cached docs and this generation's settings."""
    import datasets
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = copy.deepcopy(load_yaml(tm.task_index[task].yaml_path, resolve_func=True))
    cfg.pop("tag", None)
    frozen = datasets.Dataset.from_list(docs)
    cfg["custom_dataset"] = lambda **_: {"test": frozen}
    length = str(gen["context_length"])
    cfg["metric_list"] = [{"metric": length, "aggregation": "mean", "higher_is_better": True}]
    gk = dict(cfg.get("generation_kwargs", {}))
    gk["max_gen_toks"] = max_gen_toks(gen, task)
    if gen["decoding"] == "sample":
        gk.update(do_sample=True, temperature=float(gen["temperature"]))
    else:
        gk.update(do_sample=False, temperature=0.0)
    cfg["generation_kwargs"] = gk
    if gen.get("answer_prefix") == "dropped":  # the prompt ends at the question; no 'Answer:' to continue
        cfg.pop("gen_prefix", None)
    cfg["metadata"] = {"version": cfg.get("metadata", {}).get("version", 1.0),
                       "max_seq_lengths": [int(gen["context_length"])]}
    return cfg


def _load_docs(docs_root: Path, task: str, gen: dict, n_items: int) -> list[dict]:
    path = docs_file(docs_root, task, gen["context_length"], gen["sizing_tokenizer"], gen["data_seed"])
    docs = load_docs(path, n_items)
    if task == "ruler_cwe" and gen.get("cwe_oneshot"):
        for d in docs:  # upstream RULER puts the worked example before the question
            d["input"] = d["input_example"] + "\n" + d["input"]
    return docs


def _max_length(gen: dict, tasks: list[str]) -> int:
    """Model length budget: the context length alone (`truncate`), or room for every shot, the longest
    generation and the chat template's tokens (`fit`), so that nothing is cut."""
    L, k = int(gen["context_length"]), int(gen["num_fewshot"])
    if gen["length_budget"] == "truncate":
        return L
    return L * (k + 1) + max(max_gen_toks(gen, t) for t in tasks) + CHAT_MARGIN * (k + 1)


def vllm_model_args(prepared_dir: Path, entry: dict, gen: dict, max_model_len: int, seed: int) -> dict:
    """Arguments of lm-eval's `vllm` model for a prepared directory and a load setting."""
    args = {"pretrained": str(prepared_dir), "tokenizer": str(prepared_dir), "dtype": gen["dtype"],
            "max_model_len": int(max_model_len), "seed": int(seed), "batch_size": int(gen["batch_size"]),
            "trust_remote_code": bool(entry.get("trust_remote_code", False))}
    settings = entry.get("vllm") or {}
    args["gpu_memory_utilization"] = float(settings.get("gpu_memory_utilization", 0.9))
    args["tensor_parallel_size"] = int(settings.get("tensor_parallel_size", 1))
    if settings.get("enforce_eager"):
        args["enforce_eager"] = True
    if gen["quantization"] == "bnb_4bit":  # in-flight 4-bit bitsandbytes
        args["quantization"] = "bitsandbytes"
    return args  # GPTQ/AWQ prepared dirs carry their quantization_config: vLLM reads it


def load_vllm(prepared_dir: Path, entry: dict, gen: dict, max_model_len: int, seed: int):
    """lm-eval's vLLM model on a prepared directory (CUDA); refused in one line where it cannot run."""
    import importlib.util

    import torch

    if gen["quantization"] in BNB_LEVELS:
        models.check_gpu_level(gen["quantization"], "cuda")
    if importlib.util.find_spec("vllm") is None:
        raise UserError("engine vllm needs the vllm package: pip install 'reprogrid[gpu]' (CUDA machines)",
                        field="factors.engine")
    if not torch.cuda.is_available():
        raise UserError("engine vllm runs on CUDA only and this machine has no CUDA GPU", field="factors.engine")
    from lm_eval.models.vllm_causallms import VLLM
    from transformers import AutoTokenizer

    lm = VLLM(**vllm_model_args(prepared_dir, entry, gen, max_model_len, seed))
    return lm, AutoTokenizer.from_pretrained(prepared_dir)


@contextlib.contextmanager
def _chat_family(lm, gen: dict):
    """The chat template family of this generation on the lm-eval model, restored afterwards."""
    extra = chat_template_args(gen.get("template_family")) if gen["chat_template"] else {}
    before = getattr(lm, "chat_template_args", None)
    if extra:
        lm.chat_template_args = {**(before or {}), **extra}
    try:
        yield
    finally:
        if extra:
            lm.chat_template_args = before


def _evaluate(lm, loaded: dict, tm, gen: dict, k: int, cache_dir: Path, seed: int) -> dict:
    from lm_eval import simple_evaluate

    return simple_evaluate(
        model=lm, tasks=list(loaded["tasks"].values()), task_manager=tm, num_fewshot=k or None, log_samples=True,
        apply_chat_template=bool(gen["chat_template"]),
        system_instruction=SYSTEM_PROMPTS[gen["system_prompt"]] if gen["chat_template"] else None,
        use_cache=str(cache_dir / gen["generation_id"]), bootstrap_iters=0,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
    )


def run_generation(lm, tok, gen: dict, docs_root: Path, tasks: list[str], n_items: int, cache_dir: Path,
                   seed: int) -> tuple[pd.DataFrame, dict]:
    """Run one generation; return its per-sample records and run details."""
    tm = ruler_task_manager()
    docs = {t: _load_docs(docs_root, t, gen, n_items) for t in tasks}
    L, k = int(gen["context_length"]), int(gen["num_fewshot"])
    max_length = _max_length(gen, tasks)
    lm._max_length = max_length  # lm-eval's hf and vllm models (and the llama_cpp engine's) cut the context to this
    if hasattr(lm, "batch_size_per_gpu"):  # hf
        lm.batch_size_per_gpu = int(gen["batch_size"])
    elif hasattr(lm, "_batch_size"):  # llama_cpp (lm-eval's API models): one request at a time
        lm._batch_size = int(gen["batch_size"])
    else:  # vllm: requests per engine call
        lm.batch_size = int(gen["batch_size"])
    loaded = tm.load([_task_config(t, docs[t], gen, tm) for t in tasks])
    cache_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with _chat_family(lm, gen):
        res = _evaluate(lm, loaded, tm, gen, k, cache_dir, seed)
    seconds = time.time() - t0
    rows = []
    for task in tasks:
        for s in sorted(res["samples"][task], key=lambda s: int(s["doc_id"])):
            doc = s["doc"]
            context = s["arguments"][0][0]
            prompt_tokens = len(tok(context, add_special_tokens=False).input_ids)
            budget = max_gen_toks(gen, task)
            rows.append({
                "task": task,
                "doc_id": int(s["doc_id"]),
                "item_id": f"{task}/{int(doc['index'])}",
                "target": list(doc["outputs"]),
                "response": s["filtered_resps"][0] if s["filtered_resps"] else "",
                "lm_eval_score": float(s[str(L)]),
                "prompt_tokens": prompt_tokens,
                "sizing_tokens": int(doc["length"]),
                "max_length": max_length,
                "max_gen_toks": budget,
                "truncated": bool(prompt_tokens > max_length - budget),
                "prompt_sha256": hashlib.sha256(context.encode()).hexdigest(),
                "doc_hash": s["doc_hash"],
            })
    details = {"seconds": round(seconds, 2), "max_length": max_length, "n_samples": len(rows),
               "lm_eval_config": {k_: v for k_, v in res.get("config", {}).items() if k_ != "model_args"},
               "n_truncated": sum(r["truncated"] for r in rows)}
    return pd.DataFrame(rows), details


def _load_settings(gen: dict) -> tuple:
    return (gen["engine"], gen["dtype"], gen["attn_implementation"], gen["quantization"])


def _provenance(cfg, gen: dict, model_info: dict, entry: dict, threads: int, memory: dict | None,
                details: dict) -> dict:
    """What one generation's ``<generation_id>.json`` records beside its records."""
    return {
        "generation_id": gen["generation_id"], "generation": gen, "config_path": str(cfg.path),
        "config_sha256": cfg.sha256, "code_version": code_version(), "packages": package_versions(),
        "engine": gen["engine"], "engine_version": engine_version(gen["engine"]), "device": entry.get("device", "cpu"),
        "model": {k: model_info.get(k) for k in ("source", "sha256", "upstream", "weights_sha256",
                                                   "tokenizer_sha256", "quantization", "level", "checkpoint")},
        "seeds": {"data_seed": gen["data_seed"], "lm_eval_seeds": cfg.seed}, "threads": threads,
        "memory_estimate": memory,
        "ruler": {"tasks": list(cfg.ruler["tasks"]), "n_items": int(cfg.ruler["n_items"])}, **details,
    }


def _load_engine(stack: contextlib.ExitStack, gen: dict, gens: list[dict], entry: dict, prepared_dir: Path,
                 tasks: list[str], threads: int, seed: int, device: str):
    """The lm-eval model (and tokenizer) of one load setting; a llama.cpp server lives until ``stack`` closes."""
    engine, dtype, attn, quant = _load_settings(gen)
    longest = max(_max_length(g, tasks) for g in gens if _load_settings(g) == _load_settings(gen))
    if engine == "vllm":
        return load_vllm(prepared_dir, entry, gen, max_model_len=longest, seed=seed)
    if engine == "llama_cpp":
        from reprogrid.engines.llama_cpp import serve

        # the context window has room for a prompt that llama.cpp's tokenizer makes a few tokens longer
        return stack.enter_context(serve(prepared_dir, entry.get("llama_cpp") or {}, n_ctx=longest + 64, threads=threads,
                                         seed=seed, field=f"models.{gen['model']}.llama_cpp", log=log))
    model, tok = models.load_prepared(prepared_dir, dtype=dtype, attn_implementation=attn, quantization=quant,
                                      device=device)
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tok, device=device, batch_size=1), tok


def run_model(cfg, prepared_key: str, prepared_dir: Path, docs_root: Path, out_dir: Path,
              manifest: Path, threads: int) -> dict:
    """Run all generations of one prepared model; write per-generation outputs and the manifest."""
    import torch

    torch.set_num_threads(threads)
    gens = [g for g in grid.generations(cfg).values() if g["prepared_key"] == prepared_key]
    if not gens:
        raise UserError(f"no generation of the grid uses prepared model '{prepared_key}'")
    tasks = list(cfg.ruler["tasks"])
    n_items = int(cfg.ruler["n_items"])
    from reprogrid.engines import check_ready

    check_ready(gens, cfg.models, str(cfg.path))  # before anything is loaded or written
    model_info = models.read_provenance(prepared_dir)
    entry = cfg.models[gens[0]["model"]]
    device = entry.get("device", "cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, dict] = {}
    gens.sort(key=lambda g: (_load_settings(g), g["generation_id"]))
    loaded_key, lm, tok, held_gib, memory = None, None, None, 0.0, None
    with contextlib.ExitStack() as stack:  # a llama.cpp server started below is stopped on every way out
        for i, gen in enumerate(gens, 1):
            gid = gen["generation_id"]
            out, meta = out_dir / f"{gid}.parquet", out_dir / f"{gid}.json"
            if out.exists() and meta.exists():
                done = json.loads(meta.read_text())
                if done.get("model", {}).get("weights_sha256") == model_info.get("weights_sha256"):
                    log(f"[generate] {prepared_key} {i}/{len(gens)} {gid}: already done, skipped")
                    status[gid] = {"status": "ok", "records": out.name, "resumed": True}
                    continue
                log(f"[generate] {gid}: stored records were made with other weights; running it again")
            try:
                if device == "cuda" and not torch.cuda.is_available():
                    raise UserError(f"model '{gen['model']}' asks for device cuda and this machine has no CUDA GPU")
                if gen["engine"] == "hf":  # vLLM and llama.cpp size their own caches and say so
                    memory = models.generation_guard(gen["model"], prepared_dir, gen["dtype"], gen["quantization"],
                                                     _max_length(gen, tasks), int(gen["batch_size"]), device,
                                                     held_gib=held_gib)
                if _load_settings(gen) != loaded_key:
                    lm = tok = loaded_key = None
                    stack.close()  # a previous engine's server, if any, stops here
                    log(f"[generate] loading {prepared_key} (engine {gen['engine']}, dtype {gen['dtype']}, "
                        f"attention {gen['attn_implementation']}, quantization {gen['quantization']})")
                    lm, tok = _load_engine(stack, gen, gens, entry, prepared_dir, tasks, threads, cfg.seed, device)
                    held_gib = memory["weights_gib"] if gen["engine"] == "hf" and device == "cpu" else 0.0
                    loaded_key = _load_settings(gen)
                log(f"[generate] {prepared_key} {i}/{len(gens)} {gid}: L={gen['context_length']} "
                    f"chat={gen['chat_template']} fewshot={gen['num_fewshot']} ({len(tasks)} tasks x {n_items} items)")
                records, details = run_generation(lm, tok, gen, docs_root, tasks, n_items,
                                                  out_dir.parent / "lm_eval_cache", cfg.seed)
                records.insert(0, "generation_id", gid)
                write_parquet(records, out)
                write_json(meta, _provenance(cfg, gen, model_info, entry, threads,
                                             memory if gen["engine"] == "hf" else None, details))
                log(f"[generate] {gid}: {len(records)} samples in {details['seconds']:.0f} s, "
                    f"lm-eval mean {records['lm_eval_score'].mean():.3f}, {details['n_truncated']} truncated")
                status[gid] = {"status": "ok", "records": out.name}
            except Exception as exc:  # a failed generation is recorded; the rest of the study goes on
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
                log(f"[generate] {gid} FAILED: {reason}")
                log(traceback.format_exc(limit=3))
                status[gid] = {"status": "failed", "reason": reason}
    result = {"prepared_key": prepared_key, "generations": status}
    write_json(manifest, result)
    return result
