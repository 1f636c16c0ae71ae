"""Load and validate a study config against the schema; expose the factor catalogue.

The schema (``schema/config.schema.yaml``) is the one place where factors are declared: their levels'
types, their default, their documentation and their stage (``x-stage``: generation or scoring).
Everything else (grid columns, generation ids, the README table) derives from it.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reprogrid.errors import UserError
from reprogrid.ruler_tasks import MIN_LENGTH, OFFLINE_TASKS

SCHEMA_PATH = Path(__file__).with_name("schema") / "config.schema.yaml"


@functools.cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


@dataclass(frozen=True)
class Factor:
    name: str
    stage: str  # "generation" or "scoring"
    default: Any
    doc: str


@functools.cache
def factor_catalogue() -> dict[str, Factor]:
    props = schema()["properties"]["factors"]["properties"]
    return {name: Factor(name, spec["x-stage"], spec.get("x-default"), spec.get("x-doc", ""))
            for name, spec in props.items()}


def generation_factors() -> list[str]:
    return [n for n, f in factor_catalogue().items() if f.stage == "generation"]


def scoring_factors() -> list[str]:
    return [n for n, f in factor_catalogue().items() if f.stage == "scoring"]


@dataclass
class Config:
    raw: dict
    path: Path
    sha256: str
    factors: dict[str, list] = field(default_factory=dict)  # every factor -> its levels (defaults filled in)
    listed: list[str] = field(default_factory=list)  # factors the config lists (grid columns), in catalogue order

    @property
    def models(self) -> dict:
        return self.raw["models"]

    @property
    def tokenizers(self) -> dict:
        return self.raw.get("tokenizers", {})

    @property
    def results(self) -> Path:
        return Path(self.raw.get("paths", {}).get("results", "results"))

    @property
    def resources(self) -> Path:
        """Caches of model files (joined GGUF, prepared directories): under results/ too."""
        return self.results / "cache"

    @property
    def ruler(self) -> dict:
        defaults = {k: v.get("default") for k, v in schema()["properties"]["ruler"]["properties"].items()}
        return {**defaults, **self.raw.get("ruler", {})}

    @property
    def seed(self) -> int:
        return int(self.raw.get("seed", 1234))

    @property
    def threads(self) -> int:
        return int(self.raw.get("resources", {}).get("threads", 1))


def _path_of(error) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def _describe(error) -> str:
    import jsonschema  # noqa: F401

    v = error.validator
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = sorted(error.schema.get("properties", {}))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"unknown key {', '.join(repr(e) for e in extra)}{hint}"
    if v == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"expected {want}, got {type(error.instance).__name__} {error.instance!r}"
    if v == "required":
        return error.message.replace("is a required property", "is required")
    if v == "minItems":
        return "must list at least one level" if error.validator_value == 1 else error.message
    if v == "uniqueItems":
        return f"levels must not repeat: {error.instance!r}"
    if v in ("minimum", "maximum", "exclusiveMinimum"):
        return f"{error.instance!r} is out of range ({v} {error.validator_value})"
    if v == "pattern":
        return f"{error.instance!r} must be a slug (lowercase letters, digits, '.', '_', '-')" \
            if "a-z0-9" in error.validator_value else f"{error.instance!r} does not match {error.validator_value}"
    return error.message


def validate_raw(raw: Any, where: str) -> None:
    import jsonschema

    if not isinstance(raw, dict):
        raise UserError(f"expected a mapping of study settings, got {type(raw).__name__}", field=where)
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)))
    if errors:
        err = errors[0]
        # descend into the most specific error for anyOf/oneOf
        raise UserError(_describe(err), field=f"{where}: {_path_of(err)}")


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("file not found", field=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read file ({exc.__class__.__name__})", field=str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"malformed YAML{loc}: {problem}", field=str(path)) from None


def check_semantics(cfg: Config) -> None:
    where = str(cfg.path)
    results = Path(cfg.raw.get("paths", {}).get("results", "results"))
    if ".." in results.parts or not results.parts:
        raise UserError(f"'{results}' must name a results folder without '..' components",
                        field=f"{where}: paths.results")
    models = cfg.models
    for slug, entry in models.items():
        src = entry["source"]
        need = {"embedded": "embedded", "hf": "id", "local_dir": "path", "gguf": "path"}[src]
        if need not in entry:
            raise UserError(f"source '{src}' needs the key '{need}'", field=f"{where}: models.{slug}")
        if entry.get("rope_scaling") and entry.get("family") == "qwen2.5-small":
            raise UserError("Qwen2.5 0.5B-3B have no YaRN path (32K window); remove rope_scaling or fix family",
                            field=f"{where}: models.{slug}.rope_scaling")
        if src == "hf" and not entry.get("revision"):
            raise UserError("a hub model needs a pinned `revision` (commit hash or tag)",
                            field=f"{where}: models.{slug}.revision")
    for slug, entry in cfg.tokenizers.items():
        need = {"package": "package", "local_dir": "path", "hf": "id", "model": "model"}[entry["source"]]
        if need not in entry:
            raise UserError(f"source '{entry['source']}' needs the key '{need}'",
                            field=f"{where}: tokenizers.{slug}")
        if entry["source"] == "model" and entry["model"] not in models:
            raise UserError(f"'{entry['model']}' is not a key of models", field=f"{where}: tokenizers.{slug}.model")
    for level in all_levels(cfg, "model"):
        if level not in models:
            raise UserError(f"'{level}' is not a key of models ({', '.join(models)})", field=f"{where}: factors.model")
    for level in all_levels(cfg, "tokenizer"):
        if level != "model" and level not in cfg.tokenizers:
            raise UserError(f"'{level}' is neither 'model' nor a key of tokenizers", field=f"{where}: factors.tokenizer")
    ruler = cfg.ruler
    if ruler["asset_dir"] is None:
        online = [t for t in ruler["tasks"] if t not in OFFLINE_TASKS]
        if online:
            raise UserError(
                f"task(s) {', '.join(online)} need data that is not available offline (Paul Graham essays, "
                "SQuAD, HotpotQA); set ruler.asset_dir to a local copy or use the offline tasks "
                f"{', '.join(OFFLINE_TASKS)}", field=f"{where}: ruler.tasks")
    elif not Path(ruler["asset_dir"]).is_dir():
        raise UserError(f"'{ruler['asset_dir']}' is not a directory", field=f"{where}: ruler.asset_dir")
    for length in all_levels(cfg, "context_length"):
        for task in ruler["tasks"]:
            if length < MIN_LENGTH[task]:
                raise UserError(
                    f"{length} is too short for {task}: it needs at least {MIN_LENGTH[task]} tokens "
                    "(its template, examples and generation budget do not fit, and lm-eval's generator "
                    "would loop forever); raise the length or drop the task", field=f"{where}: factors.context_length")
    names = set(cfg.factors)
    for i, rule in enumerate(cfg.raw.get("exclude", [])):
        for k, v in rule.items():
            if k not in names:
                raise UserError(f"unknown factor '{k}'", field=f"{where}: exclude[{i}]")
            if v not in all_levels(cfg, k):
                raise UserError(f"{v!r} is not a level of {k}", field=f"{where}: exclude[{i}].{k}")
    claims = cfg.raw.get("claims", {})
    for f in claims.get("files", []):
        if not Path(f).is_file():
            raise UserError(f"claims file '{f}' does not exist", field=f"{where}: claims.files")
    if ("low" in claims or "high" in claims) and not claims.get("files"):
        raise UserError("a claim pair needs claims.files", field=f"{where}: claims")
    if claims.get("files") and ("low" in claims or "high" in claims):
        from reprogrid.claims import load_claims

        ids = {c.id for c in load_claims(claims["files"])}
        for key in ("low", "high"):
            if key in claims and claims[key] not in ids:
                raise UserError(f"'{claims[key]}' is not a claim id in {', '.join(claims['files'])}",
                                field=f"{where}: claims.{key}")
    check_gpu_settings(cfg)
    check_specdec(cfg)


def check_gpu_settings(cfg: Config) -> None:
    """GPU-only settings must be coherent (device, checkpoints, backend). Whether this machine has a GPU is
    not asked here: a cluster's login node parses the config for GPU nodes (see gpu_needs)."""
    from reprogrid import grid
    from reprogrid.models import CHECKPOINT_LEVELS, GPU_LEVELS

    where = str(cfg.path)
    default_attn = factor_catalogue()["attn_implementation"].default
    seen = set()
    for g in grid.generations(cfg).values():
        slug, q = g["model"], g["quantization"]
        key = (slug, q, g["attn_implementation"])
        if key in seen:
            continue
        seen.add(key)
        entry = cfg.models[slug]
        device, backend = entry.get("device", "cpu"), entry.get("backend", "hf")
        if q in GPU_LEVELS and device != "cuda":
            raise UserError(f"quantization '{q}' runs on CUDA only and model '{slug}' has device {device}; set "
                            f"models.{slug}.device: cuda or exclude the pair", field=f"{where}: models.{slug}.device")
        if q in CHECKPOINT_LEVELS:
            ck = (entry.get("quantized") or {}).get(q)
            if not ck or not ({"id", "path"} & set(ck)):
                raise UserError(f"'{q}' uses the official pre-quantized checkpoint of '{slug}': set its "
                                "{id, revision} (e.g. Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4) or {path}, or exclude the pair",
                                field=f"{where}: models.{slug}.quantized.{q}")
            if "id" in ck and not ck.get("revision"):
                raise UserError("a hub checkpoint needs a pinned `revision` (commit hash or tag)",
                                field=f"{where}: models.{slug}.quantized.{q}.revision")
        if backend == "vllm":
            if device != "cuda":
                raise UserError(f"backend vllm runs on CUDA only; set models.{slug}.device: cuda or use backend hf",
                                field=f"{where}: models.{slug}.backend")
            if q in {"int8_dynamic", "bnb_8bit"}:
                raise UserError(f"quantization '{q}' has no vLLM path (torch dynamic int8 / 8-bit bitsandbytes); "
                                f"use backend hf for model '{slug}' or drop the level",
                                field=f"{where}: models.{slug}.backend")
            if g["attn_implementation"] != default_attn:
                raise UserError(f"vLLM chooses its own attention backend: attn_implementation "
                                f"'{g['attn_implementation']}' would be a no-op for model '{slug}'; keep "
                                f"[{default_attn}] or use backend hf", field=f"{where}: factors.attn_implementation")


def gpu_needs(cfg: Config) -> list[str]:
    """The settings of this study that need a CUDA GPU (empty: it runs on CPU)."""
    from reprogrid.models import GPU_LEVELS

    needs = [f"models.{s}.device: cuda" for s, e in cfg.models.items()
             if e.get("device") == "cuda" and s in all_levels(cfg, "model")]
    needs += [f"quantization {q}" for q in all_levels(cfg, "quantization") if q in GPU_LEVELS]
    sd = cfg.raw.get("specdec") or {}
    for pair in sd.get("pairs", []):
        for role in ("verifier", "drafter"):
            if cfg.models.get(pair.get(role), {}).get("device") == "cuda":
                needs.append(f"specdec {role} {pair[role]}: device cuda")
    return sorted(set(needs))



# --- speculative decoding study (the `specdec:` section; see reprogrid.specdec and rules/specdec.smk) ---------------


def check_specdec(cfg: Config) -> None:
    """Semantic checks of the `specdec:` section that the schema cannot express (it checks types and enums)."""
    section = cfg.raw.get("specdec")
    if section is None:
        return
    where = f"{cfg.path}: specdec"
    from reprogrid.specdec import load_prompts, study_settings

    settings = study_settings(cfg)
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
    for key in ("gamma",):
        for g in settings[key]:
            if isinstance(g, bool) or not isinstance(g, int) or g < 1:
                raise UserError(f"{g!r} must be an integer >= 1", field=f"{where}.{key}")
    temp = settings["temperature"]
    if isinstance(temp, bool) or not isinstance(temp, (int, float)) or not temp > 0:
        raise UserError(f"{temp!r} must be a number > 0", field=f"{where}.temperature")
    counts: dict[str, int] = {}
    for p in load_prompts():
        counts[p["task"]] = counts.get(p["task"], 0) + 1
    for task in settings["tasks"]:
        if task not in counts:
            raise UserError(f"'{task}' is not a built-in prompt task ({', '.join(counts)})", field=f"{where}.tasks")
        if settings["prompts_per_task"] > counts[task]:
            raise UserError(f"{settings['prompts_per_task']} exceeds the {counts[task]} built-in prompts of "
                            f"task '{task}'", field=f"{where}.prompts_per_task")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    raw = load_yaml(path)
    validate_raw(raw, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cat = factor_catalogue()
    factors = {}
    for name, f in cat.items():
        factors[name] = list(raw["factors"].get(name, [f.default]))
    listed = [n for n in cat if n in raw["factors"]]
    cfg = Config(raw=raw, path=path, sha256=digest, factors=factors, listed=listed)
    check_includes(cfg)
    check_semantics(cfg)
    return cfg


def check_includes(cfg: Config) -> None:
    """Each `include` cell names listed factors only, every multi-level one, with levels the schema allows."""
    import jsonschema

    props = schema()["properties"]["factors"]["properties"]
    for i, cell in enumerate(cfg.raw.get("include", [])):
        where = f"{cfg.path}: include[{i}]"
        for name, level in cell.items():
            if name not in cfg.listed:
                hint = "list it under factors: to vary it" if name in props else "not a factor"
                raise UserError(f"'{name}' is not a listed factor ({hint})", field=where)
            errors = list(jsonschema.Draft202012Validator(props[name]).iter_errors([level]))
            if errors:
                raise UserError(_describe(errors[0]), field=f"{where}.{name}")
        for name in cfg.listed:
            if name not in cell and len(cfg.factors[name]) > 1:
                raise UserError(f"'{name}' has several levels ({', '.join(map(str, cfg.factors[name]))}); "
                                "say which one this cell takes", field=where)


def all_levels(cfg: Config, name: str) -> list:
    """The factor's listed levels plus any level only an `include` cell uses."""
    levels = list(cfg.factors[name])
    for cell in cfg.raw.get("include", []):
        if name in cell and cell[name] not in levels:
            levels.append(cell[name])
    return levels
