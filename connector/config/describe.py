"""Configuration mistakes as one line each, naming the key (and the RPT_* variable) at fault.

pydantic's own messages name its internal locations and, for a bad RPT_* JSON value, raise a
SettingsError whose traceback never says which variable; a newcomer needs neither.
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError


def describe_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """One line per problem, each naming the key as it is written in the TOML file."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        key = _dotted(err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = _unknown_key_message(err["loc"], root)
        elif err["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{key}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def describe_environment_error(exc: SettingsError) -> str:
    """Name the RPT_* variable whose value is not JSON (dicts and lists come as JSON there)."""
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith("RPT_") or not value.lstrip().startswith(("{", "[")):
            continue
        try:
            json.loads(value)
        except ValueError as err:
            return f"environment variable {name}: not valid JSON ({err})"
    cause = exc.__cause__ or exc.__context__
    detail = f" ({cause})" if cause is not None else ""
    return f"environment: {exc}{detail}"


def _unknown_key_message(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    message = "unknown key"
    known = _known_keys(root, loc[:-1])
    guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6) if known else []
    if guess:
        message += f"; did you mean {guess[0]!r}?"
    else:
        message += " (check the spelling; see the README's configuration reference)"
    variable = "RPT_" + "__".join(str(part).upper() for part in loc)
    if all(isinstance(part, str) for part in loc) and variable in _upper_environment():
        message += f" (set by environment variable {variable})"
    return message


def _known_keys(root: type[BaseModel], parent: tuple[int | str, ...]) -> list[str]:
    """The keys valid at `parent` in the model, for "did you mean"."""
    model: Any = root
    for part in parent:
        if isinstance(part, int):
            continue  # a list index: the item model is already selected below
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return []
        model = _model_of(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside `X`, `list[X]` or `X | None`, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _upper_environment() -> set[str]:
    return {name.upper() for name in os.environ}


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "constrained-")) or part in {"str", "int", "float"}:
            continue
        else:
            out += f".{part}" if out else part
    return out
