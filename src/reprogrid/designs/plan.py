"""The design settings of a study config, their checks, and the generation runs a fractional design selects."""

from __future__ import annotations

import itertools
import math
import string
from dataclasses import dataclass, field

import numpy as np

from reprogrid.catalogue import generation_factors
from reprogrid.config import Config
from reprogrid.errors import UserError

RESOLUTIONS = {"III": 3, "IV": 4, "V": 5}
MAX_GENERATOR_SETS = 20_000  # generator sets examined per number of added factors
MAX_TWO_LEVEL_FACTORS = 20  # pyDOE3's alias enumeration holds at most 20 factors


@dataclass
class Plan:
    """The runs of a fractional design: one row of level codes per generation run that is made."""

    settings: dict
    factors: list[str]  # the design factors: varying generation factors, in the config's order
    levels: list[list]  # their levels
    codes: np.ndarray  # (runs, k) level codes of the runs made
    family: str  # "regular two-level fraction" or "generalized subset design"
    generators: str | None = None  # pyDOE3 generator string of a regular fraction (letters a, b, ... = factors)
    rounds: list = field(default_factory=list)  # adaptive: the recorded follow-up rounds
    _keys: set = field(default_factory=set, repr=False)

    def __post_init__(self):
        self._keys = {tuple(self.levels[j][c] for j, c in enumerate(row)) for row in self.codes.tolist()}
        self.n_screening = len(self._keys)

    def add_runs(self, runs: list[tuple]) -> None:
        self._keys.update(runs)

    def runs(self) -> set[tuple]:
        """The level tuples (in ``factors`` order) of every run: screening plus recorded rounds."""
        return set(self._keys)

    @property
    def n_runs(self) -> int:
        return len(self._keys)

    @property
    def n_full(self) -> int:
        return math.prod(len(lv) for lv in self.levels)

    def keeps(self, levels: dict) -> bool:
        """Whether a cell (factor -> level) belongs to a generation run of the design."""
        return tuple(levels[f] for f in self.factors) in self._keys


def design_settings(cfg: Config) -> dict:
    """The ``design:`` section with its defaults: type full, seed = the study seed."""
    raw = dict(cfg.raw.get("design") or {})
    return {"type": raw.get("type", "full"), "seed": raw.get("seed", cfg.seed), **raw}


def _where(cfg: Config, key: str | None = None) -> str:
    return f"{cfg.path}: design" + (f".{key}" if key else "")


def _design_factors(cfg: Config) -> list[str]:
    gen = set(generation_factors())
    return [f for f in cfg.listed if f in gen and len(cfg.factors[f]) > 1]


def plan(cfg: Config) -> Plan | None:
    """The runs of the study's design; None for a full grid. Every bad design is a one-line UserError here,
    before any work starts."""
    s = design_settings(cfg)
    if s["type"] == "full":
        for key in ("resolution", "reduction", "budget", "follow_up"):
            if key in s:
                raise UserError(f"'{key}' belongs to a fractional design; a full grid runs every combination",
                                field=_where(cfg, key))
        return None
    if ("resolution" in s) == ("reduction" in s):
        raise UserError("a fractional design takes either `resolution` (two-level factors: III, IV or V) or "
                        "`reduction` (mixed levels: a generalized subset design), one of them",
                        field=_where(cfg))
    factors = _design_factors(cfg)
    if len(factors) < 2:
        raise UserError(f"a fractional design needs at least two generation factors with several levels "
                        f"(varying: {', '.join(factors) or 'none'}); use type: full", field=_where(cfg, "type"))
    levels = [list(cfg.factors[f]) for f in factors]
    rng = np.random.default_rng(int(s["seed"]))
    if "resolution" in s:
        codes, generators = _two_level(cfg, factors, levels, s["resolution"], rng)
        out = Plan(s, factors, levels, codes, "regular two-level fraction", generators)
    else:
        codes = _subset(cfg, factors, levels, int(s["reduction"]), rng)
        out = Plan(s, factors, levels, codes, "generalized subset design")
    if s["type"] == "adaptive" and "budget" not in s:
        raise UserError("an adaptive design needs a `budget` (the most generation runs, screening included)",
                        field=_where(cfg))
    if "budget" in s and out.n_runs > s["budget"]:
        what = "the screening fraction needs" if s["type"] == "adaptive" else "the design needs"
        raise UserError(f"{what} {out.n_runs} generation runs, more than the budget of {s['budget']}; "
                        "raise the budget, lower the resolution or raise the reduction", field=_where(cfg, "budget"))
    if s["type"] == "adaptive":
        from reprogrid.designs.rounds import read_rounds

        out.rounds = read_rounds(cfg, out)
        for r in out.rounds:
            out.add_runs(r["runs_key"])
    return out


def _two_level(cfg: Config, factors: list[str], levels: list[list], resolution: str, rng) -> tuple[np.ndarray, str]:
    from pyDOE3 import fracfact

    bad = [f"{f} ({len(lv)} levels)" for f, lv in zip(factors, levels) if len(lv) != 2]
    if bad:
        raise UserError(f"a resolution-{resolution} regular fraction holds two-level factors only, and "
                        f"{', '.join(bad)} {'has' if len(bad) == 1 else 'have'} more; use `reduction` "
                        "(a generalized subset design) instead", field=_where(cfg, "resolution"))
    n = len(factors)
    if n > MAX_TWO_LEVEL_FACTORS:
        raise UserError(f"{n} two-level factors; a regular fraction here holds at most {MAX_TWO_LEVEL_FACTORS}",
                        field=_where(cfg, "resolution"))
    gen = generators(n, RESOLUTIONS[resolution])
    if gen is None:
        raise UserError(f"no fraction of {n} two-level factors reaches resolution {resolution} (only the full "
                        f"2^{n} grid does); lower the resolution or use type: full", field=_where(cfg, "resolution"))
    design = fracfact(gen)
    signs = rng.choice([-1.0, 1.0], size=n)  # which of the 2^p equivalent fractions
    codes = ((design * signs) > 0).astype(np.int64)
    return np.unique(codes, axis=0), gen


def _subset(cfg: Config, factors: list[str], levels: list[list], reduction: int, rng) -> np.ndarray:
    from pyDOE3 import gsd

    sizes = [len(lv) for lv in levels]
    full = math.prod(sizes)
    if reduction >= full:
        raise UserError(f"a reduction of {reduction} leaves less than one run of the {full} "
                        f"({' x '.join(map(str, sizes))}); lower it", field=_where(cfg, "reduction"))
    try:
        designs = gsd(sizes, reduction, n=reduction)
    except (ValueError, IndexError) as e:
        raise UserError(f"a generalized subset design cannot hold levels {' x '.join(map(str, sizes))} of "
                        f"{', '.join(factors)} at reduction {reduction} ({e}); lower the reduction",
                        field=_where(cfg, "reduction")) from None
    designs = designs if isinstance(designs, list) else [designs]
    codes = np.asarray(designs[int(rng.integers(len(designs)))], dtype=np.int64)
    if any(len(set(codes[:, j])) != sizes[j] for j in range(len(sizes))):
        raise UserError(f"at reduction {reduction} some level of {', '.join(factors)} is never run; lower it",
                        field=_where(cfg, "reduction"))
    return np.unique(codes, axis=0)  # sorted rows, no repeats


def _word(mask: int) -> int:
    return bin(mask).count("1")


def generators(n: int, resolution: int) -> str | None:
    """pyDOE3 ``fracfact`` generators of a regular 2^(n-p) fraction with at least the given resolution and the
    fewest runs (the largest p); among the generator sets examined, the one with the longest shortest word and
    the fewest words of that length. None when no fraction reaches the resolution."""
    for p in range(n - 1, 0, -1):
        k = n - p
        if k < resolution - 1:
            continue
        cands = [sum(1 << i for i in c) for r in range(resolution - 1, k + 1) for c in itertools.combinations(range(k), r)]
        best, best_key = None, None
        for combo in itertools.islice(itertools.combinations(cands, p), MAX_GENERATOR_SETS):
            key = _aberration(combo, k)
            if key[0] >= resolution and (best_key is None or key > best_key):
                best, best_key = combo, key
        if best is not None:
            letters = string.ascii_lowercase
            words = ["".join(letters[i] for i in range(k) if m >> i & 1) for m in best]
            return " ".join([*letters[:k], *words])
    return None


def _aberration(gens: tuple[int, ...], k: int) -> tuple[int, int]:
    """(length of the shortest word of the defining relation, minus how many words have that length)."""
    words = [g | 1 << (k + i) for i, g in enumerate(gens)]
    lengths = []
    for r in range(1, len(words) + 1):
        for sub in itertools.combinations(words, r):
            w = 0
            for x in sub:
                w ^= x
            lengths.append(_word(w))
    shortest = min(lengths)
    return shortest, -lengths.count(shortest)
