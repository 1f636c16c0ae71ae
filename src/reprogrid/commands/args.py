"""Command-line argument parsing shared by the commands: column lists and numbers given as text.

One rule for every command: a list is comma-separated, each name non-empty and listed once; an absent or
blank option is the empty list (a command that needs at least one name says so itself).
"""

from __future__ import annotations

from typing import Any

from reprogrid.errors import UserError


def column_list(text: str | None, name: str) -> list[str]:
    """`"a, b"` -> `["a", "b"]`; None or blank -> `[]`; empty or repeated names are a `UserError` on `name`."""
    if text is None or not str(text).strip():
        return []
    parts = [p.strip() for p in str(text).split(",")]
    if any(not p for p in parts):
        raise UserError(f"expected a comma-separated list of column names, got {text!r}", field=name)
    if len(set(parts)) != len(parts):
        raise UserError(f"a column is listed twice in {text!r}", field=name)
    return parts


def number(text: Any) -> Any:
    """Whole-number text as an int, other values unchanged (the library's checks name what is wrong)."""
    if isinstance(text, str):
        try:
            return int(text)
        except ValueError:
            return text
    return text


def positive(text: str | None, name: str) -> float | None:
    """A positive number given as text; None stays None."""
    if text is None:
        return None
    try:
        x = float(text)
    except ValueError:
        x = float("nan")
    if not x > 0:
        raise UserError(f"expected a positive number, got {text!r}", field=name)
    return x
