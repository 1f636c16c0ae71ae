"""What the engines study (configs/studies/engines.yaml) says beyond the attribution table: per-sample agreement
of the two engines' responses and scores per quantization level (and length), cost per sample per engine, task
length and level, and peak memory per generate job.

Usage: python benchmarks/engines_summary.py results/engines
The engine's share of the spread with its interval is the study's own attribution output
(results/engines/attribution/variance_shares.csv, or `reprogrid attribute results/engines/tables/samples.parquet
--response score --factors engine,quantization,context_length --item item_id --out DIR`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def load(results: Path) -> pd.DataFrame:
    frames = []
    for meta in sorted((results / "generations").glob("*/*.json")):
        info = json.loads(meta.read_text())
        g = info["generation"]
        df = pd.read_parquet(meta.with_suffix(".parquet"))
        df = df.assign(engine=g.get("engine", "hf"), quantization=g["quantization"], context_length=g["context_length"],
                       chat_template=g["chat_template"], seconds_per_sample=info["seconds"] / max(len(df), 1),
                       prepared_key=g["prepared_key"])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def agreement(df: pd.DataFrame) -> pd.DataFrame:
    keys = ["quantization", "context_length", "chat_template", "item_id"]
    hf = df[df.engine == "hf"].set_index(keys)
    ll = df[df.engine == "llama_cpp"].set_index(keys)
    both = hf[["response", "lm_eval_score", "prompt_sha256"]].join(
        ll[["response", "lm_eval_score", "prompt_sha256"]], lsuffix="_hf", rsuffix="_llama", how="inner")
    both["same_response"] = both.response_hf.str.strip() == both.response_llama.str.strip()
    both["same_score"] = both.lm_eval_score_hf == both.lm_eval_score_llama
    both["same_prompt"] = both.prompt_sha256_hf == both.prompt_sha256_llama
    return (both.reset_index().groupby(["quantization", "context_length"])
            .agg(items=("item_id", "size"), same_prompt=("same_prompt", "mean"), same_response=("same_response", "mean"),
                 same_score=("same_score", "mean"), score_hf=("lm_eval_score_hf", "mean"),
                 score_llama=("lm_eval_score_llama", "mean")).round(3))


def memory(results: Path) -> pd.DataFrame:
    rows = []
    for f in sorted((results / "benchmarks" / "generate").glob("*.tsv")):
        t = pd.read_csv(f, sep="\t")
        rows.append({"prepared_key": f.stem, "seconds": float(t["s"].iloc[-1]), "max_rss_mb": float(t["max_rss"].iloc[-1])})
    return pd.DataFrame(rows)


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results/engines")
    df = load(results)
    df["task"] = df["item_id"].str.split("/").str[0]
    print("per-sample agreement between engines (same docs, same prompts):")
    print(agreement(df).to_string())
    print("\nseconds per sample (generation wall time / samples) by engine, level and length:")
    print(df.groupby(["engine", "quantization", "context_length"])["seconds_per_sample"].first().round(1).unstack().to_string())
    print("\nmean score by engine and task:")
    print(df.groupby(["engine", "task"])["lm_eval_score"].mean().round(3).unstack().to_string())
    mem = memory(results)
    if not mem.empty:
        print("\ngenerate jobs (Snakemake benchmark: wall s, peak RSS MB of the job and its children, a llama.cpp server included):")
        print(mem.to_string(index=False))


if __name__ == "__main__":
    main()
