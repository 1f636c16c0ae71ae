"""Numbers as the report prints them: an estimate and its interval share their decimals.

Scores and shares are fractions, shown on the 0-100 scale; the decimals show one significant digit of
the interval's half-width (:func:`decimals_for`). Minus signs are true minus signs, and there is no
negative zero. Level text (how a factor level is written) is :func:`reprogrid.catalogue.level_text`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def decimals_for(lo: Any, hi: Any, scale: float = 100.0, default: int = 1, most: int = 3) -> int:
    """Decimals that show one significant digit of the interval's half-width (``default`` without one)."""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return default
    hw = abs(float(hi) - float(lo)) * scale / 2
    if hw <= 0:
        return default
    return int(min(most, max(0, math.ceil(-math.log10(hw) - 1e-9))))


def num(x: float, d: int, signed: bool = False) -> str:
    """``x`` with ``d`` decimals, a true minus sign and no negative zero."""
    s = f"{x:+.{d}f}" if signed else f"{x:.{d}f}"
    if float(s) == 0:
        s = f"{0:.{d}f}"
    return s.replace("-", "\u2212")


def finite(x: Any) -> bool:
    try:
        return x is not None and np.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt_range(lo: float, hi: float, d: int, scale: float = 100.0, unit: str = "") -> str:
    a, b = num(lo * scale, d), num(hi * scale, d)
    sep = " to " if lo < 0 or hi < 0 else "\u2013"
    return f"{a}{sep}{b}{unit}"


def pt(x: Any, d: int = 1) -> str:
    """A fraction on the 0-100 scale without a unit ("n/a" when missing)."""
    return num(float(x) * 100, d) if finite(x) else "n/a"


def pct(x: Any, d: int = 1) -> str:
    """A fraction as a percentage ("n/a" when missing)."""
    return (num(float(x) * 100, d) + "%") if finite(x) else "n/a"


@dataclass
class Est:
    """A value (fraction) with an optional interval; formats itself on a 0-100 scale."""

    value: float
    lo: float | None = None
    hi: float | None = None
    unit: str = ""  # "%" for shares, "" for scores on the 0-100 scale
    signed: bool = False
    scale: float = 100.0  # display = value * scale

    @property
    def has_ci(self) -> bool:
        return finite(self.lo) and finite(self.hi)

    @property
    def d(self) -> int:
        return decimals_for(self.lo, self.hi, self.scale, default=1 if self.scale == 100 else 2) \
            if self.has_ci else (1 if self.scale == 100 else 2)

    @property
    def point(self) -> str:
        if not finite(self.value):
            return "n/a"
        return num(self.value * self.scale, self.d, self.signed) + self.unit

    @property
    def ci(self) -> str:
        return fmt_range(self.lo, self.hi, self.d, self.scale, self.unit) if self.has_ci else ""

    @property
    def full(self) -> str:
        """'18% (95% CI 15–21%)'."""
        return f"{self.point} (95% CI {self.ci})" if self.has_ci else self.point

    def __str__(self) -> str:
        return self.full


def fmt_bytes_mb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def fmt_seconds(s: float) -> str:
    if not finite(s):
        return "n/a"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"
