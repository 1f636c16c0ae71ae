"""The config's ``specdec:`` section -> settings and measurement cells (rules/specdec.smk's wildcards).

A *cell* is one (pair, gamma, decoding, mix, chat_template, backend) combination; each runs every configured
prompt with the verifier alone and with the drafter (:func:`reprogrid.specdec.study.run_study`). The study's
factors are these plus the prompt's task.
"""

from __future__ import annotations

from reprogrid.errors import UserError
from reprogrid.specdec.prompts import by_task, load_prompts

STUDY_FACTORS = ("task", "pair", "gamma", "decoding", "mix", "chat_template", "backend")
CELL_COLUMNS = ["cell_id", "pair", "verifier", "drafter", "verifier_quantization", "drafter_quantization",
                "chat_template", "backend", "status", "acceptance_rate_tokens"]


def raw_config(cfg) -> dict:
    """The config's mapping (a loaded Config or its raw dict)."""
    return cfg.raw if hasattr(cfg, "raw") else cfg


def study_seed(cfg) -> int:
    """The study's ``seed`` (the schema's default when unset)."""
    from reprogrid.catalogue import schema

    return int(raw_config(cfg).get("seed", schema()["properties"]["seed"]["default"]))


def pair_name(pair: dict) -> str:
    """Default label of a pair: ``<drafter>[.<level>]-drafts-<verifier>[.<level>]`` (``source`` levels omitted)."""
    def side(slug: str, level: str) -> str:
        return slug if level == "source" else f"{slug}.{level}"

    return (f"{side(pair['drafter'], pair.get('drafter_quantization', 'source'))}-drafts-"
            f"{side(pair['verifier'], pair.get('verifier_quantization', 'source'))}")


def study_settings(cfg) -> dict:
    """The ``specdec:`` section with the schema's defaults filled in; pairs get ``name`` and prepared-model keys."""
    from reprogrid.catalogue import prepared_key, schema

    section = raw_config(cfg).get("specdec")
    if not section:
        raise UserError("the config has no specdec section (the speculative decoding study is not configured)",
                        field="specdec")
    props = schema()["properties"]["specdec"]["properties"]
    settings = {k: v.get("default") for k, v in props.items() if k != "pairs"}
    settings.update({k: v for k, v in section.items() if k != "pairs"})
    pair_props = props["pairs"]["items"]["properties"]
    pairs = []
    for p in section["pairs"]:
        full = {k: spec["default"] for k, spec in pair_props.items() if "default" in spec}
        full.update(p)
        full["name"] = p.get("name") or pair_name(full)
        full["verifier_key"] = prepared_key(full["verifier"], full["verifier_quantization"])
        full["drafter_key"] = prepared_key(full["drafter"], full["drafter_quantization"])
        pairs.append(full)
    settings["pairs"] = pairs
    return settings


def cell_id(pair: str, gamma: int, decoding: str, mix: str, chat_template: bool, backend: str = "hf") -> str:
    """``<pair>__g<gamma>__<decoding>__<mix>__<chat|raw>`` (+ ``__vllm`` for the vLLM backend)."""
    base = f"{pair}__g{int(gamma)}__{decoding}__{mix}__{'chat' if chat_template else 'raw'}"
    return base if backend == "hf" else f"{base}__{backend}"


def study_cells(cfg) -> dict[str, dict]:
    """Every measurement cell of the configured study, by cell id (the Snakemake wildcard), in config order."""
    s = study_settings(cfg)
    cells: dict[str, dict] = {}
    combos = [(p, g, d, m, ch, b) for b in s["backend"] for p in s["pairs"] for g in s["gamma"] for d in s["decoding"]
              for m in s["mix"] for ch in s["chat_template"]]
    for p, gamma, decoding, mix, chat, backend in combos:
        cid = cell_id(p["name"], gamma, decoding, mix, chat, backend)
        cells[cid] = {
            "cell_id": cid, "pair": p["name"], "verifier": p["verifier"], "drafter": p["drafter"],
            "verifier_quantization": p["verifier_quantization"],
            "drafter_quantization": p["drafter_quantization"],
            "verifier_key": p["verifier_key"], "drafter_key": p["drafter_key"],
            "on_vocab_mismatch": p["on_vocab_mismatch"], "gamma": int(gamma), "decoding": decoding,
            "temperature": float(s["temperature"]) if decoding == "sample" else None,
            "mix": mix, "chat_template": bool(chat), "backend": backend,
        }
    return cells


# ------------------------------------------------------------------------------------------------------------------
# Semantic checks of the section (reprogrid.study.load_study runs them)


def _check_pairs(cfg, settings: dict, where: str) -> None:
    names: dict[str, int] = {}
    for i, pair in enumerate(settings["pairs"]):
        for role in ("verifier", "drafter"):
            if pair[role] not in cfg.models:
                raise UserError(f"'{pair[role]}' is not a key of models ({', '.join(cfg.models)})",
                                field=f"{where}.pairs[{i}].{role}")
        if pair["verifier"] == pair["drafter"] and \
                pair["verifier_quantization"] == pair["drafter_quantization"]:
            raise UserError("the drafter is the verifier itself with the same weights (nothing to measure); "
                            "set drafter_quantization (e.g. q4_0) for a quantized self-drafter",
                            field=f"{where}.pairs[{i}]")
        if pair["name"] in names:
            raise UserError(f"pair name '{pair['name']}' is used twice (pairs [{names[pair['name']]}] and [{i}]); "
                            "give one a `name`", field=f"{where}.pairs[{i}].name")
        names[pair["name"]] = i
        if "vllm" in settings["backend"]:
            for role in ("verifier", "drafter"):
                if cfg.models[pair[role]].get("device", "cpu") != "cuda":
                    raise UserError("backend vllm runs speculative decoding on CUDA only; set "
                                    f"models.{pair[role]}.device: cuda or use backend hf",
                                    field=f"{where}.pairs[{i}].{role}")


def _check_tasks(settings: dict, where: str) -> None:
    counts = {task: len(group) for task, group in by_task(load_prompts()).items()}
    for task in settings["tasks"]:
        if task not in counts:
            raise UserError(f"'{task}' is not a built-in prompt task ({', '.join(counts)})", field=f"{where}.tasks")
        if settings["prompts_per_task"] > counts[task]:
            raise UserError(f"{settings['prompts_per_task']} exceeds the {counts[task]} built-in prompts of "
                            f"task '{task}'", field=f"{where}.prompts_per_task")


def mitigation_pair(cfg) -> dict:
    """The pair (``study_settings`` form) named by ``specdec.mitigation.pair`` (default: the first pair)."""
    s = study_settings(cfg)
    name = (s.get("mitigation") or {}).get("pair")
    pairs = {p["name"]: p for p in s["pairs"]}
    if name is None:
        return s["pairs"][0]
    if name not in pairs:
        raise UserError(f"'{name}' is not a pair name ({', '.join(pairs)})", field="specdec.mitigation.pair")
    return pairs[name]


def mitigation_values(settings: dict) -> dict:
    """``MitigationSettings`` fields set by the config: the mitigation section (less ``pair``), the tasks, the chat
    template (its first level), and the section's ``timing_steps`` and ``bootstrap`` (the re-measurement is the
    same measurement as a cell's, its intervals the same kind as the disparity's)."""
    values = {k: v for k, v in (settings.get("mitigation") or {}).items() if k != "pair"}
    values.update(tasks=list(settings["tasks"]), chat_template=bool(settings["chat_template"][0]))
    for key, field in (("timing_steps", "timing_steps"), ("n_boot", "bootstrap")):
        if settings.get(field) is not None:
            values[key] = settings[field]
    return values


def _check_mitigation(cfg, settings: dict, where: str) -> None:
    """The mitigation's own checks (``reprogrid.specdec.mitigate``), with errors naming the config's fields."""
    from reprogrid.specdec.mitigate import MitigationSettings, check_numbers, split_prompts

    try:
        mitigation_pair(cfg)
        s = MitigationSettings(verifier="", drafter="", out="", **mitigation_values(settings))
        check_numbers(s)
        split_prompts(s)
    except UserError as exc:
        message = str(exc)[len(exc.field) + 2:] if exc.field else str(exc)
        flag = (exc.field or "").rsplit(": ", 1)[-1].lstrip("-").replace("-", "_")
        raise UserError(message, field=f"{where}.mitigation.{flag.removeprefix('specdec.mitigation.')}") from None


def check_specdec(cfg) -> None:
    """Semantic checks of the `specdec:` section that the schema cannot express (it checks types and enums)."""
    if cfg.raw.get("specdec") is None:
        return
    where = f"{cfg.path}: specdec"
    settings = study_settings(cfg)
    _check_pairs(cfg, settings, where)
    for g in settings["gamma"]:
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise UserError(f"{g!r} must be an integer >= 1", field=f"{where}.gamma")
    temp = settings["temperature"]
    if isinstance(temp, bool) or not isinstance(temp, (int, float)) or not temp > 0:
        raise UserError(f"{temp!r} must be a number > 0", field=f"{where}.temperature")
    _check_tasks(settings, where)
    if settings.get("mitigation"):
        _check_mitigation(cfg, settings, where)
