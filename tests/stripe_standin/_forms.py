"""Decode Stripe's form encoding (``a[b][0][c]=v``, ``expand[]=x``) into nested dicts.

Indexed keys stay dicts with digit keys (``{"0": ...}``) here; the parameter schema decides
whether a value is an array (``line_items``) or a hash whose keys happen to be digits
(``metadata[0]``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from ._core import invalid

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class _Node(dict):
    """A container whose final shape (dict or list) is decided after all keys are seen."""


def _split(key: str) -> list[str]:
    m = _KEY.match(key)
    if not m:
        raise invalid(f"Invalid parameter name: {key}", param=key)
    return [m.group(1), *_PART.findall(m.group(2))]


def parse_form(body: str) -> dict[str, Any]:
    """Parse a form-encoded body or query string the way Stripe's API does."""
    root = _Node()
    for key, value in parse_qsl(body, keep_blank_values=True, encoding="utf-8"):
        parts = _split(key)
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":
                part = str(len(node))  # "[]": append
            if last:
                if isinstance(node.get(part), _Node):
                    raise invalid(f"Invalid hash for parameter {key}", param=key)
                node[part] = value
            else:
                child = node.get(part)
                if child is None:
                    child = node[part] = _Node()
                elif not isinstance(child, _Node):
                    raise invalid(f"Invalid hash for parameter {key}", param=key)
                node = child
    return _plain(root)


def _plain(node: Any) -> Any:
    if isinstance(node, _Node):
        return {k: _plain(v) for k, v in node.items()}
    return node


def is_indexed(value: Any) -> bool:
    """True for ``{"0": ..., "1": ...}``, i.e. what ``x[0]=..&x[1]=..`` decodes to."""
    return isinstance(value, dict) and bool(value) and all(k.isdigit() for k in value)


def listify(value: Any) -> Any:
    """Turn every index-keyed dict into a list, recursively (for schema-less values)."""
    if is_indexed(value):
        return [listify(value[k]) for k in sorted(value, key=int)]
    if isinstance(value, dict):
        return {k: listify(v) for k, v in value.items()}
    return value
