"""Load one study config file and validate it against the schema (and the checks that need nothing
but that file). Whole-study checks that need other stages (the grid's GPU settings, claims files,
speculative decoding prompts) live in ``reprogrid.study``.

The schema (``schema/config.schema.yaml``) is the one place where factors are declared; the factor
catalogue derived from it lives in ``reprogrid.catalogue``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprogrid.catalogue import MIN_LENGTH, OFFLINE_TASKS, factor_catalogue, schema, section_defaults
from reprogrid.errors import UserError, validate
from reprogrid.io import load_yaml, short_hash


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
        return {**section_defaults("ruler"), **self.raw.get("ruler", {})}

    @property
    def attribution(self) -> dict:
        return {**section_defaults("attribution"), **self.raw.get("attribution", {})}

    @property
    def claims(self) -> dict:
        return dict(self.raw.get("claims") or {})

    @property
    def content_hash(self) -> str:
        """Hash of the parsed config: comments and formatting do not change it."""
        return short_hash(self.raw, 16)

    @property
    def seed(self) -> int:
        return int(self.raw.get("seed", 1234))

    @property
    def threads(self) -> int:
        return int(self.raw.get("resources", {}).get("threads", 1))


def validate_raw(raw: Any, where: str) -> None:
    if not isinstance(raw, dict):
        raise UserError(f"expected a mapping of study settings, got {type(raw).__name__}", field=where)
    validate(raw, schema(), where)


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
    props = schema()["properties"]["factors"]["properties"]
    for i, cell in enumerate(cfg.raw.get("include", [])):
        where = f"{cfg.path}: include[{i}]"
        for name, level in cell.items():
            if name not in cfg.listed:
                hint = "list it under factors: to vary it" if name in props else "not a factor"
                raise UserError(f"'{name}' is not a listed factor ({hint})", field=where)
            validate(level, props[name]["items"], str(cfg.path), prefix=("include", i, name))
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
