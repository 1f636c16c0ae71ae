"""Both engines on the same RULER docs, side by side in one run: transformers (fp32, the `hf` engine) and
llama.cpp (the GGUF run natively by llama-cpp-python's server, the `llama_cpp` engine).

Usage: python benchmarks/bench_engines.py --results DIR [--hf-key M--source] [--gguf-key M--gguf_source]
       [--tokenizer-slug M] [--tasks niah_single_1,ruler_cwe] [--length 1024] [--items 3] [--threads 2]
       [--reps 3] [--decode-tokens 64] [--out FILE.json]
DIR is a study's results folder that holds both prepared models (models/<key>) and the RULER docs
(ruler/...): run configs/studies/engines.yaml (or `reprogrid prepare-model` / `reprogrid ruler-data`) first.

Each engine runs in its own child process (so their memory does not mix) and reports: load time (weights
into memory / server start to first answer), prefill tok/s on each doc's prompt (a 1-token request), decode
tok/s (N forced tokens minus the 1-token request, EOS banned), seconds per sample through the real lm-eval
path (reprogrid.generate.run_generation, the task's own budget and stop sequences), and peak resident memory
(the transformers process; the llama.cpp server process). The parent prints the two side by side with the
per-sample agreement of their responses. Record `uptime` next to the numbers: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EOS_IDS = (151643, 151645)  # Qwen2.5 <|endoftext|>, <|im_end|>


def _peak_rss_mib(pid: int | None = None) -> float:
    if pid is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _gen(args) -> dict:
    return {"generation_id": f"bench-{args.worker}", "context_length": args.length, "num_fewshot": 0,
            "sizing_tokenizer": args.tokenizer_slug, "data_seed": 0, "cwe_oneshot": False, "chat_template": False,
            "system_prompt": None, "template_family": None, "answer_prefix": "kept", "decoding": "greedy",
            "temperature": None, "max_gen_toks": 0, "batch_size": 1, "length_budget": "fit", "engine": args.worker}


def _prompts(args) -> list[str]:
    from reprogrid.generate import _load_docs

    gen = _gen(args)
    out = []
    for task in args.tasks.split(","):
        out += [d["input"] for d in _load_docs(Path(args.results) / "ruler", task, gen, args.items)]
    return out


def worker_hf(args) -> dict:
    import torch

    from reprogrid import models

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tok = models.load_prepared(Path(args.results) / "models" / args.hf_key)
    load = time.time() - t0
    prefill, decode = [], []
    for prompt in _prompts(args):
        ids = tok(prompt, return_tensors="pt").input_ids
        for _ in range(args.reps):
            with torch.inference_mode():
                t0 = time.time()
                model(ids, logits_to_keep=1)
                t1 = time.time() - t0
                t0 = time.time()
                model.generate(ids, max_new_tokens=args.decode_tokens, min_new_tokens=args.decode_tokens,
                               do_sample=False, pad_token_id=tok.eos_token_id)
                tn = time.time() - t0
            prefill.append(ids.shape[1] / t1)
            decode.append((args.decode_tokens - 1) / max(tn - t1, 1e-9))
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=1)
    return {**_run(args, lm, tok), "load_s": load, "prefill_tok_s": prefill, "decode_tok_s": decode,
            "peak_rss_mib": _peak_rss_mib(), "version": __import__("transformers").__version__}


def _post(url: str, payload: dict) -> dict:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.loads(r.read())


def worker_llama_cpp(args) -> dict:
    import llama_cpp

    from reprogrid.engines.llama_cpp import serve
    from reprogrid.engines.server import _LIVE

    t0 = time.time()
    with serve(Path(args.results) / "models" / args.gguf_key, {}, n_ctx=args.length * 2 + 512, threads=args.threads,
               seed=1234, field="bench", log=lambda m: print(m, file=sys.stderr)) as (lm, tok):
        load = time.time() - t0
        pid = next(iter(_LIVE))
        prefill, decode = [], []
        ban = {str(i): -1e9 for i in EOS_IDS}
        for prompt in _prompts(args):
            n = len(tok(prompt, add_special_tokens=False).input_ids)
            for rep in range(args.reps):
                # a different first token each time, so the server's prompt cache cannot reuse the previous prefix
                p = f"{rep}{prompt}" if rep else prompt
                base = {"prompt": p, "temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0, "logit_bias": ban}
                t0 = time.time()
                _post(lm.base_url, {**base, "max_tokens": 1})
                t1 = time.time() - t0
                t0 = time.time()
                _post(lm.base_url, {**base, "prompt": f"x{p}", "max_tokens": args.decode_tokens})
                tn = time.time() - t0
                prefill.append(n / t1)
                decode.append((args.decode_tokens - 1) / max(tn - t1, 1e-9))
        out = _run(args, lm, tok)
        rss = _peak_rss_mib(pid)
    return {**out, "load_s": load, "prefill_tok_s": prefill, "decode_tok_s": decode, "peak_rss_mib": rss,
            "client_rss_mib": _peak_rss_mib(), "version": llama_cpp.__version__}


def _run(args, lm, tok) -> dict:
    from reprogrid.generate import run_generation

    with_cache = Path(args.scratch) / f"lm_eval_cache_{args.worker}_{os.getpid()}"
    records, details = run_generation(lm, tok, _gen(args), Path(args.results) / "ruler", args.tasks.split(","),
                                      args.items, with_cache, 1234)
    return {"s_per_sample": details["seconds"] / max(len(records), 1), "n_samples": len(records),
            "score": float(records["lm_eval_score"].mean()), "responses": records["response"].tolist(),
            "prompt_sha256": records["prompt_sha256"].tolist()}


def _stats(xs: list[float]) -> str:
    import statistics

    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--hf-key", default="qwen25-coder-0.5b-instruct--source")
    ap.add_argument("--gguf-key", default="qwen25-coder-0.5b-instruct--gguf_source")
    ap.add_argument("--tokenizer-slug", default="qwen25-coder-0.5b-instruct")
    ap.add_argument("--tasks", default="niah_single_1,ruler_cwe")
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--items", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--scratch", default="/tmp")
    ap.add_argument("--out")
    ap.add_argument("--worker", choices=["hf", "llama_cpp"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        res = (worker_hf if args.worker == "hf" else worker_llama_cpp)(args)
        print(json.dumps(res))
        return
    results = {}
    for engine in ("hf", "llama_cpp"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", engine]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{engine} worker failed:\n{done.stderr[-3000:]}")
        results[engine] = json.loads(done.stdout.strip().splitlines()[-1])
    hf, ll = results["hf"], results["llama_cpp"]
    same = sum(a.strip() == b.strip() for a, b in zip(hf["responses"], ll["responses"]))
    print(f"uptime: {os.getloadavg()}; tasks {args.tasks} at {args.length} tokens, {args.items} docs each, "
          f"{args.threads} threads, {args.reps} reps")
    print(f"{'':24}{'hf (transformers fp32)':>28}{'llama_cpp (GGUF)':>28}")
    print(f"{'version':24}{hf['version']:>28}{ll['version']:>28}")
    print(f"{'load s':24}{hf['load_s']:>28.1f}{ll['load_s']:>28.1f}")
    for key, name in (("prefill_tok_s", "prefill tok/s"), ("decode_tok_s", "decode tok/s")):
        print(f"{name:24}{_stats(hf[key]):>28}{_stats(ll[key]):>28}")
    print(f"{'s/sample (lm-eval path)':24}{hf['s_per_sample']:>28.1f}{ll['s_per_sample']:>28.1f}")
    print(f"{'score (lm-eval mean)':24}{hf['score']:>28.3f}{ll['score']:>28.3f}")
    print(f"{'peak RSS MiB':24}{hf['peak_rss_mib']:>28.0f}{ll['peak_rss_mib']:>28.0f}  (llama_cpp: the server)")
    print(f"same prompts: {hf['prompt_sha256'] == ll['prompt_sha256']}; identical responses: {same}/{len(hf['responses'])}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "load": os.getloadavg(), **results}, indent=1))


if __name__ == "__main__":
    main()
