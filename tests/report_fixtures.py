"""A synthetic, finished results directory for the report tests (no model, no Snakemake run).

``make_results(root)`` writes a study config and everything ``reprogrid report`` reads, the way the
pipeline would have written it:

* the grid (``reprogrid.grid``) of 2 models x 2 quantizations x 3 context lengths x chat template x
  2 metrics = 48 cells over 24 model runs, 5 RULER tasks x 5 items;
* per-sample generation records drawn from a fixed logistic model (seeded), scored by the real
  ``reprogrid.scoring.score`` into ``tables/samples.parquet`` and ``tables/cells.parquet``;
* ``failed_cells`` model runs fail (every cell of such a run fails, with :data:`FAILED_REASON`) and
  ``truncated`` prompts of one run are flagged as truncated;
* the variance shares are KNOWN NUMBERS (:data:`KNOWN_SHARES`, written with the attribution module's own
  writer), not computed, so a test can assert what the report must display;
* claims (optional): a claims YAML; ``findings.txt``, ``claim_cells.csv`` and ``verdicts.json`` are made
  by the real ``reprogrid.claims`` functions from the synthetic tables;
* speculative decoding (optional): a ``specdec.parquet`` with the study columns and its
  ``reprogrid.specdec.disparity`` summary;
* provenance: generation manifests and per-run provenance JSONs, prepared-model JSONs (with
  quantization fidelity for q4_0) and Snakemake benchmark TSVs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

MODELS = {
    "qwen2.5-0.5b-instruct": {"source": "hf", "id": "Qwen/Qwen2.5-0.5B-Instruct",
                              "revision": "7ae557604adf67be50417f59c2c2f167def9a775", "family": "qwen2.5-small"},
    "qwen2.5-1.5b-instruct": {"source": "hf", "id": "Qwen/Qwen2.5-1.5B-Instruct",
                              "revision": "989aa7980e4cf806f80c7fef2b1adb7bc71aa306", "family": "qwen2.5-small"},
}
TASKS = ["niah_single_1", "niah_multikey_2", "ruler_vt", "ruler_cwe", "ruler_qa_squad"]
N_ITEMS = 5
FAILED_REASON = "RuntimeError: [enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory"
LOW_CLAIM, HIGH_CLAIM, ABSENT_CLAIM = "paper_a_qwen25_0.5b", "paper_b_qwen25_1.5b", "leaderboard_qwen25_7b_1m"

# The variance shares the report must show (effect, eta2, omega2, shapley, sobol_total, ci_low, ci_high,
# noise_floor). Shapley of the factors sums to v_all; the residual holds 1 - v_all.
KNOWN_SHARES = [
    ("model", 0.1102, 0.1091, 0.1127, 0.1363, 0.0893, 0.1378, 0.0038),
    ("quantization", 0.0341, 0.0332, 0.0358, 0.0472, 0.0231, 0.0502, 0.0036),
    ("context_length", 0.1790, 0.1771, 0.1834, 0.2190, 0.1512, 0.2141, 0.0041),
    ("chat_template", 0.0398, 0.0389, 0.0412, 0.0475, 0.0287, 0.0561, 0.0035),
    ("metric", 0.0025, 0.0017, 0.0027, 0.0036, 0.0004, 0.0079, 0.0039),
]
KNOWN_INTERACTIONS = {
    "model:quantization": 0.0061, "model:context_length": 0.0214, "model:chat_template": 0.0019,
    "model:metric": 0.0003, "quantization:context_length": 0.0087, "quantization:chat_template": 0.0008,
    "quantization:metric": 0.0001, "context_length:chat_template": 0.0046, "context_length:metric": 0.0005,
    "chat_template:metric": 0.0002,
}
V_ALL = sum(r[3] for r in KNOWN_SHARES)  # 0.3758
P_VALUES = {"model": 0.0099, "quantization": 0.0099, "context_length": 0.0099, "chat_template": 0.0099,
            "metric": 0.3069}
# What the report must display for them (shares rounded to the precision their interval supports).
KNOWN = {
    "top_factor": "context_length", "top_share": "18%", "top_ci": "15–21%", "top_explained": "49%",
    "runner_up": "model", "runner_up_share": "11%", "below_noise": "metric",
}

# logit of the probability that a sample is answered correctly
BASE = 1.2
EFFECTS = {
    "model": {"qwen2.5-0.5b-instruct": -0.7, "qwen2.5-1.5b-instruct": 0.7},
    "quantization": {"source": 0.0, "q4_0": -0.35},
    "context_length": {1024: 0.9, 2048: 0.0, 4096: -1.1},
    "chat_template": {False: 0.0, True: 0.4},
    "task": {"niah_single_1": 1.5, "niah_multikey_2": 0.3, "ruler_vt": 0.0, "ruler_cwe": -0.8, "ruler_qa_squad": -0.3},
}
BUDGET = {"niah_single_1": 128, "niah_multikey_2": 128, "ruler_vt": 30, "ruler_cwe": 120, "ruler_qa_squad": 32}


def _config(root: Path, results: Path, with_claims: bool, with_specdec: bool) -> dict:
    assets = root / "ruler_assets"
    assets.mkdir(parents=True, exist_ok=True)
    cfg = {
        "study": "synthetic-report",
        "description": "Which protocol factor moves Qwen2.5's RULER score: the model size, weight quantization, "
                       "context length, the chat template or the metric's reading of a partial answer?",
        "seed": 1234,
        "paths": {"results": str(results)},
        "models": MODELS,
        "ruler": {"tasks": TASKS, "n_items": N_ITEMS, "asset_dir": str(assets)},
        "factors": {
            "model": list(MODELS),
            "quantization": ["source", "q4_0"],
            "context_length": [1024, 2048, 4096],
            "chat_template": [False, True],
            "metric": ["all_match", "any_match"],
        },
        "attribution": {"bootstrap": 200},
        "resources": {"threads": 2},
    }
    if with_claims:
        cfg["claims"] = {"files": [str(root / "claims.yaml")], "low": LOW_CLAIM, "high": HIGH_CLAIM}
    if with_specdec:
        cfg["specdec"] = {"pairs": [{"name": "0.5b-drafts-1.5b", "verifier": "qwen2.5-1.5b-instruct",
                                     "drafter": "qwen2.5-0.5b-instruct"}], "gamma": [4]}
    return cfg


def _claims_yaml() -> dict:
    src = {"paper": "A synthetic paper", "arxiv": "2501.00001", "table": "Table 2"}
    return {"claims": [
        {"id": LOW_CLAIM, "source": src, "model": "qwen2.5-0.5b-instruct", "benchmark": "ruler", "value": 22.6,
         "scale": "percent", "decimals": 1, "n_items": 125,
         "protocol": {"context_length": 4096, "chat_template": False, "quantization": "q4_0"}},
        {"id": HIGH_CLAIM, "source": {"paper": "Another synthetic paper", "arxiv": "2502.00002"},
         "model": "qwen2.5-1.5b-instruct", "benchmark": "ruler", "value": 88.6, "scale": "percent",
         "decimals": 1, "protocol": {"context_length": 1024, "chat_template": True}},
        {"id": ABSENT_CLAIM, "source": {"table": "a leaderboard row"}, "model": "qwen2.5-7b-instruct-1m",
         "benchmark": "ruler", "value": 95.7, "scale": "percent", "decimals": 1, "aggregate": "mean",
         "aggregate_over": "context_length", "components": {1024: 97.5, 2048: 96.1, 4096: 92.2},
         "protocol": {"dtype": "bfloat16"}},
    ]}


def _levels_key(g: dict) -> tuple:
    return (list(MODELS).index(g["model"]), ["source", "q4_0"].index(g["quantization"]),
            [1024, 2048, 4096].index(g["context_length"]), int(bool(g["chat_template"])))


def _records(gens: dict, failed: set, truncated_gid: str | None, truncated: int, seed: int) -> pd.DataFrame:
    # Draws depend on the levels only (generation ids hash the config, which names the temporary root).
    item_effect = dict(zip([(t, i) for t in TASKS for i in range(N_ITEMS)],
                           np.random.default_rng(seed).normal(0, 0.6, len(TASKS) * N_ITEMS)))
    rows = []
    for gid in sorted(gens, key=lambda k: _levels_key(gens[k])):
        if gid in failed:
            continue
        g = gens[gid]
        rng = np.random.default_rng([seed, *_levels_key(g)])
        n_trunc = truncated if gid == truncated_gid else 0
        k = 0
        for task in TASKS:
            for i in range(N_ITEMS):
                eta = (BASE + EFFECTS["model"][g["model"]] + EFFECTS["quantization"][g["quantization"]]
                       + EFFECTS["context_length"][g["context_length"]] + EFFECTS["chat_template"][g["chat_template"]]
                       + EFFECTS["task"][task] + item_effect[(task, i)])
                if g["context_length"] == 4096:  # interactions: the small model and q4_0 suffer most at length
                    eta -= 0.5 * (g["model"] == "qwen2.5-0.5b-instruct") + 0.4 * (g["quantization"] == "q4_0")
                p = 1 / (1 + math.exp(-eta))
                n_refs = 4 if task == "ruler_cwe" else (2 if task == "ruler_qa_squad" else 1)
                refs = [f"{task[:4]}-{i}-{j}-{rng.integers(1000, 9999)}" for j in range(n_refs)]
                hits = int(rng.binomial(n_refs, p))
                response = " ".join(refs[:hits]) or "I could not find it."
                length = g["context_length"]
                prompt_tokens = int(length - BUDGET[task] - rng.integers(8, 40))
                max_length = length * 2 + BUDGET[task] + 256
                is_trunc = False
                if k < n_trunc:
                    max_length, is_trunc = length, True
                    prompt_tokens = length - BUDGET[task] + 17
                    k += 1
                rows.append({"generation_id": gid, "task": task, "doc_id": i, "item_id": f"{task}/{100 + i}",
                             "target": refs, "response": response, "prompt_tokens": prompt_tokens,
                             "sizing_tokens": int(length - BUDGET[task]), "max_length": max_length,
                             "truncated": is_trunc})
    return pd.DataFrame(rows)


def _write_attribution(results: Path, seed: int, samples: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    from reprogrid.attribution import COLUMNS, AttributionResult
    from reprogrid.commands.attribute import write_result

    rows = [dict(zip(COLUMNS, r)) for r in KNOWN_SHARES]
    main_eta = sum(r[1] for r in KNOWN_SHARES)
    for name, eta in KNOWN_INTERACTIONS.items():
        rows.append({"effect": name, "eta2": eta, "omega2": eta - 0.0004, "shapley": np.nan, "sobol_total": np.nan,
                     "ci_low": np.nan, "ci_high": np.nan, "noise_floor": np.nan})
    resid_eta = 1 - main_eta - sum(KNOWN_INTERACTIONS.values())
    rows.append({"effect": "residual", "eta2": resid_eta, "omega2": np.nan, "shapley": 1 - V_ALL,
                 "sobol_total": 1 - V_ALL, "ci_low": 0.5913, "ci_high": 0.6580, "noise_floor": np.nan})
    table = pd.DataFrame(rows, columns=COLUMNS)
    factors = [r[0] for r in KNOWN_SHARES]
    details = {
        "method": {"v": "v(S) = R^2 (1 - within-group SS / total SS) of the response on the full interaction "
                        "of the factors in S",
                   "interval": "percentile bootstrap of shapley over resampled items"},
        "family": "gaussian", "response": "score", "factors": factors, "item": ["item_id"],
        "n_rows": len(samples), "n_units": len(TASKS) * N_ITEMS, "n_cells": int(samples["cell_id"].nunique()),
        "n_cells_full_grid": len(cells), "missing_cells": len(cells) - int(samples["cell_id"].nunique()),
        "balanced": bool(samples["cell_id"].nunique() == len(cells)), "v_all": V_ALL,
        "bootstrap": {"replicates": 200, "ci": 0.95, "interval": "percentile", "unit": "item",
                      "v_all_interval": [0.3411, 0.4102]},
        "noise_floor": {"permutations": 100, "quantile": 0.95, "factors": {
            r[0]: {"noise_floor": r[7], "null_mean": r[7] / 3, "p_value": P_VALUES[r[0]],
                   "above_noise": r[3] > r[7], "permutation": "within items"} for r in KNOWN_SHARES}},
        "seed": seed,
    }
    write_result(AttributionResult(table=table, details=details), results / "attribution")
    _write_components(results, samples, factors)
    return table


def _write_components(results: Path, samples: pd.DataFrame, factors: list[str]) -> None:
    """The real `reprogrid gstudy` on the synthetic samples (the workflow's gstudy rule)."""
    from reprogrid.cli import main

    samples.to_parquet(results / "tables" / "samples_for_gstudy.parquet")
    assert main(["gstudy", str(results / "tables" / "samples_for_gstudy.parquet"), "--response", "score",
                 "--item", "item_id", "--factors", ",".join(factors), "--or-explain",
                 "--out", str(results / "attribution")]) == 0
    (results / "tables" / "samples_for_gstudy.parquet").unlink()


def _specdec(results: Path, rng) -> None:
    from reprogrid.specdec.disparity import disparity
    from reprogrid.specdec.study import STUDY_COLUMNS
    from reprogrid.specdec.theory import expected_speedup, expected_tokens_per_step

    rows = []
    tasks = {"niah_single_1": 0.82, "ruler_cwe": 0.61, "ruler_vt": 0.74}
    pos = 0
    for task, alpha in tasks.items():
        for j in range(6):
            a = float(np.clip(alpha + rng.normal(0, 0.04), 0.05, 0.98))
            ae = float(np.clip(a + rng.normal(0, 0.03), 0.05, 0.99))
            c = 0.31
            row = {col: np.nan for col in STUDY_COLUMNS}
            row.update({"task": task, "prompt_id": f"{task}-{j}", "position": pos, "mix": "as_given", "gamma": 4,
                        "decoding": "greedy", "temperature": None, "drafter_temperature": None,
                        "drafter_warpers": "once", "seed": 0, "prompt_tokens": int(300 + 10 * j),
                        "new_tokens": 64, "new_tokens_plain": 64, "n_steps": int(64 / (1 + 3 * ae)),
                        "alpha_analytic": a, "alpha_greedy": a, "alpha_empirical": ae,
                        "tokens_per_step": float(expected_tokens_per_step(ae, 4) * (1 + rng.normal(0, 0.03))),
                        "expected_tokens_per_step": float(expected_tokens_per_step(a, 4)),
                        "c": c, "verify_cost_ratio": 1.6,
                        "speedup_measured": float(expected_speedup(ae, 4, c) * 0.8 * (1 + rng.normal(0, 0.05))),
                        "speedup_predicted": float(expected_speedup(a, 4, c)),
                        "cross_entropy": float(1.4 - a + rng.normal(0, 0.05)), "kl": float(0.9 - a * 0.8),
                        "outputs_identical": True, "replay_matches_observed": True, "ended_at_eos": False,
                        "output_text": "..."})
            rows.append(row)
            pos += 1
    df = pd.DataFrame(rows, columns=STUDY_COLUMNS)
    out = results / "specdec"
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / "specdec.parquet", index=False)
    (out / "disparity.json").write_text(json.dumps(disparity(df, n_boot=200, seed=0), indent=2, sort_keys=True))


def _provenance(cfg, results: Path, gens: dict, status: dict, records: pd.DataFrame) -> None:
    packages = {"reprogrid": "0.1.0", "torch": "2.9.1", "transformers": "5.23.0", "lm_eval": "0.4.13",
                "pandas": "2.3.3", "numpy": "2.3.5", "python": "3.11.2"}
    pkeys = sorted({g["prepared_key"] for g in gens.values()})
    for n, pkey in enumerate(pkeys):
        model, level = pkey.split("--")
        entry = cfg.models[model]
        quant = {"method": "weights as the source provides them"} if level == "source" else {
            "method": "gguf-py quants Q4_0 quantize+dequantize of 2-D weights", "kl_to_source": 0.0412 + 0.01 * n,
            "top1_agreement": 0.9213 - 0.01 * n, "ppl_source": 7.812, "ppl": 8.405 + n, "tokens": 512}
        info = {"model": model, "level": level, "prepared_key": pkey, "source": entry["source"],
                "upstream": f"{entry['id']}@{entry['revision']}", "sha256": f"{n + 1:x}" * 64,
                "weights_sha256": f"{n + 10:x}"[-1] * 64, "tokenizer_sha256": "7" * 64, "quantization": quant,
                "license": "Apache-2.0", "load_seconds": 12.5 + n}
        mdir = results / "models" / pkey
        mdir.mkdir(parents=True, exist_ok=True)
        (mdir / "reprogrid_model.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        gdir = results / "generations" / pkey
        gdir.mkdir(parents=True, exist_ok=True)
        mine = {gid: status[gid] for gid in sorted(gens) if gens[gid]["prepared_key"] == pkey}
        (results / "generations" / f"{pkey}.manifest.json").write_text(
            json.dumps({"prepared_key": pkey, "generations": mine}, indent=2, sort_keys=True))
        for gid, st in mine.items():
            if st["status"] != "ok":
                continue
            rec = records[records["generation_id"] == gid]
            g = gens[gid]
            prov = {"generation_id": gid, "generation": g, "config_path": str(cfg.path), "config_sha256": cfg.sha256,
                    "code_version": "0123456789abcdef0123456789abcdef01234567", "packages": packages,
                    "model": {k: info.get(k) for k in ("source", "sha256", "upstream", "weights_sha256",
                                                       "tokenizer_sha256", "quantization", "level")},
                    "seeds": {"data_seed": g["data_seed"], "lm_eval_seeds": cfg.seed}, "threads": 2,
                    "ruler": {"tasks": TASKS, "n_items": N_ITEMS}, "seconds": float(40 + g["context_length"] / 64),
                    "max_length": int(rec["max_length"].max()), "n_samples": len(rec),
                    "n_truncated": int(rec["truncated"].sum())}
            (gdir / f"{gid}.json").write_text(json.dumps(prov, indent=2, sort_keys=True, default=str))
        _bench(results / "benchmarks" / "prepare_model" / f"{pkey}.tsv", 61.2 + 7 * n, 2950.4 + 100 * n)
        _bench(results / "benchmarks" / "generate" / f"{pkey}.tsv", 1803.5 + 211 * n, 4120.8 + 300 * n)
    _bench(results / "benchmarks" / "attribute.tsv", 8.4, 311.0)
    for rule, s in (("grid", 1.1), ("score", 3.2), ("claims_check", 0.9), ("claims_map", 2.5)):
        _bench(results / "benchmarks" / f"{rule}.tsv", s, 150.0)


def _bench(path: Path, s: float, rss: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    hms = f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{int(s % 60):02d}"
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{s:.2f}\t{hms}\t{rss:.2f}\t{rss * 1.3:.2f}\t{rss * 0.97:.2f}\t{rss * 0.98:.2f}\t4.12\t0.02\t"
                    f"97.10\t{s * 0.97:.2f}\n")


def make_results(root, *, with_claims: bool = True, with_specdec: bool = True, failed_cells: int = 1,
                 truncated: int = 3) -> tuple[Path, Path]:
    """Write a config and a finished synthetic results directory under ``root``.

    ``failed_cells``: model runs that fail (each takes every cell that shares it: one per metric level);
    ``truncated``: prompts of one run (0.5B, q4_0, 4096 tokens, chat template) flagged as truncated.
    Returns ``(config_path, results_dir)``.
    """
    from reprogrid import grid
    from reprogrid.catalogue import factor_catalogue
    from reprogrid.study import load_study
    from reprogrid.io import write_parquet, write_text
    from reprogrid.scoring import score

    root = Path(root)
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    if with_claims:
        (root / "claims.yaml").write_text(yaml.safe_dump(_claims_yaml(), sort_keys=False))
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(_config(root, results, with_claims, with_specdec), sort_keys=False))
    cfg = load_study(config_path)

    cells = grid.expand(cfg)
    gens = grid.generations(cfg)
    write_text(results / "grid" / "cells.tsv", grid.to_tsv(cells))

    def gid_of(**levels) -> str:
        return next(gid for gid, g in sorted(gens.items()) if all(g[k] == v for k, v in levels.items()))

    # runs that fail: the large model at the longest context first
    # (q4_0 cells at 1024 and 4096 tokens are on the claims' explanation path; they never fail)
    fail_order = [dict(model=m, quantization="source", context_length=L, chat_template=c)
                  for m in ("qwen2.5-1.5b-instruct", "qwen2.5-0.5b-instruct") for L in (4096, 2048)
                  for c in (True, False)]
    failed = {gid_of(**lv) for lv in fail_order[:failed_cells]}
    trunc_gid = gid_of(model="qwen2.5-0.5b-instruct", quantization="q4_0", context_length=4096, chat_template=True)
    records = _records(gens, failed, trunc_gid, truncated, seed=20240611)
    status = {gid: ({"status": "failed", "reason": FAILED_REASON} if gid in failed
                    else {"status": "ok", "records": f"{gid}.parquet"}) for gid in gens}
    defaults = {n: cfg.factors[n][0] for n in factor_catalogue()}
    samples, cells_out = score(cells, records, {g: FAILED_REASON for g in failed}, defaults)
    write_parquet(samples, results / "tables" / "samples.parquet")
    write_parquet(cells_out, results / "tables" / "cells.parquet")

    shares = _write_attribution(results, cfg.seed, samples, cells_out)
    _provenance(cfg, results, gens, status, records)

    if with_claims:
        from reprogrid.claims import check_claims, load_claims, map_claims_to_cells, published_record, verdicts

        claims = load_claims([root / "claims.yaml"])
        out = results / "claims"
        out.mkdir(parents=True, exist_ok=True)
        (out / "findings.txt").write_text("".join(f"{f}\n" for f in check_claims(claims)))
        map_claims_to_cells(claims, cells_out).to_csv(out / "claim_cells.csv", index=False, float_format="%.10g")
        v = verdicts(claims, cells_out, samples, pair=(LOW_CLAIM, HIGH_CLAIM), variance_shares=shares,
                     bootstrap=200, seed=cfg.seed)
        (out / "verdicts.json").write_text(json.dumps(v, indent=2, sort_keys=True))
        published_record(claims, cells_out).to_csv(out / "published.csv", index=False, float_format="%.10g")
    if with_specdec:
        _specdec(results, np.random.default_rng(7))
    return config_path, results
