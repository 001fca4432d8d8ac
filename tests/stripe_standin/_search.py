"""A subset of Stripe's Search query language for ``/v1/<resource>/search``.

Supported: ``field:'value'`` (case-insensitive equality), ``field~'sub'`` (substring),
``field>n``/``<``/``>=``/``<=``, ``-`` negation, ``metadata['key']:'value'``, ``field:null``,
clauses joined by ``AND`` or by ``OR``. Results appear at once (Stripe's index lags ~1 min).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ._core import invalid

_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?
    (?P<field>metadata\[(?P<q1>['"])(?P<mkey>.+?)(?P=q1)\]|[a-z_][a-z0-9_.]*)
    (?P<op>:|~|>=|<=|>|<)
    (?:(?P<q2>['"])(?P<sval>.*?)(?P=q2)|(?P<raw>[^\s'"]+))\s*""",
    re.VERBOSE,
)
_JOIN = re.compile(r"\s*\b(AND|OR)\b\s*")


def compile_query(query: str) -> Callable[[dict[str, Any]], bool]:
    if not query or not query.strip():
        raise invalid("Missing required param: query.", param="query", code="parameter_missing")
    clauses: list[Callable[[dict[str, Any]], bool]] = []
    joins: set[str] = set()
    pos = 0
    while pos < len(query):
        m = _CLAUSE.match(query, pos)
        if not m:
            raise invalid(
                f"Invalid query at position {pos}: {query[pos : pos + 30]!r}. See "
                "https://stripe.com/docs/search#search-query-language",
                param="query",
            )
        clauses.append(_clause(m))
        pos = m.end()
        j = _JOIN.match(query, pos)
        if j and pos < len(query):
            joins.add(j.group(1) or "AND")
            pos = j.end()
    if len(joins) > 1:
        raise invalid("A search query cannot mix AND and OR.", param="query")
    if joins == {"OR"}:
        return lambda obj: any(c(obj) for c in clauses)
    return lambda obj: all(c(obj) for c in clauses)


def _clause(m: re.Match[str]) -> Callable[[dict[str, Any]], bool]:
    neg, op = bool(m.group("neg")), m.group("op")
    mkey = m.group("mkey")
    field = m.group("field")
    quoted = m.group("q2") is not None
    value = m.group("sval") if quoted else m.group("raw")

    def get(obj: dict[str, Any]) -> Any:
        if mkey is not None:
            return (obj.get("metadata") or {}).get(mkey)
        cur: Any = obj
        for part in field.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        return cur

    def test(obj: dict[str, Any]) -> bool:
        actual = get(obj)
        if op == ":":
            if not quoted and value == "null":
                ok = actual is None
            elif isinstance(actual, bool):
                ok = str(actual).lower() == value.lower()
            elif isinstance(actual, int | float) and not quoted:
                ok = actual == float(value)
            else:
                ok = actual is not None and str(actual).lower() == value.lower()
        elif op == "~":
            ok = actual is not None and value.lower() in str(actual).lower()
        else:
            try:
                a, b = float(actual), float(value)
            except (TypeError, ValueError):
                return False
            ok = {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]
        return ok != neg

    return test


def search(engine, kind: str, params: dict[str, Any], url: str) -> dict[str, Any]:
    match = compile_query(params.get("query") or "")
    with engine.lock:
        pool = [o for o in engine.db.get(kind, {}).values() if o["id"] not in engine.hidden]
        pool.sort(key=lambda o: (o.get("created", 0), engine.seq[o["id"]]), reverse=True)
        found = [o for o in pool if match(o)]
        limit = params.get("limit") or 10
        if not 1 <= limit <= 100:
            raise invalid("This value must be between 1 and 100.", param="limit")
        page = params.get("page")
        start = 0
        if page:
            if not page.startswith("page_") or not page[5:].isdigit():
                raise invalid(f"Invalid page: {page}", param="page")
            start = int(page[5:])
        data = found[start : start + limit]
        more = start + limit < len(found)
        return {
            "object": "search_result",
            "data": [engine.render(o) for o in data],
            "has_more": more,
            "next_page": f"page_{start + limit}" if more else None,
            "url": url,
        }
