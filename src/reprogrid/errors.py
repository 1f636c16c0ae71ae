"""One exception type for every problem the user can fix, and the one way a schema error becomes one.

The CLI prints ``error: <message>`` on one line and exits with code 2; no traceback.
Messages name the field (or file) and say what is expected.

Schema errors (``validate``): the study config and the claims files are validated against JSON schemas
(``schema/*.schema.yaml``); the first error (shallowest path first) becomes one ``UserError`` whose field
is ``<file>: <path>`` (``claims[0].source.arxiv``; a missing or unknown key is named in the path). A
schema may word its own messages: ``x-messages: {<keyword>: TEMPLATE}`` on the subschema that holds the
keyword (a mapping keyword -> {key: TEMPLATE, "*": TEMPLATE} words it per key for ``required``,
``dependentRequired`` and ``additionalProperties``), and ``x-null: TEXT`` for a null where a value is due.
Templates may use {value} (the offending value, repr), {type}, {enum} ('a', 'b'), {enum_or} ('a' or 'b'),
{limit}, {key}, {allowed}, {expected}.
"""

from __future__ import annotations

import re
from typing import Any


class UserError(Exception):
    """Bad input (config, claims file, table, grid) or an environment the study cannot run in."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)

    def in_file(self, where: str) -> "UserError":
        """This error located in a file (or a table named by its file): ``<file>: <field>: <message>``."""
        text = str(self)
        if text == where or text.startswith(f"{where}: "):
            return self
        located = UserError(text, field=where)
        located.exit_code = self.exit_code
        return located


# ---------------------------------------------------------------------------------------------------
# schema errors

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_KEYED = ("required", "dependentRequired", "additionalProperties")


def type_name(v: Any) -> str:
    """How a YAML reader would name the type of ``v``."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "mapping"
    return type(v).__name__


def path_text(parts) -> str:
    """``claims[0].components[4096]``: list indexes and numeric keys in brackets, odd keys quoted."""
    out = ""
    for p in parts:
        if isinstance(p, int) and not isinstance(p, bool):
            out += f"[{p}]"
        elif isinstance(p, str) and _PLAIN_KEY.match(p):
            out += f".{p}" if out else p
        else:
            out += f"[{p!r}]"
    return out


def _missing_key(error) -> tuple[str | None, str | None]:
    """(the key the error is about, the key that asked for it) of a keyed error."""
    inst, vv = error.instance, error.validator_value
    if not isinstance(inst, dict):
        return None, None
    if error.validator == "required":
        return next((k for k in vv if k not in inst), None), None
    if error.validator == "dependentRequired":
        for trigger, deps in vv.items():
            if trigger in inst:
                for d in deps:
                    if d not in inst:
                        return d, trigger
        return None, None
    props = error.schema.get("properties", {})
    extra = [k for k in inst if k not in props]
    return (extra[0] if extra else None), None


def _expected(schema: dict) -> str:
    t = schema.get("type")
    t = t[0] if isinstance(t, list) and len(t) == 1 else t
    if isinstance(t, list):
        return " or ".join(_expected({"type": x}) for x in t)
    return {"integer": "an integer", "number": "a number", "boolean": "true or false",
            "object": "a mapping", "array": "a list", "null": "null",
            "string": "a non-empty string" if schema.get("minLength") else "a string"}.get(t, str(t))


def _type_message(error, expected: str) -> str:
    inst = error.instance
    hint = ""
    if "string" in expected and isinstance(inst, (int, float)) and not isinstance(inst, bool):
        expected = expected.replace("string", "string in quotes (YAML read it as a number)", 1)
    if isinstance(inst, str) and any(x in expected for x in ("number", "integer")):
        try:
            float(inst)
            hint = " (remove the quotes)"
        except ValueError:
            pass
    shown = f" {inst!r}" if not isinstance(inst, (dict, list)) else ""
    return f"expected {expected}, got {type_name(inst)}{shown}{hint}"


def _generic(error, ctx: dict) -> str:
    v = error.validator
    if v == "additionalProperties":
        return f"unknown key {ctx['key']}" + (f"; allowed keys: {ctx['allowed']}" if ctx["allowed"] else "")
    if v == "enum":
        return f"{ctx['value']} is not one of {ctx['enum']}"
    if v == "type":
        return _type_message(error, ctx["expected"])
    if v == "required":
        return f"{ctx['key']} is required"
    if v == "dependentRequired":
        return f"required with {ctx['trigger']}"
    if v == "minItems":
        return "must list at least one level" if error.validator_value == 1 else error.message
    if v == "uniqueItems":
        return f"levels must not repeat: {error.instance!r}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{error.instance!r} is out of range ({v} {error.validator_value})"
    if v == "pattern":
        return (f"{error.instance!r} must be a slug (lowercase letters, digits, '.', '_', '-')"
                if "a-z0-9" in error.validator_value else f"{error.instance!r} does not match {error.validator_value}")
    return error.message


def _branch(error):
    """For an anyOf/oneOf whose branches differ by type: the most specific error inside the one branch
    whose type fits the value (None when no branch or several fit)."""
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return None
    by_branch: dict = {}
    for e in error.context:
        by_branch.setdefault(e.relative_schema_path[0], []).append(e)
    misfit = {i for i, errs in by_branch.items()
              if any(e.validator == "type" and not e.path for e in errs)}
    fits = [i for i in range(len(error.validator_value)) if i not in misfit]
    if not misfit or len(fits) != 1 or fits[0] not in by_branch:
        return None
    return first_error(by_branch[fits[0]])


def first_error(errors):
    """The error to report: shallowest path first, then path order, then the schema's order."""
    errors = list(errors)
    return min(errors, key=lambda e: (len(e.absolute_path), path_text(e.absolute_path))) if errors else None


def describe(error) -> tuple[list, str]:
    """(path parts, message) of one jsonschema error, in the house style (see the module docstring)."""
    inner = _branch(error)
    if inner is not None:
        return describe(inner)
    schema = error.schema if isinstance(error.schema, dict) else {}
    parts = list(error.absolute_path)
    key, trigger = _missing_key(error) if error.validator in _KEYED else (None, None)
    if key is not None:
        parts.append(key)
    vv = error.validator_value
    ctx = {"value": repr(error.instance), "type": type_name(error.instance), "limit": str(vv),
           "key": repr(key), "trigger": repr(trigger), "expected": schema.get("x-expected") or _expected(schema),
           "allowed": ", ".join(map(str, schema.get("properties", {}))),
           "enum": ", ".join(map(repr, vv)) if isinstance(vv, list) else "",
           "enum_or": (" or ".join(map(repr, vv)) if isinstance(vv, list) and len(vv) <= 2
                       else "one of " + ", ".join(map(repr, vv)) if isinstance(vv, list) else "")}
    if error.instance is None and "x-null" in schema:
        return parts, schema["x-null"]
    template = (schema.get("x-messages") or {}).get(error.validator)
    if isinstance(template, dict):
        template = template.get(key, template.get("*"))
    if template is None:
        return parts, _generic(error, ctx)
    for name, text in ctx.items():
        template = template.replace("{" + name + "}", text)
    return parts, template


def validate(instance: Any, schema: dict, where: str, prefix: tuple = ()) -> None:
    """Raise the first schema error of ``instance`` as one UserError (``<where>: <path>: <message>``)."""
    import jsonschema

    err = first_error(jsonschema.Draft202012Validator(schema).iter_errors(instance))
    if err is not None:
        parts, message = describe(err)
        path = path_text([*prefix, *parts])
        raise UserError(message, field=f"{where}: {path}" if path else where)
