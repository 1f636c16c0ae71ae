"""Small I/O helpers shared by every stage: atomic writes, hashing, one JSON cleaner, one table reader."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from reprogrid.errors import UserError

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv", ".tab")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def to_jsonable(obj: Any) -> Any:
    """The one JSON cleaner: numpy scalars and arrays to Python, non-finite floats to null, keys to
    strings, tuples and sets to lists, anything else unknown to its text."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(obj, key=str)]
    import numpy as np

    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if type(obj).__name__ in ("NAType", "NaTType"):
        return None
    return str(obj)


def stable_json(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, what: str | None = None) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("file not found", field=f"{what} {p}" if what else str(p)) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read JSON ({exc.__class__.__name__}: {exc})",
                        field=f"{what} {p}" if what else str(p)) from None


def write_parquet(df, path: str | os.PathLike) -> None:
    """Write a DataFrame to Parquet atomically and deterministically (no pandas index, fixed row order)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")


def write_csv(df, path: str | os.PathLike, **kw) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n", **kw)


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None, *, what: str | None = None,
               text_columns: Sequence[str] = ()):
    """Read a table (.parquet, .csv, .tsv/.tab). In text files only an empty field is missing: "None",
    "NA" and "null" are kept as text (they may be factor levels); ``text_columns`` of a text file are
    read as strings (Parquet columns keep their stored types).
    ``columns``: the columns the caller needs (one error line names the missing ones).
    Every problem is one ``UserError`` whose field names the file."""
    import pandas as pd

    p = Path(path)
    where = f"{what} {p}" if what else str(p)
    if not p.is_file():
        raise UserError("file not found", field=where)
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UserError(f"unsupported table format {suffix or '(none)'!r}; expected .parquet, .csv or .tsv",
                        field=where)
    wanted = list(dict.fromkeys(columns)) if columns is not None else None
    sep = "," if suffix == ".csv" else "\t"
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            available = list(pq.read_schema(p).names)
        else:
            available = list(pd.read_csv(p, sep=sep, nrows=0).columns)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        msg = " ".join(str(exc).split()) or exc.__class__.__name__
        raise UserError(f"cannot read table ({exc.__class__.__name__}: {msg[:200]})", field=where) from None
    if wanted is not None:
        missing = [c for c in wanted if c not in available]
        if missing:
            have = ", ".join(map(str, available[:12])) + (", ..." if len(available) > 12 else "")
            raise UserError(f"column {', '.join(map(repr, missing))} not found (columns: {have})", field=where)
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(p, columns=wanted, engine="pyarrow")  # typed: nothing to re-read
        else:
            dtypes = {c: str for c in text_columns if c in available}
            df = pd.read_csv(p, sep=sep, usecols=wanted, keep_default_na=False, na_values=[""],
                             dtype=dtypes or None, low_memory=False)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        msg = " ".join(str(exc).split()) or exc.__class__.__name__
        raise UserError(f"cannot read table ({exc.__class__.__name__}: {msg[:200]})", field=where) from None
    return df


def load_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file; a missing, unreadable or malformed file is one UserError naming it."""
    import yaml

    path = Path(path)
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


def short_hash(obj: Any, n: int = 10) -> str:
    data = obj if isinstance(obj, (bytes, bytearray)) else stable_json(obj).encode()
    return hashlib.sha256(data).hexdigest()[:n]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
