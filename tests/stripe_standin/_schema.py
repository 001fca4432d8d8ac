"""Check and coerce request parameters against Stripe's own parameter lists.

``stripe_params.json`` is generated from the installed stripe-python's request types (see
``_gen_params.py``), so unknown or missing parameters get the same 400 answers as from Stripe.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from ._core import StripeError, format_path, invalid, missing_param
from ._forms import is_indexed, listify

_INT = re.compile(r"^-?\d+$")
_NUM = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)$")


@cache
def _spec() -> dict[str, Any]:
    path = Path(__file__).with_name("stripe_params.json")
    return json.loads(path.read_text(encoding="utf-8"))


def schema_api_version() -> str:
    return _spec()["api_version"]


def validate(endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
    """Return ``params`` coerced (ints, bools, lists); raise 400 like Stripe for bad input."""
    schema = _spec()["params"].get(endpoint)
    if schema is None:
        return listify(params)
    return _object(params, schema, [])


def _object(value: Any, schema: dict[str, Any], path: list[str | int]) -> Any:
    if value == "":
        return ""
    if not isinstance(value, dict) or is_indexed(value):
        raise invalid(f"Invalid object: {format_path(path)}", param=format_path(path) or None)
    out: dict[str, Any] = {}
    for key, sub in value.items():
        if key not in schema or key == "__required__":
            name = format_path([*path, key])
            raise StripeError(
                400,
                f"Received unknown parameter: {name}",
                param=name,
                code="parameter_unknown",
            )
        out[key] = _value(sub, schema[key], [*path, key])
    for key in schema.get("__required__", ()):
        if key not in value:
            raise missing_param(format_path([*path, key]))
    return out


def _value(value: Any, node: Any, path: list[str | int]) -> Any:
    name = format_path(path)
    if isinstance(node, dict):
        return _object(value, node, path)
    if isinstance(node, list):
        if value == "":
            return []
        if not is_indexed(value):
            raise invalid(f"Invalid array: {name}", param=name)
        return [_value(value[k], node[0], [*path, int(k)]) for k in sorted(value, key=int)]
    if node == "any":
        return listify(value)
    if node == "map":
        if value == "":
            return ""
        if not isinstance(value, dict):
            raise invalid(f"Invalid hash: {name}", param=name)
        for k, v in value.items():
            if not isinstance(v, str):
                raise invalid(f"Invalid value for {name}[{k}]: must be a string", param=name)
        return dict(value)
    if isinstance(value, dict):
        raise invalid(f"Invalid {_TYPE_WORD.get(node, 'string')}: {name}", param=name)
    if node == "str":
        return value
    if node == "int":
        if value == "":
            return None
        if not _INT.match(value):
            raise invalid(f"Invalid integer: {value}", param=name, code="parameter_invalid_integer")
        return int(value)
    if node == "bool":
        if value == "":
            return None
        if value not in ("true", "false"):
            raise invalid(f"Invalid boolean: {value}", param=name)
        return value == "true"
    if node == "num":
        if value == "":
            return None
        if not _NUM.match(value):
            raise invalid(f"Invalid decimal: {value}", param=name)
        f = float(value)
        return int(f) if f.is_integer() and "." not in value else f
    return value


_TYPE_WORD = {"str": "string", "int": "integer", "bool": "boolean", "num": "decimal"}
