"""What a study can name: factors, their stages and defaults, levels and how they are written, RULER
tasks, quantization level families, prepared-model keys.

Everything here is read from the config schema (``schema/config.schema.yaml``, where each factor is
declared once) or is a fixed fact about lm-eval's RULER tasks. No other module of the package is
imported: every layer may use this one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

SCHEMA_DIR = Path(__file__).with_name("schema")
SCHEMA_PATH = SCHEMA_DIR / "config.schema.yaml"


@functools.cache
def load_schema(name: str = "config") -> dict:
    """A schema shipped with the package (``config`` or ``claims``), parsed once."""
    return yaml.safe_load((SCHEMA_DIR / f"{name}.schema.yaml").read_text(encoding="utf-8"))


def schema() -> dict:
    return load_schema("config")


# --------------------------------------------------------------------------------------------------
# factors


@dataclass(frozen=True)
class Factor:
    name: str
    stage: str  # "generation" or "scoring"
    default: Any
    doc: str


@functools.cache
def factor_catalogue() -> dict[str, Factor]:
    """Every factor of the schema, in its order: name -> stage, default level, documentation."""
    props = schema()["properties"]["factors"]["properties"]
    return {name: Factor(name, spec["x-stage"], spec.get("x-default"), spec.get("x-doc", ""))
            for name, spec in props.items()}


def factor_names() -> list[str]:
    return list(factor_catalogue())


def generation_factors() -> list[str]:
    return [n for n, f in factor_catalogue().items() if f.stage == "generation"]


def scoring_factors() -> list[str]:
    return [n for n, f in factor_catalogue().items() if f.stage == "scoring"]


@functools.cache
def late_factors() -> dict[str, Any]:
    """Factors added after results existed (``x-id: non-default`` in the schema) -> their default level.

    Such a factor enters a generation id only when it is set to something other than its default, so the
    ids (and the finished generations) of studies that never name it stay what they were."""
    props = schema()["properties"]["factors"]["properties"]
    return {n: spec.get("x-default") for n, spec in props.items() if spec.get("x-id") == "non-default"}


def factor_spec(name: str) -> dict:
    """The schema of one factor's list of levels."""
    return schema()["properties"]["factors"]["properties"][name]


def section_defaults(section: str) -> dict:
    """The ``default`` of every key of a top-level schema section (``ruler``, ``attribution``, ...)."""
    props = schema()["properties"][section]["properties"]
    return {k: v.get("default") for k, v in props.items()}


# --------------------------------------------------------------------------------------------------
# level text: one canonical spelling per level, so that 4096 == "4096" and True == "true"


def level_text(x: Any) -> str:
    """The canonical text of a factor level: booleans lowercase, integral numbers without '.0',
    missing as "null". Strings are kept as they are (so "None" and "NA" stay levels), except that
    a string that spells a number or a boolean is written as that number or boolean."""
    import numpy as np

    if x is None or (isinstance(x, (float, np.floating)) and math.isnan(x)):
        return "null"
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isfinite(x) and x.is_integer():
            return str(int(x))
        return repr(x)
    s = str(x).strip()
    low = s.lower()
    if low in ("true", "false"):
        return low
    try:
        return str(int(s))
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        return s
    if math.isfinite(f):
        return str(int(f)) if f.is_integer() else repr(f)
    return s


def parse_level(s: str) -> Any:
    """A level typed on a command line as the value it spells: int, float, bool, or the string."""
    c = level_text(s)
    if c in ("true", "false"):
        return c == "true"
    for cast in (int, float):
        try:
            return cast(c)
        except ValueError:
            pass
    return c


def cell_text(cell: dict, empty: str = "") -> str:
    """``factor=level, factor=level`` with canonical level text."""
    return ", ".join(f"{k}={level_text(v)}" for k, v in cell.items()) or empty


def level_sort_key(s: Any):
    """Numbers in numeric order first, then text."""
    t = level_text(s)
    try:
        return (0, float(t), t)
    except ValueError:
        return (1, 0.0, t)


def sorted_levels(values: Iterable[Any]) -> list:
    return sorted(values, key=level_sort_key)


# --------------------------------------------------------------------------------------------------
# RULER tasks (lm-eval 0.4.13, lm_eval/tasks/ruler)

# task -> (lm-eval module under lm_eval.tasks.ruler, builder function, default max_gen_toks)
TASKS = {
    "niah_single_1": ("niah_utils", "niah_single_1", 128),
    "niah_single_2": ("niah_utils", "niah_single_2", 128),
    "niah_single_3": ("niah_utils", "niah_single_3", 128),
    "niah_multikey_1": ("niah_utils", "niah_multikey_1", 128),
    "niah_multikey_2": ("niah_utils", "niah_multikey_2", 128),
    "niah_multikey_3": ("niah_utils", "niah_multikey_3", 128),
    "niah_multivalue": ("niah_utils", "niah_multivalue", 128),
    "niah_multiquery": ("niah_utils", "niah_multiquery", 128),
    "ruler_vt": ("vt_utils", "get_vt_dataset", 30),
    "ruler_cwe": ("cwe_utils", "get_cw_dataset", 120),
    "ruler_fwe": ("fwe_utils", "fwe_download", 50),
    "ruler_qa_squad": ("qa_utils", "get_squad", 32),
    "ruler_qa_hotpot": ("qa_utils", "get_hotpotqa", 32),
}

# Tasks whose data lm-eval makes without network (the others need essays, SQuAD or HotpotQA).
OFFLINE_TASKS = ("niah_single_1", "niah_multikey_2", "niah_multikey_3", "ruler_vt", "ruler_cwe", "ruler_fwe")

# Shortest context each generator can fill (measured with the Qwen2.5 tokenizer): VT's built-in
# example alone is sized to 500 tokens, so at 768 its generator never terminates; CWE at 512 shrinks
# its word list to nothing and emits docs with no reference answer.
MIN_LENGTH = {task: 512 for task in TASKS} | {"ruler_vt": 1024, "ruler_cwe": 1024, "ruler_qa_squad": 1024,
                                              "ruler_qa_hotpot": 1024}

# RULER's categories (the 13-task mean weights them 8 / 1 / 2 / 2)
CATEGORIES = {
    "niah": [t for t in TASKS if t.startswith("niah_")],
    "vt": ["ruler_vt"],
    "aggregation": ["ruler_cwe", "ruler_fwe"],
    "qa": ["ruler_qa_squad", "ruler_qa_hotpot"],
}


def is_niah(task: str) -> bool:
    return str(task).startswith("niah_")


def task_max_gen_toks(task: str) -> int:
    return TASKS[task][2]


# --------------------------------------------------------------------------------------------------
# quantization levels and prepared-model keys

GGUF_LEVELS = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1",
               "f16": "F16", "bf16": "BF16"}
RUNTIME_LEVELS = {"int8_dynamic"}
# GPU only. Checkpoint levels are the official pre-quantized checkpoints of a variant (e.g.
# Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4), named per model under `models.<slug>.quantized.<level>`; their
# weights differ, so they get their own prepared directory. bitsandbytes quantizes at load time.
CHECKPOINT_LEVELS = {"gptq_int4": ("gptq", 4), "gptq_int8": ("gptq", 8), "awq": ("awq", 4)}
BNB_LEVELS = {"bnb_4bit", "bnb_8bit"}
GPU_LEVELS = set(CHECKPOINT_LEVELS) | BNB_LEVELS
ALL_LEVELS = {"source"} | set(GGUF_LEVELS) | RUNTIME_LEVELS | GPU_LEVELS


# Engines that run a prepared GGUF file rather than a transformers directory, and the quantization levels
# they can make with their own quantizer (``source``: the GGUF file as the source has it).
GGUF_ENGINES = {"llama_cpp"}
GGUF_ENGINE_LEVELS = {"source"} | set(GGUF_LEVELS)
GGUF_WEIGHTS_PREFIX = "gguf_"


def prepared_key(model: str, quantization: str, engine: str = "hf") -> str:
    """The directory name (and Snakemake wildcard) of a prepared (model, weights) pair: levels that
    quantize at run time share the source weights; an engine that runs GGUF files (llama_cpp) has its own
    prepared GGUF per level (``<model>--gguf_<level>``)."""
    if engine in GGUF_ENGINES:
        return f"{model}--{GGUF_WEIGHTS_PREFIX}{quantization}"
    weights = "source" if quantization in RUNTIME_LEVELS | BNB_LEVELS else quantization
    return f"{model}--{weights}"


def split_prepared_key(key: str) -> tuple[str, str]:
    model, weights = key.split("--", 1)
    return model, weights


def gguf_weights_level(weights: str) -> str | None:
    """The quantization level of a prepared GGUF's weights part (``gguf_q4_0`` -> ``q4_0``); None for a
    transformers directory."""
    return weights[len(GGUF_WEIGHTS_PREFIX):] if weights.startswith(GGUF_WEIGHTS_PREFIX) else None
