"""The provenance section: config and code versions, packages, prepared models, run times, seeds,
checksums of the inputs and the state of the generation manifests."""

from __future__ import annotations

from reprogrid.catalogue import level_text
from reprogrid.provenance import code_version
from reprogrid.report.fmt import finite, fmt_bytes_mb, fmt_seconds
from reprogrid.report.inputs import Inputs


def _packages(gens: dict) -> list[dict]:
    pkgs: dict[str, set] = {}
    for g in gens.values():
        for k, v in (g.get("packages") or {}).items():
            pkgs.setdefault(k, set()).add(str(v))
    return [{"name": k, "version": ", ".join(sorted(v))} for k, v in sorted(pkgs.items())]


def _models(inp: Inputs) -> list[dict]:
    """Each prepared model's provenance (from models/, else from the first generation that used it)."""
    from_gen = {}
    for g in inp.generations.values():
        pk = (g.get("generation") or {}).get("prepared_key")
        if pk and pk not in from_gen:
            from_gen[pk] = g.get("model") or {}
    models = []
    for k in sorted(set(inp.models) | set(inp.manifests)):
        m = inp.models.get(k) or from_gen.get(k) or {}
        q = m.get("quantization") or {}
        models.append({"key": k, "source": m.get("source", ""), "upstream": m.get("upstream", ""),
                       "sha256": m.get("sha256", ""), "weights_sha256": m.get("weights_sha256", ""),
                       "tokenizer_sha256": m.get("tokenizer_sha256", ""), "method": q.get("method", ""),
                       "kl": q.get("kl_to_source"), "top1": q.get("top1_agreement"),
                       "ppl": q.get("ppl"), "ppl_source": q.get("ppl_source")})
    return models


def _runs(inp: Inputs) -> tuple[list[dict], float | None]:
    """Run time and peak memory per benchmarked job, and their total (None without benchmarks)."""
    if inp.benchmarks is None:
        return [], None
    b = inp.benchmarks.sort_values(["rule", "target"], kind="stable")
    runs = [{"rule": r.rule, "target": r.target, "time": fmt_seconds(r.seconds), "seconds": r.seconds,
             "rss": fmt_bytes_mb(r.max_rss_mb) if finite(r.max_rss_mb) else "n/a", "max_rss_mb": r.max_rss_mb}
            for r in b.itertuples(index=False)]
    return runs, float(b["seconds"].sum())


def _manifests(inp: Inputs) -> list[dict]:
    out = []
    for k, m in sorted(inp.manifests.items()):
        st = m.get("generations", {})
        n_ok = sum(1 for x in st.values() if x.get("status") == "ok")
        out.append({"key": k, "ok": n_ok, "failed": len(st) - n_ok,
                    "resumed": sum(1 for x in st.values() if x.get("resumed"))})
    return out


def _seeds_txt(inp: Inputs, attr: dict, n_boot: int, data_seeds: str) -> str:
    cfg = inp.cfg
    seeds = [f"study seed {cfg.seed}"]
    if attr.get("seed") is not None:
        bits = [f"{attr['replicates']} bootstrap replicates" if attr.get("replicates") is not None else None,
                f"{attr['permutations']} noise-floor permutations" if attr.get("permutations") is not None else None]
        bits = [b for b in bits if b]
        seeds.append(f"attribution seed {attr['seed']}" + (f" ({', '.join(bits)})" if bits else ""))
    else:
        seeds.append("attribution seed not recorded (no variance_shares.json)")
    seeds.append("RULER data seed " + data_seeds)
    seeds.append(f"report intervals: {n_boot} item-bootstrap replicates, seed {cfg.seed}"
                 if n_boot else "report intervals: none (--bootstrap 0)")
    if (inp.verdicts or {}).get("interval_method"):
        seeds.append(f"claims intervals: {inp.verdicts['interval_method']}")
    return "; ".join(seeds)


def provenance_section(inp: Inputs, attr: dict, n_boot: int) -> dict:
    cfg = inp.cfg
    gens = inp.generations
    runs, total = _runs(inp)
    gen_secs = [float(g["seconds"]) for g in gens.values() if finite(g.get("seconds"))]
    data_seeds = ", ".join(sorted({str((g.get("seeds") or {}).get("data_seed")) for g in gens.values()
                                   if (g.get("seeds") or {}).get("data_seed") is not None}))
    data_seeds = data_seeds or level_text(cfg.factors.get("data_seed", ["?"])[0])
    return {
        "seeds_txt": _seeds_txt(inp, attr, n_boot, data_seeds),
        "config_path": str(cfg.path), "config_sha256": cfg.sha256,
        "code_versions": sorted({str(g.get("code_version")) for g in gens.values() if g.get("code_version")}),
        "report_code_version": code_version(), "packages": _packages(gens),
        "models": _models(inp), "runs": runs, "total_time": fmt_seconds(total) if total is not None else None,
        "generation_time": fmt_seconds(sum(gen_secs)) if gen_secs else None, "n_generation_records": len(gens),
        "seeds": {"study": cfg.seed, "attribution": attr.get("seed"),
                  "attribution_bootstrap": attr.get("replicates"),
                  "noise_permutations": attr.get("permutations"), "report_bootstrap": n_boot,
                  "data_seeds": data_seeds, "claims_intervals": (inp.verdicts or {}).get("interval_method")},
        "checksums": [{"file": k, "sha256": v} for k, v in sorted(inp.checksums.items())],
        "manifests": _manifests(inp),
    }
