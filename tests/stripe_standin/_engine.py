"""The stand-in's state and Stripe's behaviour: resources, checkout, payments, billing, events.

Every public method runs under ``self.lock`` and returns stored objects (ids not expanded);
``render`` copies an object for an answer and applies ``expand``. Events go to ``on_event``
(the webhook manager) as they are created.
"""

from __future__ import annotations

import calendar
import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._core import (
    StripeError,
    deep,
    invalid,
    missing_param,
    new_coupon_id,
    new_id,
    no_such,
    now,
)
from ._shapes import Shapes

_MISSING = object()

# id prefix -> stored kind, for `expand`
_PREFIX_KIND = {
    "prod": "product",
    "price": "price",
    "cus": "customer",
    "pi": "payment_intent",
    "ch": "charge",
    "re": "refund",
    "sub": "subscription",
    "in": "invoice",
    "inpay": "invoice_payment",
    "promo": "promotion_code",
    "cs": "checkout.session",
    "pm": "payment_method",
    "txn": "balance_transaction",
    "dp": "dispute",
    "di": "discount",
    "evt": "event",
    "we": "webhook_endpoint",
}

_KIND_WORD = {
    "checkout.session": "checkout.session",
    "payment_intent": "payment_intent",
    "promotion_code": "promotion code",
    "webhook_endpoint": "webhook endpoint",
    "invoice_payment": "invoice payment",
    "balance_transaction": "balance transaction",
    "payment_method": "PaymentMethod",
}

_ZERO_DECIMAL = {
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf",
    "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
}  # fmt: skip
_SYMBOL = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}
_INTERVALS = ("day", "week", "month", "year")

# Stripe's test PaymentMethod ids -> the decline they cause (None: the card works).
TEST_PAYMENT_METHODS = {
    "pm_card_visa": None,
    "pm_card_mastercard": None,
    "pm_card_us": None,
    "pm_card_chargeDeclined": "generic_decline",
    "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
    "pm_card_chargeDeclinedExpiredCard": "expired_card",
    "pm_card_chargeDeclinedIncorrectCvc": "incorrect_cvc",
}
_DECLINES = {  # decline code -> (charge failure_code, message)
    "generic_decline": ("card_declined", "Your card was declined."),
    "insufficient_funds": ("card_declined", "Your card has insufficient funds."),
    "expired_card": ("expired_card", "Your card has expired."),
    "incorrect_cvc": ("incorrect_cvc", "Your card's security code is incorrect."),
}


@dataclass
class Ctx:
    """The API request behind a change (``event.request``); ``None`` for automatic changes."""

    request_id: str | None = None
    idempotency_key: str | None = None


def money(amount: int, currency: str) -> str:
    cur = currency.lower()
    sym = _SYMBOL.get(cur, cur.upper() + " ")
    if cur in _ZERO_DECIMAL:
        return f"{sym}{amount}"
    return f"{sym}{amount / 100:.2f}"


def add_interval(ts: int, interval: str, count: int = 1) -> int:
    dt = datetime.fromtimestamp(ts, UTC)
    if interval == "day":
        return ts + 86400 * count
    if interval == "week":
        return ts + 7 * 86400 * count
    months = count * (12 if interval == "year" else 1)
    m0 = dt.month - 1 + months
    year, month = dt.year + m0 // 12, m0 % 12 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return int(dt.replace(year=year, month=month, day=day).timestamp())


def diff(before: Any, after: Any) -> dict[str, Any]:
    """``previous_attributes``: old values of what changed (recursing into hashes)."""
    out: dict[str, Any] = {}
    if not isinstance(before, dict) or not isinstance(after, dict):
        return out
    for key in set(before) | set(after):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict) and old.get("object") != "list":
            out[key] = diff(old, new)
            for k in set(new) - set(old):
                out[key][k] = ""  # Stripe marks keys that did not exist with ""
        else:
            out[key] = deep(old)
    return out


def apply_metadata(obj: dict[str, Any], value: Any, param: str = "metadata") -> None:
    if value is None:
        return
    if value == "":
        obj["metadata"] = {}
        return
    md = dict(obj.get("metadata") or {})
    for k, v in value.items():
        if len(k) > 40:
            raise invalid(
                f"Metadata keys can have up to 40 characters, but you passed in a key that "
                f"is {len(k)} characters. Invalid key: {k}",
                param=f"{param}[{k}]",
            )
        if len(v) > 500:
            raise invalid(
                f"Metadata values can have up to 500 characters, but you passed in a value "
                f"that is {len(v)} characters. Invalid value: {v}",
                param=f"{param}[{k}]",
            )
        if v == "":
            md.pop(k, None)
        else:
            md[k] = v
    if len(md) > 50:
        raise invalid("You can have up to 50 metadata keys.", param=param)
    obj["metadata"] = md


def _blank_to_none(v: Any) -> Any:
    return None if v == "" else v


class Engine:
    def __init__(
        self,
        shapes: Shapes,
        *,
        api_version: str,
        public_url: Callable[[], str],
        clock: Callable[[], float],
        on_event: Callable[[dict[str, Any]], None] = lambda evt: None,
    ) -> None:
        self.shapes = shapes
        self.api_version = api_version
        self.public_url = public_url
        self.clock = clock
        self.on_event = on_event
        self.lock = threading.RLock()
        self.reset()

    # ------------------------------------------------------------------ storage
    def reset(self) -> None:
        with self.lock:
            self.db: dict[str, dict[str, dict[str, Any]]] = {}
            self.seq: dict[str, int] = {}
            self._counter = itertools.count()
            self.deleted: dict[str, dict[str, Any]] = {}
            self.session_items: dict[str, list[dict[str, Any]]] = {}
            self.hidden: set[str] = set()  # inline prices/products (price_data)
            # per checkout session: what completion needs but the object does not show
            self._private: dict[str, dict[str, Any]] = {}
            self.declines: dict[str, str] = {}  # payment method id -> decline code

    def _put(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.db.setdefault(kind, {})[obj["id"]] = obj
        self.seq.setdefault(obj["id"], next(self._counter))
        return obj

    def find(self, kind: str, ident: Any) -> dict[str, Any] | None:
        if not isinstance(ident, str):
            return None
        return self.db.get(kind, {}).get(ident)

    def get(self, kind: str, ident: Any, param: str = "id") -> dict[str, Any]:
        obj = self.find(kind, ident)
        if obj is None:
            raise no_such(_KIND_WORD.get(kind, kind), str(ident), param)
        return obj

    def retrieve(self, kind: str, ident: str) -> dict[str, Any]:
        """GET /v1/<kind>/<id>: a deleted customer answers ``{"deleted": true}``, as in Stripe."""
        with self.lock:
            if kind == "customer" and ident in self.deleted:
                return deep(self.deleted[ident])
            return self.get(kind, ident)

    def lookup(self, ident: str) -> dict[str, Any] | None:
        """Any stored object by id (coupons included)."""
        with self.lock:
            kind = self._kind_of(ident)
            if kind:
                return self.find(kind, ident)
            return self.find("coupon", ident)

    @staticmethod
    def _kind_of(ident: str) -> str | None:
        if ident.startswith("cs_"):
            return "checkout.session"
        if ident.startswith("bps_"):
            return "billing_portal.session"
        return _PREFIX_KIND.get(ident.split("_", 1)[0])

    # ------------------------------------------------------------------ events
    def emit(
        self,
        type_: str,
        obj: dict[str, Any],
        ctx: Ctx | None = None,
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        evt = self.shapes.blank(
            "event",
            id=new_id("evt"),
            api_version=self.api_version,
            created=now(),
            data={"object": deep(obj)},
            pending_webhooks=0,
            request={
                "id": ctx.request_id if ctx else None,
                "idempotency_key": ctx.idempotency_key if ctx else None,
            },
            type=type_,
        )
        if previous:
            evt["data"]["previous_attributes"] = previous
        self._put("event", evt)
        self.on_event(evt)
        return evt

    def _updated(self, type_: str, obj: dict[str, Any], before: dict[str, Any], ctx) -> None:
        prev = diff(before, obj)
        if prev:
            self.emit(type_, obj, ctx, prev)

    # ------------------------------------------------------------------ rendering
    def render(self, obj: dict[str, Any], expand: Iterable[str] = ()) -> dict[str, Any]:
        with self.lock:
            out = deep(obj)
            for i, path in enumerate(expand or ()):
                parts = path.split(".")
                if len(parts) > 4:
                    raise invalid(
                        f"You cannot expand more than 4 levels of a property. Property: {path}",
                        param=f"expand[{i}]",
                    )
                self._expand(out, parts, path, i)
            return out

    def _expand(self, node: Any, parts: list[str], path: str, idx: int) -> None:
        if isinstance(node, list):
            for el in node:
                self._expand(el, parts, path, idx)
            return
        if not isinstance(node, dict):
            return
        field, rest = parts[0], parts[1:]
        if field == "data" and node.get("object") == "list":
            self._expand(node["data"], rest, path, idx)
            return
        included = self._includable(node, field)
        if included is not None:
            node[field] = included
        val = node.get(field, _MISSING)
        if val is _MISSING or field == "id":
            raise invalid(f"This property cannot be expanded ({field}).", param=f"expand[{idx}]")
        if isinstance(val, str):
            resolved = self._resolve(field, val)
            if resolved is None:
                raise invalid(
                    f"This property cannot be expanded ({field}).", param=f"expand[{idx}]"
                )
            node[field] = val = resolved
        elif isinstance(val, list) and val and all(isinstance(v, str) for v in val):
            resolved_list = [self._resolve(field, v) for v in val]
            if any(r is None for r in resolved_list):
                raise invalid(
                    f"This property cannot be expanded ({field}).", param=f"expand[{idx}]"
                )
            node[field] = val = resolved_list
        if rest:
            self._expand(val, rest, path, idx)

    def _resolve(self, field: str, ident: str) -> dict[str, Any] | None:
        if field == "coupon":
            obj = self.find("coupon", ident)
        else:
            kind = self._kind_of(ident)
            if kind is None:
                return None
            obj = self.find(kind, ident) or self.deleted.get(ident)
        return deep(obj) if obj is not None else None

    def _includable(self, node: dict[str, Any], field: str) -> dict[str, Any] | None:
        obj_type = node.get("object")
        if obj_type == "checkout.session" and field == "line_items":
            items = self.session_items.get(node["id"], [])
            return self.list_object(items, f"/v1/checkout/sessions/{node['id']}/line_items")
        if obj_type == "invoice" and field == "payments":
            pays = [p for p in self.db.get("invoice_payment", {}).values()]
            pays = [p for p in pays if p["invoice"] == node["id"]]
            return self.list_object(pays, f"/v1/invoice_payments?invoice={node['id']}")
        if obj_type == "charge" and field == "refunds":
            refs = [r for r in self.db.get("refund", {}).values() if r["charge"] == node["id"]]
            refs.sort(key=lambda r: (r["created"], self.seq[r["id"]]), reverse=True)
            return self.list_object(refs, f"/v1/charges/{node['id']}/refunds")
        return None

    @staticmethod
    def list_object(items: list[dict[str, Any]], url: str, has_more: bool = False):
        return {"object": "list", "data": deep(items), "has_more": has_more, "url": url}

    # ------------------------------------------------------------------ lists
    def list(
        self,
        kind: str,
        params: dict[str, Any],
        url: str,
        match: Callable[[dict[str, Any]], bool] = lambda o: True,
        items: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            pool = items if items is not None else list(self.db.get(kind, {}).values())
            if items is None:
                pool = [o for o in pool if o["id"] not in self.hidden]
                pool.sort(key=lambda o: (o.get("created", 0), self.seq[o["id"]]), reverse=True)
            created = params.get("created")
            pool = [o for o in pool if match(o) and _created_ok(o, created)]
            limit = params.get("limit")
            if limit is None:
                limit = 10
            if not 1 <= limit <= 100:
                raise invalid(
                    f"This value must be less than or equal to 100 (it currently is '{limit}')."
                    if limit > 100
                    else f"This value must be greater than or equal to 1 (it currently is "
                    f"'{limit}').",
                    param="limit",
                )
            ids = [o["id"] for o in pool]
            after, before = params.get("starting_after"), params.get("ending_before")
            if after:
                if after not in ids:
                    raise no_such(_KIND_WORD.get(kind, kind), after, "starting_after")
                page = pool[ids.index(after) + 1 :]
                has_more = len(page) > limit
                page = page[:limit]
            elif before:
                if before not in ids:
                    raise no_such(_KIND_WORD.get(kind, kind), before, "ending_before")
                page = pool[: ids.index(before)]
                has_more = len(page) > limit
                page = page[-limit:]
            else:
                has_more = len(pool) > limit
                page = pool[:limit]
            return self.list_object(page, url, has_more)

    # ------------------------------------------------------------------ products
    def create_product(self, p: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            pid = p.get("id") or new_id("prod")
            if self.find("product", pid):
                raise invalid(
                    f"Product already exists: {pid}", param="id", code="resource_already_exists"
                )
            ts = now()
            prod = self.shapes.blank("product", id=pid, created=ts, updated=ts, name=p["name"])
            self._product_fields(prod, p)
            self._put("product", prod)
            self.emit("product.created", prod, ctx)
            if p.get("default_price_data"):
                dpd = dict(p["default_price_data"])
                dpd["product"] = pid
                price = self.create_price(dpd, ctx, param_prefix="default_price_data")
                before = deep(prod)
                prod["default_price"] = price["id"]
                self._updated("product.updated", prod, before, ctx)
            return prod

    def _product_fields(self, prod: dict[str, Any], p: dict[str, Any]) -> None:
        for key in (
            "name",
            "active",
            "description",
            "images",
            "marketing_features",
            "package_dimensions",
            "shippable",
            "statement_descriptor",
            "tax_code",
            "unit_label",
            "url",
        ):
            if key in p and p[key] is not None:
                prod[key] = _blank_to_none(p[key])
        if prod.get("images") is None:
            prod["images"] = []
        if prod.get("marketing_features") is None:
            prod["marketing_features"] = []
        apply_metadata(prod, p.get("metadata"))

    def update_product(self, pid: str, p: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            prod = self.get("product", pid)
            before = deep(prod)
            self._product_fields(prod, p)
            if "default_price" in p:
                dp = _blank_to_none(p["default_price"])
                if dp is not None:
                    price = self.get("price", dp, "default_price")
                    if price["product"] != pid:
                        raise invalid(
                            "The default price must belong to this product.",
                            param="default_price",
                        )
                prod["default_price"] = dp
            if prod != before:
                prod["updated"] = now()
                self._updated("product.updated", prod, before, ctx)
            return prod

    def delete_product(self, pid: str, ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            prod = self.get("product", pid)
            if any(pr["product"] == pid for pr in self.db.get("price", {}).values()):
                raise invalid(
                    "This product cannot be deleted because it has one or more user-created prices."
                )
            return self._delete("product", prod, ctx)

    def _delete(self, kind: str, obj: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        del self.db[kind][obj["id"]]
        stub = {"id": obj["id"], "object": obj["object"], "deleted": True}
        self.deleted[obj["id"]] = stub
        self.emit(f"{kind}.deleted", obj, ctx)
        return stub

    # ------------------------------------------------------------------ prices
    def create_price(
        self, p: dict[str, Any], ctx: Ctx | None, *, param_prefix: str = "", hidden: bool = False
    ) -> dict[str, Any]:
        def name(k: str) -> str:
            return f"{param_prefix}[{k}]" if param_prefix else k

        with self.lock:
            if p.get("product"):
                prod = self.get("product", p["product"], name("product"))
            elif p.get("product_data"):
                pd = dict(p["product_data"])
                prod = self.create_product(pd, ctx)
                if hidden:
                    self.hidden.add(prod["id"])
            else:
                raise missing_param(name("product"))
            currency = p["currency"].lower()
            recurring = p.get("recurring") or None
            if recurring:
                interval = recurring.get("interval")
                if interval not in _INTERVALS:
                    raise invalid(
                        "Invalid recurring[interval]: must be one of day, month, week, or year",
                        param=name("recurring[interval]"),
                    )
                recurring = {
                    "interval": interval,
                    "interval_count": recurring.get("interval_count") or 1,
                    "meter": recurring.get("meter"),
                    "usage_type": recurring.get("usage_type") or "licensed",
                    "trial_period_days": recurring.get("trial_period_days"),
                }
            amount = p.get("unit_amount")
            decimal = p.get("unit_amount_decimal")
            custom = p.get("custom_unit_amount")
            scheme = p.get("billing_scheme") or "per_unit"
            if amount is None and decimal is None and not custom and scheme != "tiered":
                raise missing_param(name("unit_amount"))
            if amount is not None and amount < 0:
                raise invalid(
                    "This value must be greater than or equal to 0.", param=name("unit_amount")
                )
            if amount is None and decimal is not None:
                d = float(decimal)
                amount = int(d) if d.is_integer() else None
            price = self.shapes.blank(
                "price",
                id=new_id("price"),
                created=now(),
                currency=currency,
                product=prod["id"],
                active=True if p.get("active") is None else p["active"],
                billing_scheme=scheme,
                recurring=recurring,
                type="recurring" if recurring else "one_time",
                unit_amount=amount,
                unit_amount_decimal=(
                    str(decimal)
                    if decimal is not None
                    else (None if amount is None else str(amount))
                ),
                nickname=p.get("nickname"),
                tax_behavior=p.get("tax_behavior") or "unspecified",
                tiers_mode=p.get("tiers_mode"),
            )
            if custom:
                price["custom_unit_amount"] = {
                    "maximum": custom.get("maximum"),
                    "minimum": custom.get("minimum"),
                    "preset": custom.get("preset"),
                }
            if p.get("transform_quantity"):
                price["transform_quantity"] = p["transform_quantity"]
            apply_metadata(price, p.get("metadata"))
            self._set_lookup_key(price, p.get("lookup_key"), p.get("transfer_lookup_key"), ctx)
            self._put("price", price)
            if hidden:
                self.hidden.add(price["id"])
            self.emit("price.created", price, ctx)
            return price

    def _set_lookup_key(self, price, key, transfer, ctx) -> None:
        if key is None:
            return
        key = _blank_to_none(key)
        if key is not None:
            for other in self.db.get("price", {}).values():
                if other["id"] != price["id"] and other.get("lookup_key") == key:
                    if not transfer:
                        raise invalid(
                            f"A price ({other['id']}) already uses that lookup key.",
                            param="lookup_key",
                        )
                    before = deep(other)
                    other["lookup_key"] = None
                    self._updated("price.updated", other, before, ctx)
        price["lookup_key"] = key

    def update_price(self, pid: str, p: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            price = self.get("price", pid)
            before = deep(price)
            if p.get("active") is not None:
                price["active"] = p["active"]
            for key in ("nickname", "tax_behavior"):
                if key in p:
                    price[key] = _blank_to_none(p[key])
            apply_metadata(price, p.get("metadata"))
            if "lookup_key" in p:
                self._set_lookup_key(price, p["lookup_key"], p.get("transfer_lookup_key"), ctx)
            self._updated("price.updated", price, before, ctx)
            return price

    def list_prices(self, p: dict[str, Any], url: str) -> dict[str, Any]:
        keys = p.get("lookup_keys")
        rec = p.get("recurring") or {}

        def match(o):
            return (
                (p.get("active") is None or o["active"] == p["active"])
                and (not p.get("currency") or o["currency"] == p["currency"].lower())
                and (not p.get("product") or o["product"] == p["product"])
                and (not p.get("type") or o["type"] == p["type"])
                and (not keys or o.get("lookup_key") in keys)
                and (
                    not rec
                    or (
                        o["recurring"] is not None
                        and all(o["recurring"].get(k) == v for k, v in rec.items())
                    )
                )
            )

        return self.list("price", p, url, match)

    # ------------------------------------------------------------------ customers
    _CUSTOMER_FIELDS = (
        "address",
        "balance",
        "description",
        "email",
        "name",
        "phone",
        "preferred_locales",
        "shipping",
        "tax_exempt",
        "invoice_prefix",
        "next_invoice_sequence",
    )

    def create_customer(self, p: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            cus = self.shapes.blank(
                "customer",
                id=new_id("cus"),
                created=now(),
                invoice_prefix=new_coupon_id(),
            )
            self._customer_fields(cus, p)
            self._put("customer", cus)
            self.emit("customer.created", cus, ctx)
            if p.get("payment_method"):
                self.payment_method_for(p["payment_method"], cus, "payment_method", ctx)
            return cus

    def _customer_fields(self, cus: dict[str, Any], p: dict[str, Any]) -> None:
        for key in self._CUSTOMER_FIELDS:
            if key in p and p[key] is not None:
                cus[key] = _blank_to_none(p[key])
        if p.get("invoice_settings"):
            cus["invoice_settings"].update(
                {k: _blank_to_none(v) for k, v in p["invoice_settings"].items()}
            )
        apply_metadata(cus, p.get("metadata"))

    def update_customer(self, cid: str, p: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            cus = self.get("customer", cid)
            before = deep(cus)
            self._customer_fields(cus, p)
            self._updated("customer.updated", cus, before, ctx)
            return cus

    def delete_customer(self, cid: str, ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            cus = self.get("customer", cid)
            for sub in list(self.db.get("subscription", {}).values()):
                if sub["customer"] == cid and sub["status"] not in (
                    "canceled",
                    "incomplete_expired",
                ):
                    self.cancel_subscription(sub["id"], {}, ctx)
            return self._delete("customer", cus, ctx)

    def _customer_for_checkout(self, email: str | None, name: str | None, ctx) -> dict:
        return self.create_customer({"email": email, "name": name}, ctx)

    # ------------------------------------------------------------------ coupons / promos
    def create_coupon(self, p: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            cid = p.get("id") or new_coupon_id()
            if self.find("coupon", cid):
                raise invalid("Coupon already exists.", param="id", code="resource_already_exists")
            pct, off = p.get("percent_off"), p.get("amount_off")
            if (pct is None) == (off is None):
                raise invalid(
                    "You must pass exactly one of `percent_off` or `amount_off`.",
                    param="percent_off",
                )
            if pct is not None and not 0 < pct <= 100:
                raise invalid("Invalid percent_off: must be between 0 and 100", param="percent_off")
            if off is not None and not p.get("currency"):
                raise missing_param("currency")
            duration = p.get("duration") or "once"
            if duration not in ("once", "repeating", "forever"):
                raise invalid(
                    "Invalid duration: must be one of forever, once, or repeating",
                    param="duration",
                )
            if duration == "repeating" and not p.get("duration_in_months"):
                raise missing_param("duration_in_months")
            coupon = self.shapes.blank(
                "coupon",
                id=cid,
                created=now(),
                percent_off=pct,
                amount_off=off,
                currency=(p.get("currency") or "").lower() or None,
                duration=duration,
                duration_in_months=p.get("duration_in_months"),
                max_redemptions=p.get("max_redemptions"),
                name=p.get("name"),
                redeem_by=p.get("redeem_by"),
            )
            if p.get("applies_to"):
                coupon["applies_to"] = {"products": list(p["applies_to"].get("products") or [])}
            apply_metadata(coupon, p.get("metadata"))
            self._put("coupon", coupon)
            self.emit("coupon.created", coupon, ctx)
            return coupon

    def update_coupon(self, cid: str, p: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            coupon = self.get("coupon", cid)
            before = deep(coupon)
            if "name" in p:
                coupon["name"] = _blank_to_none(p["name"])
            apply_metadata(coupon, p.get("metadata"))
            self._updated("coupon.updated", coupon, before, ctx)
            return coupon

    def delete_coupon(self, cid: str, ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            return self._delete("coupon", self.get("coupon", cid), ctx)

    def create_promotion_code(self, p: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            promo_p = p["promotion"]
            if promo_p.get("type") != "coupon":
                raise invalid("Invalid promotion[type]: must be coupon", param="promotion[type]")
            if not promo_p.get("coupon"):
                raise missing_param("promotion[coupon]")
            coupon = self.get("coupon", promo_p["coupon"], "promotion[coupon]")
            code = p.get("code") or new_coupon_id()
            for other in self.db.get("promotion_code", {}).values():
                if other["active"] and other["code"].lower() == code.lower():
                    raise invalid(
                        f"An active promotion code with `code: {code}` already exists.",
                        param="code",
                    )
            promo = self.shapes.blank(
                "promotion_code",
                id=new_id("promo"),
                code=code,
                created=now(),
                active=True if p.get("active") is None else p["active"],
                customer=p.get("customer"),
                expires_at=p.get("expires_at"),
                max_redemptions=p.get("max_redemptions"),
                promotion={"coupon": coupon["id"], "type": "coupon"},
            )
            if p.get("restrictions"):
                promo["restrictions"].update(
                    {k: v for k, v in p["restrictions"].items() if k != "currency_options"}
                )
            apply_metadata(promo, p.get("metadata"))
            self._put("promotion_code", promo)
            self.emit("promotion_code.created", promo, ctx)
            return promo

    def update_promotion_code(self, pid: str, p: dict[str, Any], ctx) -> dict[str, Any]:
        with self.lock:
            promo = self.get("promotion_code", pid)
            before = deep(promo)
            if p.get("active") is not None:
                promo["active"] = p["active"]
            apply_metadata(promo, p.get("metadata"))
            self._updated("promotion_code.updated", promo, before, ctx)
            return promo

    def find_promotion_code(self, code_or_id: str) -> dict[str, Any] | None:
        with self.lock:
            if code_or_id.startswith("promo_"):
                return self.find("promotion_code", code_or_id)
            matches = [
                pc
                for pc in self.db.get("promotion_code", {}).values()
                if pc["code"].lower() == code_or_id.lower()
            ]
            matches.sort(key=lambda pc: not pc["active"])
            return matches[0] if matches else None

    def _check_promotion(self, promo: dict[str, Any], subtotal: int, currency: str, param: str):
        coupon = self.find("coupon", promo["promotion"]["coupon"])
        ts = now()
        bad = (
            not promo["active"]
            or coupon is None
            or not coupon["valid"]
            or (promo["expires_at"] and promo["expires_at"] <= ts)
            or (promo["max_redemptions"] and promo["times_redeemed"] >= promo["max_redemptions"])
        )
        if bad:
            raise invalid(f"This promotion code cannot be redeemed: {promo['code']}", param=param)
        r = promo["restrictions"]
        if r.get("minimum_amount") and subtotal < r["minimum_amount"]:
            raise invalid(
                f"This promotion code requires a minimum amount of "
                f"{money(r['minimum_amount'], r.get('minimum_amount_currency') or currency)}.",
                param=param,
            )
        return coupon

    def _check_coupon(self, coupon: dict[str, Any], param: str) -> None:
        ts = now()
        if (
            not coupon["valid"]
            or (coupon["redeem_by"] and coupon["redeem_by"] <= ts)
            or (coupon["max_redemptions"] and coupon["times_redeemed"] >= coupon["max_redemptions"])
        ):
            raise invalid(f"Coupon {coupon['id']} is no longer valid.", param=param)

    @staticmethod
    def _redeem(coupon: dict[str, Any], promo: dict[str, Any] | None) -> None:
        # Redemption counters change without events, as in Stripe.
        coupon["times_redeemed"] += 1
        if coupon["max_redemptions"] and coupon["times_redeemed"] >= coupon["max_redemptions"]:
            coupon["valid"] = False
        if promo is not None:
            promo["times_redeemed"] += 1

    @staticmethod
    def discount_amount(coupon: dict[str, Any], amount: int) -> int:
        if coupon.get("percent_off") is not None:
            return min(amount, round(amount * float(coupon["percent_off"]) / 100))
        return min(amount, int(coupon.get("amount_off") or 0))

    # ------------------------------------------------------------------ checkout
    def create_checkout_session(self, p: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            base_url = self.public_url()
            mode = p.get("mode")
            if not mode:
                raise missing_param("mode")
            if mode not in ("payment", "setup", "subscription"):
                raise invalid(
                    "Invalid mode: must be one of payment, setup, or subscription", param="mode"
                )
            if mode == "setup":
                raise invalid(
                    "The Stripe stand-in does not implement `setup` mode Checkout Sessions.",
                    param="mode",
                )
            if p.get("customer") and p.get("customer_email"):
                raise invalid(
                    "You may only specify one of these parameters: customer, customer_email.",
                    param="customer_email",
                )
            if p.get("allow_promotion_codes") and p.get("discounts"):
                raise invalid(
                    "You may only specify one of these parameters: allow_promotion_codes, "
                    "discounts.",
                    param="discounts",
                )
            if mode != "payment" and p.get("payment_intent_data"):
                raise invalid(
                    f"You can not pass `payment_intent_data` in `{mode}` mode.",
                    param="payment_intent_data",
                )
            if mode != "subscription" and p.get("subscription_data"):
                raise invalid(
                    f"You can not pass `subscription_data` in `{mode}` mode.",
                    param="subscription_data",
                )
            if mode == "payment" and p.get("customer_creation") not in (
                None,
                "always",
                "if_required",
            ):
                raise invalid(
                    "Invalid customer_creation: must be one of always or if_required",
                    param="customer_creation",
                )
            ui_mode = p.get("ui_mode") or "hosted_page"
            if ui_mode not in ("hosted_page", "embedded_page", "elements", "form"):
                raise invalid(
                    "Invalid ui_mode: must be one of elements, embedded_page, form, or hosted_page",
                    param="ui_mode",
                )
            if ui_mode != "hosted_page" and p.get("success_url"):
                raise invalid(
                    f"You cannot pass `success_url` when `ui_mode` is `{ui_mode}`.",
                    param="success_url",
                )
            customer = None
            if p.get("customer"):
                customer = self.get("customer", p["customer"], "customer")
            line_items = p.get("line_items") or []
            if not line_items:
                raise missing_param("line_items")
            sid = new_id("cs_test")
            items, currency = self._checkout_items(sid, line_items, mode, ctx)
            if p.get("currency") and p["currency"].lower() != currency:
                raise invalid(
                    f"The currency {p['currency']} does not match the line items' currency "
                    f"{currency}.",
                    param="currency",
                )
            ts = now()
            expires_at = p.get("expires_at") or ts + 24 * 3600
            if not ts + 30 * 60 - 5 <= expires_at <= ts + 24 * 3600 + 5:
                raise invalid(
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                    "Checkout Session creation.",
                    param="expires_at",
                )
            session = self.shapes.blank(
                "checkout.session",
                id=sid,
                created=ts,
                expires_at=expires_at,
                mode=mode,
                currency=currency,
                status="open",
                payment_status="unpaid",
                cancel_url=p.get("cancel_url"),
                success_url=p.get("success_url"),
                return_url=p.get("return_url"),
                client_reference_id=p.get("client_reference_id"),
                customer=customer["id"] if customer else None,
                customer_email=p.get("customer_email"),
                customer_creation=(
                    (p.get("customer_creation") or "if_required") if mode == "payment" else None
                ),
                allow_promotion_codes=p.get("allow_promotion_codes"),
                locale=p.get("locale"),
                submit_type=p.get("submit_type"),
                billing_address_collection=p.get("billing_address_collection"),
                ui_mode=ui_mode,
                url=f"{base_url}/pay/{sid}" if ui_mode == "hosted_page" else None,
                client_secret=(
                    None if ui_mode == "hosted_page" else f"{sid}_secret_{new_id('x')[2:]}"
                ),
            )
            if ui_mode != "hosted_page":
                session["redirect_on_completion"] = p.get("redirect_on_completion") or "always"
            if mode == "payment":
                ic = p.get("invoice_creation") or {}
                session["invoice_creation"] = {
                    "enabled": bool(ic.get("enabled")),
                    "invoice_data": {
                        "account_tax_ids": None,
                        "custom_fields": None,
                        "description": None,
                        "footer": None,
                        "issuer": None,
                        "metadata": {},
                        "rendering_options": None,
                    },
                }
            if customer is not None:
                session["saved_payment_method_options"] = {
                    "allow_redisplay_filters": ["always"],
                    "payment_method_remove": "disabled",
                    "payment_method_save": None,
                }
            if p.get("phone_number_collection"):
                session["phone_number_collection"] = {
                    "enabled": bool(p["phone_number_collection"].get("enabled"))
                }
            if (p.get("automatic_tax") or {}).get("enabled"):
                session["automatic_tax"] = {
                    "enabled": True,
                    "liability": {"type": "self"},
                    "status": "requires_location_inputs",
                    "provider": "stripe",
                }
            apply_metadata(session, p.get("metadata"))
            # kept (not part of the session object) for completion time
            session_private = {
                "payment_intent_data": p.get("payment_intent_data") or {},
                "subscription_data": p.get("subscription_data") or {},
                "coupon": None,
                "promotion_code": None,
            }
            self._private[sid] = session_private
            for i, d in enumerate(p.get("discounts") or []):
                if d.get("promotion_code"):
                    promo = self.get(
                        "promotion_code", d["promotion_code"], f"discounts[{i}][promotion_code]"
                    )
                    subtotal = sum(it["amount_subtotal"] for it in items)
                    coupon = self._check_promotion(
                        promo, subtotal, currency, f"discounts[{i}][promotion_code]"
                    )
                    session_private["promotion_code"] = promo["id"]
                elif d.get("coupon"):
                    coupon = self.get("coupon", d["coupon"], f"discounts[{i}][coupon]")
                    self._check_coupon(coupon, f"discounts[{i}][coupon]")
                else:
                    continue
                session_private["coupon"] = coupon["id"]
                session["discounts"] = [
                    {
                        "coupon": d.get("coupon"),
                        "promotion_code": d.get("promotion_code"),
                    }
                ]
            self.session_items[sid] = items
            self._price_session(session)
            self._put("checkout.session", session)
            return session

    def _checkout_items(self, sid, line_items, mode, ctx):
        items = []
        currency = None
        recurring = 0
        for i, li in enumerate(line_items):
            param = f"line_items[{i}]"
            if li.get("price"):
                price = self.get("price", li["price"], f"{param}[price]")
                if not price["active"]:
                    raise invalid(
                        "The price specified is inactive. This field only accepts active prices.",
                        param=f"{param}[price]",
                    )
            elif li.get("price_data"):
                price = self.create_price(
                    dict(li["price_data"]), ctx, param_prefix=f"{param}[price_data]", hidden=True
                )
                price["active"] = False
            else:
                raise missing_param(f"{param}[price]")
            if li.get("quantity") is None:
                raise invalid(
                    f"Quantity is required. Add `quantity` to `{param}`",
                    param=f"{param}[quantity]",
                )
            qty = li["quantity"]
            if qty < 1:
                raise invalid(
                    "This value must be greater than or equal to 1.", param=f"{param}[quantity]"
                )
            if price["unit_amount"] is None:
                raise invalid(
                    "The Stripe stand-in supports only prices with a `unit_amount`.",
                    param=f"{param}[price]",
                )
            if currency is None:
                currency = price["currency"]
            elif price["currency"] != currency:
                raise invalid(
                    f"{param}[price] has a currency of {price['currency']}, which does not "
                    f"match the session's currency of {currency}.",
                    param=f"{param}[price]",
                )
            if price["type"] == "recurring":
                recurring += 1
                if mode == "payment":
                    raise invalid(
                        "You specified `payment` mode but passed a recurring price. Either "
                        "switch to `subscription` mode or use only one-time prices.",
                        param=f"{param}[price]",
                    )
            product = self.find("product", price["product"]) or {}
            amount = price["unit_amount"] * qty
            item = self.shapes.blank(
                "item",
                id=new_id("li"),
                amount_discount=0,
                amount_subtotal=amount,
                amount_tax=0,
                amount_total=amount,
                currency=price["currency"],
                description=product.get("name"),
                price=deep(price),
                quantity=qty,
                metadata=dict(li.get("metadata") or {}),
                adjustable_quantity=None,
            )
            item["discounts"] = []
            item["taxes"] = []
            items.append(item)
        if mode == "subscription" and not recurring:
            raise invalid(
                "You must provide at least one recurring price in `subscription` mode when "
                "using prices.",
                param="line_items",
            )
        return items, currency

    def _price_session(self, session: dict[str, Any]) -> None:
        """Compute line-item and session amounts, including a coupon if one applies."""
        private = self._private.get(session["id"], {})
        items = self.session_items[session["id"]]
        coupon = self.find("coupon", private.get("coupon"))
        trial = session["mode"] == "subscription" and self._trial_end(private) is not None
        eligible = items
        if coupon and coupon.get("applies_to"):
            prods = set(coupon["applies_to"]["products"])
            eligible = [it for it in items if it["price"]["product"] in prods]
        base = sum(it["amount_subtotal"] for it in eligible)
        total_discount = self.discount_amount(coupon, base) if coupon else 0
        remaining = total_discount
        for n, it in enumerate(items):
            share = 0
            if coupon and it in eligible and base:
                if n == len(items) - 1 or it is eligible[-1]:
                    share = remaining
                else:
                    share = total_discount * it["amount_subtotal"] // base
                remaining -= share
            it["amount_discount"] = share
            it["amount_total"] = it["amount_subtotal"] - share
            it["discounts"] = (
                [{"amount": share, "discount": self._discount_stub(coupon, session)}]
                if share
                else []
            )
        subtotal = sum(it["amount_subtotal"] for it in items)
        if trial:
            one_time = [it for it in items if it["price"]["type"] == "one_time"]
            subtotal_due = sum(it["amount_subtotal"] for it in one_time)
            session["amount_subtotal"] = subtotal_due
            disc = sum(it["amount_discount"] for it in one_time)
            session["amount_total"] = subtotal_due - disc
            session["total_details"]["amount_discount"] = disc
        else:
            session["amount_subtotal"] = subtotal
            session["amount_total"] = subtotal - total_discount
            session["total_details"]["amount_discount"] = total_discount

    def _discount_stub(self, coupon: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
        private = self._private.get(session["id"], {})
        return self.shapes.blank(
            "discount",
            id=f"di_{session['id'][-24:]}",
            checkout_session=session["id"],
            customer=session.get("customer"),
            end=None,
            invoice=None,
            invoice_item=None,
            promotion_code=private.get("promotion_code"),
            start=session["created"],
            subscription=None,
            subscription_item=None,
            source={"coupon": coupon["id"], "type": "coupon"},
            customer_account=None,
        )

    @staticmethod
    def _trial_end(private: dict[str, Any]) -> int | None:
        sd = private.get("subscription_data") or {}
        if sd.get("trial_end"):
            return int(sd["trial_end"])
        if sd.get("trial_period_days"):
            return now() + int(sd["trial_period_days"]) * 86400
        return None

    def session(self, sid: str, param: str = "session") -> dict[str, Any]:
        with self.lock:
            s = self.get("checkout.session", sid, param)
            self._maybe_expire(s)
            return s

    def _maybe_expire(self, s: dict[str, Any], ctx: Ctx | None = None) -> None:
        if s["status"] == "open" and s["expires_at"] <= self.clock():
            self._expire(s, ctx)

    def expire_due_sessions(self) -> None:
        with self.lock:
            for s in list(self.db.get("checkout.session", {}).values()):
                self._maybe_expire(s)

    def expire_checkout_session(self, sid: str, ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            s = self.session(sid)
            if s["status"] != "open":
                raise invalid(
                    'Only Checkout Sessions with a status in ["open"] can be expired. This '
                    f'Checkout Session has a status of "{s["status"]}".',
                    param="session",
                )
            self._expire(s, ctx)
            return s

    def _expire(self, s: dict[str, Any], ctx: Ctx | None) -> None:
        s["status"] = "expired"
        s["url"] = None
        self.emit("checkout.session.expired", s, ctx)

    def update_checkout_session(self, sid: str, p: dict[str, Any], ctx) -> dict[str, Any]:
        with self.lock:
            s = self.session(sid)
            unsupported = set(p) - {"metadata", "expand"}
            if unsupported:
                raise invalid(
                    f"The Stripe stand-in does not support updating "
                    f"`{sorted(unsupported)[0]}` on a Checkout Session.",
                    param=sorted(unsupported)[0],
                )
            apply_metadata(s, p.get("metadata"))
            return s

    def list_checkout_sessions(self, p: dict[str, Any], url: str) -> dict[str, Any]:
        self.expire_due_sessions()
        email = (p.get("customer_details") or {}).get("email")

        def match(s):
            return all(
                not p.get(k) or s.get(k) == p[k]
                for k in ("customer", "payment_intent", "subscription", "status", "payment_link")
            ) and (not email or (s.get("customer_details") or {}).get("email") == email)

        return self.list("checkout.session", p, url, match)

    def list_line_items(self, sid: str, p: dict[str, Any], url: str) -> dict[str, Any]:
        with self.lock:
            self.session(sid)
            return self.list("item", p, url, items=list(self.session_items[sid]))

    # ------------------------------------------------------------------ completion
    def complete_checkout(
        self,
        sid: str,
        *,
        outcome: str = "paid",
        promotion_code: str | None = None,
        email: str | None = None,
        name: str | None = None,
        ctx: Ctx | None = None,
    ) -> dict[str, Any]:
        """The buyer pays on the hosted page (or the async payment settles)."""
        if outcome not in ("paid", "async_pending", "async_succeeded", "async_failed"):
            raise invalid(
                "outcome must be one of paid, async_pending, async_succeeded, async_failed",
                param="outcome",
            )
        with self.lock:
            s = self.session(sid)
            private = self._private.setdefault(sid, {})
            if s["status"] == "complete":
                if outcome in ("async_succeeded", "async_failed") and private.get("async_pending"):
                    self._settle_async(s, outcome == "async_succeeded", ctx)
                    return s
                raise invalid(
                    "This Checkout Session is already complete.", param="session", code=None
                )
            if s["status"] != "open":
                raise invalid(
                    f"This Checkout Session is {s['status']} and can no longer be paid.",
                    param="session",
                )
            if promotion_code:
                if not s.get("allow_promotion_codes"):
                    raise invalid(
                        "This Checkout Session does not allow promotion codes.",
                        param="promotion_code",
                    )
                promo = self.find_promotion_code(promotion_code)
                if promo is None:
                    raise invalid(
                        f"No such promotion code: '{promotion_code}'", param="promotion_code"
                    )
                subtotal = sum(it["amount_subtotal"] for it in self.session_items[sid])
                coupon = self._check_promotion(promo, subtotal, s["currency"], "promotion_code")
                private["coupon"] = coupon["id"]
                private["promotion_code"] = promo["id"]
                s["discounts"] = [{"coupon": None, "promotion_code": promo["id"]}]
                self._price_session(s)
            asynchronous = outcome != "paid"
            customer = self.find("customer", s.get("customer"))
            email = email or s.get("customer_email") or (customer or {}).get("email")
            email = email or "buyer@example.com"
            name = name or (customer or {}).get("name") or "Test Buyer"
            if customer is None and (
                s["mode"] == "subscription" or s.get("customer_creation") == "always"
            ):
                customer = self._customer_for_checkout(email, name, ctx)
            pm = self._payment_method(customer, email, name, sepa=asynchronous, ctx=ctx)
            if private.get("coupon"):
                self._redeem(
                    self.find("coupon", private["coupon"]),
                    self.find("promotion_code", private.get("promotion_code")),
                )
            s["customer"] = customer["id"] if customer else None
            s["customer_details"] = {
                "address": {
                    "city": None,
                    "country": "DE" if asynchronous else "US",
                    "line1": None,
                    "line2": None,
                    "postal_code": None if asynchronous else "10001",
                    "state": None,
                },
                "email": email,
                "name": name,
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
                "business_name": None,
                "individual_name": None,
            }
            s["collected_information"] = {
                "business_name": None,
                "individual_name": None,
                "shipping_details": None,
            }
            if s["mode"] == "payment":
                self._complete_payment_mode(s, private, customer, pm, asynchronous, ctx)
            else:
                self._complete_subscription_mode(s, private, customer, pm, asynchronous, ctx)
            s["status"] = "complete"
            s["url"] = None
            self.emit("checkout.session.completed", s, ctx)
            if outcome in ("async_succeeded", "async_failed"):
                self._settle_async(s, outcome == "async_succeeded", ctx)
            return s

    def _payment_method(self, customer, email, name, *, sepa: bool, ctx) -> dict[str, Any]:
        pm = self.shapes.blank(
            "payment_method",
            id=new_id("pm"),
            created=now(),
            customer=customer["id"] if customer else None,
            allow_redisplay="unspecified",
        )
        pm["billing_details"].update({"email": email, "name": name})
        if sepa:
            pm.pop("card", None)
            pm["type"] = "sepa_debit"
            pm["sepa_debit"] = {
                "bank_code": "37040044",
                "branch_code": "",
                "country": "DE",
                "fingerprint": "qGBAQ6dEVLJVfn4w",
                "generated_from": {"charge": None, "setup_attempt": None},
                "last4": "3000",
            }
        else:
            card = pm["card"]
            card["generated_from"] = None
            card["wallet"] = None
            card["exp_year"] = datetime.now(UTC).year + 3
        self._put("payment_method", pm)
        if customer:
            self.emit("payment_method.attached", pm, ctx)
        return pm

    def payment_method_for(self, ident: str, customer: dict[str, Any] | None, param: str, ctx):
        """A stored PaymentMethod, or a new one for Stripe's test ids (``pm_card_visa``, ...)."""
        if ident in TEST_PAYMENT_METHODS:
            pm = self._payment_method(
                customer,
                (customer or {}).get("email"),
                (customer or {}).get("name"),
                sepa=False,
                ctx=ctx,
            )
            decline = TEST_PAYMENT_METHODS[ident]
            if decline:
                self.declines[pm["id"]] = decline
            return pm
        pm = self.get("payment_method", ident, param)
        if customer is not None and pm["customer"] is None:
            pm["customer"] = customer["id"]
            self.emit("payment_method.attached", pm, ctx)
        return pm

    def _complete_payment_mode(self, s, private, customer, pm, asynchronous, ctx) -> None:
        pid = private.get("payment_intent_data") or {}
        if s["amount_total"] == 0:
            s["payment_status"] = "no_payment_required"
            return
        pi = self._create_payment_intent(
            amount=s["amount_total"],
            currency=s["currency"],
            customer=customer,
            pm=pm,
            metadata=pid.get("metadata") or {},
            description=pid.get("description"),
            receipt_email=pid.get("receipt_email"),
            statement_descriptor=pid.get("statement_descriptor"),
            setup_future_usage=pid.get("setup_future_usage"),
            ctx=ctx,
        )
        s["payment_intent"] = pi["id"]
        if asynchronous:
            self._charge(pi, pm, "pending", ctx)
            private["async_pending"] = True
            s["payment_status"] = "unpaid"
        else:
            self._charge(pi, pm, "succeeded", ctx)
            s["payment_status"] = "paid"

    def _create_payment_intent(
        self, *, amount, currency, customer, pm, metadata, ctx, description=None, **extra
    ) -> dict[str, Any]:
        piid = new_id("pi")
        pi = self.shapes.blank(
            "payment_intent",
            id=piid,
            amount=amount,
            created=now(),
            currency=currency,
            customer=customer["id"] if customer else None,
            description=description,
            client_secret=f"{piid}_secret_{new_id('x')[2:]}",
            status="requires_payment_method",
            payment_method_types=[pm["type"]],
            metadata=dict(metadata),
            receipt_email=extra.get("receipt_email"),
            statement_descriptor=extra.get("statement_descriptor"),
            setup_future_usage=extra.get("setup_future_usage"),
        )
        if pm["type"] != "card":
            pi["payment_method_options"] = {"sepa_debit": {}}
        self._put("payment_intent", pi)
        self.emit("payment_intent.created", pi, ctx)
        return pi

    def _charge(
        self, pi: dict[str, Any], pm: dict[str, Any], status: str, ctx, decline: str | None = None
    ) -> dict:
        """Create a charge on ``pi`` with status succeeded|pending|failed and its events."""
        chid = new_id("ch")
        ch = self.shapes.blank(
            "charge",
            id=chid,
            amount=pi["amount"],
            created=now(),
            currency=pi["currency"],
            customer=pi["customer"],
            description=pi["description"],
            payment_intent=pi["id"],
            payment_method=pm["id"],
            metadata={},
            receipt_email=pi.get("receipt_email"),
            receipt_url=f"{self.public_url()}/receipts/{chid}",
            status=status,
            paid=status == "succeeded",
            captured=status != "failed",
            amount_captured=pi["amount"] if status != "failed" else 0,
            balance_transaction=None,
        )
        ch["billing_details"] = deep(pm["billing_details"])
        if pm["type"] == "card":
            details = ch["payment_method_details"]["card"]
            details.update(
                {
                    "amount_authorized": pi["amount"],
                    "exp_year": pm["card"]["exp_year"],
                    "installments": None,
                    "wallet": None,
                    "three_d_secure": None,
                    "network_transaction_id": "1041029786787710",
                    "authorization_code": "123456",
                }
            )
            details["overcapture"]["maximum_amount_capturable"] = pi["amount"]
        else:
            ch["payment_method_details"] = {
                "sepa_debit": {
                    "bank_code": "37040044",
                    "branch_code": "",
                    "country": "DE",
                    "expected_debit_date": None,
                    "fingerprint": pm["sepa_debit"]["fingerprint"],
                    "last4": "3000",
                    "mandate": new_id("mandate"),
                },
                "type": "sepa_debit",
            }
        before_pi = deep(pi)
        pi["payment_method"] = pm["id"]
        pi["latest_charge"] = chid
        if status == "succeeded":
            ch["balance_transaction"] = self._balance_txn(ch, "charge", ch["amount"])["id"]
            pi["status"] = "succeeded"
            pi["amount_received"] = pi["amount"]
        elif status == "pending":
            pi["status"] = "processing"
            pi["processing"] = None
        else:
            self._fail_charge_fields(ch, decline or self.declines.get(pm["id"]))
            pi["status"] = "requires_payment_method"
            pi["last_payment_error"] = self._payment_error(ch, pm)
        self._put("charge", ch)
        if status == "succeeded":
            self.emit("charge.succeeded", ch, ctx)
            self.emit("payment_intent.succeeded", pi, ctx, diff(before_pi, pi))
        elif status == "pending":
            self.emit("charge.pending", ch, ctx)
            self.emit("payment_intent.processing", pi, ctx, diff(before_pi, pi))
        else:
            self.emit("charge.failed", ch, ctx)
            self.emit("payment_intent.payment_failed", pi, ctx, diff(before_pi, pi))
        return ch

    @staticmethod
    def _fail_charge_fields(ch: dict[str, Any], decline: str | None = None) -> None:
        sepa = ch["payment_method_details"].get("type") == "sepa_debit"
        decline = decline or "insufficient_funds"
        code, message = _DECLINES.get(decline, _DECLINES["generic_decline"])
        if sepa:
            code = "insufficient_funds"
            message = "The customer's account has insufficient funds to cover this payment."
        ch["status"] = "failed"
        ch["paid"] = False
        ch["captured"] = False
        ch["amount_captured"] = 0
        ch["failure_code"] = code
        ch["failure_message"] = message
        ch["outcome"] = {
            "advice_code": None if sepa else "try_again_later",
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "declined_by_network",
            "reason": decline,
            "risk_level": "normal",
            "risk_score": 20,
            "seller_message": f"The bank returned the decline code `{decline}`.",
            "type": "issuer_declined",
        }

    def _payment_error(self, ch: dict[str, Any], pm: dict[str, Any]) -> dict[str, Any]:
        code = ch["failure_code"]
        return {
            "charge": ch["id"],
            "code": code,
            "decline_code": ch["outcome"]["reason"],
            "doc_url": "https://stripe.com/docs/error-codes/" + code.replace("_", "-"),
            "message": ch["failure_message"],
            "payment_method": deep(pm),
            "type": "card_error",
        }

    def _settle_async(self, s: dict[str, Any], succeeded: bool, ctx) -> None:
        private = self._private[s["id"]]
        private["async_pending"] = False
        if s["mode"] == "payment":
            pi = self.get("payment_intent", s["payment_intent"])
        else:
            inv = self.get("invoice", s["invoice"])
            pay = self._invoice_payment(inv)
            pi = self.get("payment_intent", pay["payment"]["payment_intent"])
        ch = self.get("charge", pi["latest_charge"])
        pm = self.get("payment_method", ch["payment_method"])
        before_ch, before_pi = deep(ch), deep(pi)
        if succeeded:
            ch.update(status="succeeded", paid=True)
            ch["balance_transaction"] = self._balance_txn(ch, "charge", ch["amount"])["id"]
            pi.update(status="succeeded", amount_received=pi["amount"])
            self.emit("charge.succeeded", ch, ctx, diff(before_ch, ch))
            self.emit("payment_intent.succeeded", pi, ctx, diff(before_pi, pi))
        else:
            self._fail_charge_fields(ch)
            pi.update(status="requires_payment_method")
            pi["last_payment_error"] = self._payment_error(ch, pm)
            self.emit("charge.failed", ch, ctx, diff(before_ch, ch))
            self.emit("payment_intent.payment_failed", pi, ctx, diff(before_pi, pi))
        if s["mode"] == "subscription":
            sub = self.get("subscription", s["subscription"])
            inv = self.get("invoice", s["invoice"])
            if succeeded:
                self._invoice_paid(inv, ctx)
                before = deep(sub)
                sub["status"] = "active"
                self._updated("customer.subscription.updated", sub, before, ctx)
            else:
                self._invoice_failed(inv, ctx)
        if succeeded:
            s["payment_status"] = "paid"
            self.emit("checkout.session.async_payment_succeeded", s, ctx)
        else:
            self.emit("checkout.session.async_payment_failed", s, ctx)

    def _balance_txn(self, source: dict[str, Any], type_: str, amount: int) -> dict[str, Any]:
        fee = 0 if type_ != "charge" else round(amount * 0.029) + 30
        txn = self.shapes.blank(
            "balance_transaction",
            id=new_id("txn"),
            amount=amount,
            available_on=now() + 2 * 86400,
            created=now(),
            currency=source["currency"],
            description=source.get("description"),
            fee=fee,
            fee_details=(
                [
                    {
                        "amount": fee,
                        "application": None,
                        "currency": source["currency"],
                        "description": "Stripe processing fees",
                        "type": "stripe_fee",
                    }
                ]
                if fee
                else []
            ),
            net=amount - fee,
            reporting_category=type_,
            source=source["id"],
            status="pending",
            type=type_,
        )
        self._put("balance_transaction", txn)
        return txn

    # ------------------------------------------------------------------ subscriptions
    def _complete_subscription_mode(self, s, private, customer, pm, asynchronous, ctx) -> None:
        sd = private.get("subscription_data") or {}
        items = self.session_items[s["id"]]
        ts = now()
        trial_end = self._trial_end(private)
        sub_id = new_id("sub")
        recurring_items = [it for it in items if it["price"]["type"] == "recurring"]
        first = recurring_items[0]["price"]["recurring"]
        period_end = trial_end or add_interval(ts, first["interval"], first["interval_count"])
        sub_items = []
        for it in recurring_items:
            sub_items.append(
                self._subscription_item(sub_id, it["price"], it["quantity"], ts, period_end)
            )
        sub = self.shapes.blank(
            "subscription",
            id=sub_id,
            created=ts,
            start_date=ts,
            billing_cycle_anchor=period_end if trial_end else ts,
            currency=s["currency"],
            customer=customer["id"],
            default_payment_method=pm["id"],
            description=sd.get("description"),
            items={
                "object": "list",
                "data": sub_items,
                "has_more": False,
                "total_count": len(sub_items),
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
            status="trialing" if trial_end else "incomplete",
            trial_start=ts if trial_end else None,
            trial_end=trial_end,
        )
        apply_metadata(sub, sd.get("metadata"))
        coupon = self.find("coupon", private.get("coupon"))
        if coupon:
            disc = self._discount_stub(coupon, s)
            disc.update(
                id=new_id("di"),
                customer=customer["id"],
                subscription=sub_id,
                end=(
                    add_interval(ts, "month", coupon["duration_in_months"])
                    if coupon["duration"] == "repeating"
                    else None
                ),
            )
            self._put("discount", disc)
            sub["discounts"] = [disc["id"]]
        self._put("subscription", sub)
        self.emit("customer.subscription.created", sub, ctx)
        one_time = [it for it in items if it["price"]["type"] == "one_time"]
        inv = self._create_invoice(
            sub,
            "subscription_create",
            ts,
            ts,
            [(it["price"], it["quantity"], ts, period_end) for it in recurring_items],
            extra=[(it["price"], it["quantity"]) for it in one_time],
            trial=bool(trial_end),
            ctx=ctx,
        )
        s["subscription"] = sub_id
        s["invoice"] = inv["id"]
        self._pay_invoice(inv, pm, "pending" if asynchronous else "succeeded", ctx)
        if asynchronous and inv["status"] != "paid":
            private["async_pending"] = True
            s["payment_status"] = "unpaid"
            return
        s["payment_status"] = "paid" if inv["amount_paid"] else "no_payment_required"
        if sub["status"] == "incomplete":
            before = deep(sub)
            sub["status"] = "active"
            self._updated("customer.subscription.updated", sub, before, ctx)

    def _subscription_item(self, sub_id, price, qty, start, end) -> dict[str, Any]:
        item = self.shapes.blank(
            "subscription_item",
            id=new_id("si"),
            created=start,
            discounts=[],
            metadata={},
            price=deep(price),
            quantity=qty,
            subscription=sub_id,
            tax_rates=[],
            current_period_start=start,
            current_period_end=end,
            billing_thresholds=None,
        )
        rec = price["recurring"]
        item["plan"] = {
            "active": price["active"],
            "amount": price["unit_amount"],
            "amount_decimal": price["unit_amount_decimal"],
            "billing_scheme": price["billing_scheme"],
            "created": price["created"],
            "currency": price["currency"],
            "id": price["id"],
            "interval": rec["interval"],
            "interval_count": rec["interval_count"],
            "livemode": False,
            "metadata": deep(price["metadata"]),
            "meter": None,
            "nickname": price["nickname"],
            "object": "plan",
            "product": price["product"],
            "tiers_mode": None,
            "transform_usage": None,
            "trial_period_days": None,
            "usage_type": rec["usage_type"],
        }
        return item

    def _coupon_for_period(self, sub: dict[str, Any], billing_reason: str):
        for did in sub.get("discounts") or []:
            disc = self.find("discount", did)
            if not disc:
                continue
            coupon = self.find("coupon", disc["source"]["coupon"])
            if coupon is None:
                continue
            if coupon["duration"] == "once" and billing_reason != "subscription_create":
                continue
            if disc["end"] is not None and disc["end"] <= now():
                continue
            return disc, coupon
        return None, None

    def _create_invoice(
        self, sub, billing_reason, period_start, period_end, lines_spec, *, extra=(), trial=False,
        ctx=None,
    ) -> dict[str, Any]:  # fmt: skip
        cus = self.get("customer", sub["customer"])
        inv_id = new_id("in")
        ts = now()
        disc, coupon = self._coupon_for_period(sub, billing_reason)
        lines = []
        for price, qty, start, end in lines_spec:
            amount = 0 if trial else price["unit_amount"] * qty
            product = self.find("product", price["product"]) or {}
            rec = price["recurring"]
            every = "" if rec["interval_count"] == 1 else f"{rec['interval_count']} "
            desc = (
                f"Trial period for {product.get('name')}"
                if trial
                else f"{qty} × {product.get('name')} (at {money(price['unit_amount'], price['currency'])}"
                f" / {every}{rec['interval']})"
            )
            lines.append(self._invoice_line(inv_id, sub, price, qty, amount, desc, start, end))
        for price, qty in extra:
            product = self.find("product", price["product"]) or {}
            line = self._invoice_line(
                inv_id, sub, price, qty, price["unit_amount"] * qty, product.get("name"), ts, ts
            )
            lines.append(line)
        subtotal = sum(line["amount"] for line in lines)
        discount = self.discount_amount(coupon, subtotal) if coupon and subtotal else 0
        if discount:
            remaining = discount
            for n, line in enumerate(lines):
                share = remaining if n == len(lines) - 1 else discount * line["amount"] // subtotal
                remaining -= share
                line["discount_amounts"] = [{"amount": share, "discount": disc["id"]}]
                line["discounts"] = [disc["id"]]
        total = subtotal - discount
        seq = cus["next_invoice_sequence"]
        cus["next_invoice_sequence"] = seq + 1
        inv = self.shapes.blank(
            "invoice",
            id=inv_id,
            amount_due=total,
            amount_paid=0,
            amount_remaining=total,
            attempt_count=0,
            attempted=False,
            auto_advance=True,
            billing_reason=billing_reason,
            collection_method="charge_automatically",
            created=ts,
            currency=sub["currency"],
            customer=cus["id"],
            customer_email=cus["email"],
            customer_name=cus["name"],
            customer_phone=cus["phone"],
            customer_tax_ids=[],
            default_payment_method=None,
            description=None,
            discounts=[disc["id"]] if discount else [],
            effective_at=None,
            ending_balance=None,
            hosted_invoice_url=None,
            invoice_pdf=None,
            issuer={"type": "self"},
            lines={
                "object": "list",
                "data": lines,
                "has_more": False,
                "total_count": len(lines),
                "url": f"/v1/invoices/{inv_id}/lines",
            },
            number=None,
            period_start=period_start,
            period_end=period_end,
            status="draft",
            status_transitions={
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            subtotal=subtotal,
            subtotal_excluding_tax=subtotal,
            total=total,
            total_discount_amounts=(
                [{"amount": discount, "discount": disc["id"]}] if discount else []
            ),
            total_excluding_tax=total,
            parent={
                "quote_details": None,
                "subscription_details": {
                    "metadata": deep(sub["metadata"]),
                    "subscription": sub["id"],
                },
                "type": "subscription_details",
            },
        )
        self._put("invoice", inv)
        self.emit("invoice.created", inv, ctx)
        before = deep(inv)
        inv.update(
            status="open",
            number=f"{cus['invoice_prefix']}-{seq:04d}",
            effective_at=ts,
            ending_balance=0,
            hosted_invoice_url=f"{self.public_url()}/invoice/{inv_id}",
            invoice_pdf=f"{self.public_url()}/invoice/{inv_id}/pdf",
        )
        inv["status_transitions"]["finalized_at"] = ts
        self.emit("invoice.finalized", inv, ctx, diff(before, inv))
        sub["latest_invoice"] = inv_id  # callers report the subscription's changes
        return inv

    def _invoice_line(self, inv_id, sub, price, qty, amount, desc, start, end) -> dict[str, Any]:
        item = next((it for it in sub["items"]["data"] if it["price"]["id"] == price["id"]), None)
        return self.shapes.blank(
            "line_item",
            id=new_id("il"),
            amount=amount,
            currency=price["currency"],
            description=desc,
            discount_amounts=[],
            discountable=True,
            discounts=[],
            invoice=inv_id,
            metadata={},
            period={"end": end, "start": start},
            quantity=qty,
            subscription=sub["id"],
            pretax_credit_amounts=[],
            taxes=[],
            parent={
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": sub["id"],
                    "subscription_item": item["id"] if item else None,
                },
                "type": "subscription_item_details",
            },
            pricing={
                "price_details": {"price": price["id"], "product": price["product"]},
                "type": "price_details",
                "unit_amount_decimal": price["unit_amount_decimal"],
            },
            subtotal=amount,
            quantity_decimal=str(qty),
        )

    def _invoice_payment(self, inv: dict[str, Any]) -> dict[str, Any] | None:
        pays = [p for p in self.db.get("invoice_payment", {}).values() if p["invoice"] == inv["id"]]
        return pays[-1] if pays else None

    def _pay_invoice(self, inv: dict[str, Any], pm: dict[str, Any] | None, status: str, ctx):
        """Attempt payment of an open invoice: status succeeded|pending|failed."""
        if inv["amount_due"] == 0:
            self._invoice_paid(inv, ctx)
            return
        pay = self._invoice_payment(inv)
        pi = self.find("payment_intent", pay["payment"]["payment_intent"]) if pay else None
        cus = self.get("customer", inv["customer"])
        if pi is None:
            pi = self._create_payment_intent(
                amount=inv["amount_due"],
                currency=inv["currency"],
                customer=cus,
                pm=pm,
                metadata={},
                description=(
                    "Subscription creation"
                    if inv["billing_reason"] == "subscription_create"
                    else "Subscription update"
                ),
                ctx=ctx,
            )
            pay = self.shapes.blank(
                "invoice_payment",
                id=new_id("inpay"),
                amount_paid=None,
                amount_requested=inv["amount_due"],
                created=now(),
                currency=inv["currency"],
                invoice=inv["id"],
                is_default=True,
                livemode=False,
                payment={"payment_intent": pi["id"], "type": "payment_intent"},
                status="open",
                status_transitions={"canceled_at": None, "paid_at": None},
            )
            self._put("invoice_payment", pay)
        inv["attempted"] = True
        inv["attempt_count"] += 1
        self._charge(pi, pm, status, ctx)
        if status == "succeeded":
            self._invoice_paid(inv, ctx)
        elif status == "failed":
            self._invoice_failed(inv, ctx)

    def _invoice_paid(self, inv: dict[str, Any], ctx) -> None:
        ts = now()
        before = deep(inv)
        inv.update(
            status="paid",
            amount_paid=inv["amount_due"],
            amount_remaining=0,
            auto_advance=False,
            next_payment_attempt=None,
            attempted=True,
        )
        inv["status_transitions"]["paid_at"] = ts
        pay = self._invoice_payment(inv)
        if pay:
            pay.update(status="paid", amount_paid=inv["amount_due"])
            pay["status_transitions"]["paid_at"] = ts
        prev = diff(before, inv)
        self.emit("invoice.paid", inv, ctx, prev)
        self.emit("invoice.payment_succeeded", inv, ctx, prev)

    def _invoice_failed(self, inv: dict[str, Any], ctx) -> None:
        before = deep(inv)
        inv["next_payment_attempt"] = now() + 3 * 86400
        self.emit("invoice.payment_failed", inv, ctx, diff(before, inv))

    def renew_subscription(self, sub_id: str, *, paid: bool = True, ctx=None) -> dict[str, Any]:
        """Start the next period: invoice it and collect (``invoice.paid``/``payment_failed``)."""
        with self.lock:
            sub = self.get("subscription", sub_id)
            if sub["status"] not in ("active", "trialing", "past_due"):
                raise invalid(
                    f"Subscription {sub_id} has status {sub['status']} and cannot renew.",
                    param="subscription",
                )
            first = sub["items"]["data"][0]
            start, end = first["current_period_start"], first["current_period_end"]
            before = deep(sub)
            if sub["cancel_at_period_end"] or (sub["cancel_at"] and sub["cancel_at"] <= end):
                self._end_subscription(sub, before, "cancellation_requested", ctx, ended_at=end)
                return sub
            rec = first["price"]["recurring"]
            new_end = add_interval(end, rec["interval"], rec["interval_count"])
            for it in sub["items"]["data"]:
                it["current_period_start"] = end
                it["current_period_end"] = new_end
            was_trial = sub["status"] == "trialing"
            if was_trial:
                sub["status"] = "active"
            inv = self._create_invoice(
                sub,
                "subscription_cycle",
                start,
                end,
                [(it["price"], it["quantity"], end, new_end) for it in sub["items"]["data"]],
                ctx=ctx,
            )
            self._updated("customer.subscription.updated", sub, before, ctx)
            pm = self.find("payment_method", sub["default_payment_method"])
            self._pay_invoice(inv, pm, "succeeded" if paid else "failed", ctx)
            before = deep(sub)
            sub["status"] = "active" if inv["status"] == "paid" else "past_due"
            self._updated("customer.subscription.updated", sub, before, ctx)
            return inv

    def retry_invoice(self, inv_id: str, *, paid: bool = True, ctx=None) -> dict[str, Any]:
        with self.lock:
            inv = self.get("invoice", inv_id)
            if inv["status"] != "open":
                raise invalid(f"Invoice {inv_id} is {inv['status']}, not open.", param="invoice")
            sub_id = inv["parent"]["subscription_details"]["subscription"]
            sub = self.get("subscription", sub_id)
            pm = self.find("payment_method", sub["default_payment_method"])
            self._pay_invoice(inv, pm, "succeeded" if paid else "failed", ctx)
            before = deep(sub)
            if inv["status"] == "paid" and sub["status"] in ("past_due", "incomplete", "unpaid"):
                sub["status"] = "active"
            self._updated("customer.subscription.updated", sub, before, ctx)
            return inv

    def pay_invoice(self, inv_id: str, p: dict[str, Any], ctx) -> dict[str, Any]:
        """POST /v1/invoices/:id/pay: charge the given or default method (402 on decline)."""
        with self.lock:
            inv = self.get("invoice", inv_id, "invoice")
            if inv["status"] == "paid":
                raise invalid("Invoice is already paid", code="invoice_already_paid")
            if inv["status"] != "open":
                raise invalid(
                    f"You can only pay an invoice that is open. This invoice is {inv['status']}.",
                )
            sub_id = inv["parent"]["subscription_details"]["subscription"]
            sub = self.get("subscription", sub_id)
            cus = self.get("customer", inv["customer"])
            if p.get("paid_out_of_band"):
                inv["amount_paid_off_stripe"] = inv["amount_due"]
                self._invoice_paid(inv, ctx)
                pm = None
            else:
                if p.get("payment_method"):
                    pm = self.payment_method_for(p["payment_method"], cus, "payment_method", ctx)
                else:
                    pm = self.find("payment_method", sub["default_payment_method"])
                if pm is None:
                    raise invalid(
                        "This customer has no attached payment source or default payment "
                        "method. Please consider adding a default payment method.",
                    )
                decline = self.declines.get(pm["id"])
                self._pay_invoice(inv, pm, "failed" if decline else "succeeded", ctx)
            before = deep(sub)
            if inv["status"] == "paid" and sub["status"] in ("past_due", "incomplete", "unpaid"):
                sub["status"] = "active"
            self._updated("customer.subscription.updated", sub, before, ctx)
            if inv["status"] != "paid":
                pay = self._invoice_payment(inv)
                pi = self.get("payment_intent", pay["payment"]["payment_intent"])
                err = pi["last_payment_error"]
                raise StripeError(
                    402,
                    err["message"],
                    type="card_error",
                    code=err["code"],
                    extra={
                        "charge": err["charge"],
                        "decline_code": err["decline_code"],
                        "payment_intent": deep(pi),
                        "payment_method": deep(pm),
                    },
                )
            return inv

    def _end_subscription(self, sub, before, reason, ctx, *, ended_at=None, p=None) -> None:
        ts = now()
        sub["status"] = "canceled"
        sub["canceled_at"] = sub["canceled_at"] or ts
        sub["ended_at"] = ended_at or ts
        details = dict(sub["cancellation_details"] or {})
        details["reason"] = reason
        for k in ("comment", "feedback"):
            if p and (p.get("cancellation_details") or {}).get(k) is not None:
                details[k] = p["cancellation_details"][k]
        sub["cancellation_details"] = details
        self.emit("customer.subscription.deleted", sub, ctx, diff(before, sub))

    def cancel_subscription(self, sub_id: str, p: dict[str, Any], ctx=None) -> dict[str, Any]:
        with self.lock:
            sub = self.get("subscription", sub_id)
            if sub["status"] in ("canceled", "incomplete_expired"):
                raise invalid(
                    f"A canceled subscription can only update its cancellation_details and "
                    f"metadata. (subscription {sub_id})",
                    param="subscription",
                )
            before = deep(sub)
            self._end_subscription(sub, before, "cancellation_requested", ctx, p=p)
            for inv in self.db.get("invoice", {}).values():
                subd = inv["parent"]["subscription_details"]
                if subd and subd["subscription"] == sub_id and inv["status"] == "open":
                    inv["auto_advance"] = False
            return sub

    _SUB_UPDATABLE = frozenset(
        {
            "cancel_at_period_end",
            "cancel_at",
            "cancellation_details",
            "metadata",
            "description",
            "default_payment_method",
            "expand",
            "proration_behavior",
        }
    )

    def update_subscription(self, sub_id: str, p: dict[str, Any], ctx) -> dict[str, Any]:
        with self.lock:
            sub = self.get("subscription", sub_id)
            unsupported = sorted(set(p) - self._SUB_UPDATABLE)
            if unsupported:
                raise invalid(
                    f"The Stripe stand-in does not support updating `{unsupported[0]}` on a "
                    "subscription.",
                    param=unsupported[0],
                )
            if sub["status"] == "canceled" and set(p) - {
                "metadata",
                "cancellation_details",
                "expand",
            }:
                raise invalid(
                    "A canceled subscription can only update its cancellation_details and "
                    "metadata.",
                )
            before = deep(sub)
            period_end = sub["items"]["data"][0]["current_period_end"]
            if p.get("cancel_at_period_end") is not None:
                flag = p["cancel_at_period_end"]
                sub["cancel_at_period_end"] = flag
                sub["cancel_at"] = period_end if flag else None
                sub["canceled_at"] = now() if flag else None
                sub["cancellation_details"]["reason"] = "cancellation_requested" if flag else None
            if "cancel_at" in p:
                at = _blank_to_none(p["cancel_at"])
                if at == "max_period_end" or at == "min_period_end":
                    at = period_end
                sub["cancel_at"] = int(at) if at is not None else None
                sub["cancel_at_period_end"] = sub["cancel_at"] == period_end
                sub["canceled_at"] = now() if at is not None else None
            for k in ("comment", "feedback"):
                if (p.get("cancellation_details") or {}).get(k) is not None:
                    sub["cancellation_details"][k] = _blank_to_none(p["cancellation_details"][k])
            if "description" in p:
                sub["description"] = _blank_to_none(p["description"])
            if p.get("default_payment_method"):
                cus = self.get("customer", sub["customer"])
                pm = self.payment_method_for(
                    p["default_payment_method"], cus, "default_payment_method", ctx
                )
                sub["default_payment_method"] = pm["id"]
            apply_metadata(sub, p.get("metadata"))
            self._updated("customer.subscription.updated", sub, before, ctx)
            return sub

    def list_subscriptions(self, p: dict[str, Any], url: str) -> dict[str, Any]:
        status = p.get("status")

        def match(sub):
            if status == "all":
                ok = True
            elif status:
                ok = sub["status"] == status
            else:
                ok = sub["status"] not in ("canceled", "incomplete_expired")
            price = p.get("price") or p.get("plan")
            return (
                ok
                and (not p.get("customer") or sub["customer"] == p["customer"])
                and (not price or any(it["price"]["id"] == price for it in sub["items"]["data"]))
            )

        return self.list("subscription", p, url, match)

    # ------------------------------------------------------------------ refunds / disputes
    def create_refund(self, p: dict[str, Any], ctx: Ctx | None) -> dict[str, Any]:
        with self.lock:
            if p.get("charge"):
                ch = self.get("charge", p["charge"], "charge")
            elif p.get("payment_intent"):
                pi = self.get("payment_intent", p["payment_intent"], "payment_intent")
                if not pi["latest_charge"]:
                    raise invalid(
                        f"This PaymentIntent ({pi['id']}) does not have a successful charge to "
                        "refund.",
                        param="payment_intent",
                    )
                ch = self.get("charge", pi["latest_charge"])
            else:
                raise invalid(
                    "One of the following params should be provided for this request: "
                    "payment_intent or charge."
                )
            if ch["status"] != "succeeded":
                raise invalid(
                    f"Charge {ch['id']} has not succeeded and cannot be refunded.",
                    param="charge",
                )
            if ch["disputed"]:
                raise invalid(
                    f"Charge {ch['id']} has been charged back; cannot issue a refund.",
                    param="charge",
                    code="charge_disputed",
                )
            remaining = ch["amount"] - ch["amount_refunded"]
            if remaining <= 0:
                raise invalid(
                    f"Charge {ch['id']} has already been refunded.",
                    param="charge",
                    code="charge_already_refunded",
                )
            amount = p.get("amount")
            if amount is None:
                amount = remaining
            if amount <= 0:
                raise invalid("Invalid positive integer", param="amount")
            if amount > remaining:
                raise invalid(
                    f"Refund amount ({money(amount, ch['currency'])}) is greater than unrefunded "
                    f"amount on charge ({money(remaining, ch['currency'])})",
                    param="amount",
                    code="amount_too_large",
                )
            reason = p.get("reason")
            if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
                raise invalid(
                    "Invalid reason: must be one of duplicate, fraudulent, or "
                    "requested_by_customer",
                    param="reason",
                )
            ref = self.shapes.blank(
                "refund",
                id=new_id("re"),
                amount=amount,
                charge=ch["id"],
                created=now(),
                currency=ch["currency"],
                payment_intent=ch["payment_intent"],
                reason=reason,
                status="succeeded",
                destination_details={
                    "card": {
                        "reference": "4242424242424242",
                        "reference_status": "available",
                        "reference_type": "acquirer_reference_number",
                        "type": "refund",
                    },
                    "type": "card",
                },
                payment_method=ch["payment_method"],
            )
            ref["balance_transaction"] = self._balance_txn(ref, "refund", -amount)["id"]
            apply_metadata(ref, p.get("metadata"))
            self._put("refund", ref)
            before = deep(ch)
            ch["amount_refunded"] += amount
            ch["refunded"] = ch["amount_refunded"] >= ch["amount"]
            self.emit("refund.created", ref, ctx)
            self.emit("charge.refunded", ch, ctx, diff(before, ch))
            return ref

    def create_dispute(
        self, charge_id: str, *, amount: int | None = None, reason: str = "fraudulent", ctx=None
    ) -> dict[str, Any]:
        with self.lock:
            ch = self.find("charge", charge_id)
            if ch is None and charge_id.startswith("pi_"):
                pi = self.get("payment_intent", charge_id, "charge")
                ch = self.find("charge", pi["latest_charge"])
            if ch is None:
                raise no_such("charge", charge_id, "charge")
            if ch["status"] != "succeeded" or ch["disputed"]:
                raise invalid(f"Charge {ch['id']} cannot be disputed.", param="charge")
            dp = self.shapes.blank(
                "dispute",
                id=new_id("dp"),
                amount=amount or ch["amount"] - ch["amount_refunded"],
                charge=ch["id"],
                created=now(),
                currency=ch["currency"],
                payment_intent=ch["payment_intent"],
                reason=reason,
                status="needs_response",
                is_charge_refundable=False,
            )
            dp["evidence_details"].update(
                {"due_by": now() + 7 * 86400, "has_evidence": False, "past_due": False}
            )
            dp["payment_method_details"]["card"]["case_type"] = "chargeback"
            self._put("dispute", dp)
            ch["disputed"] = True
            self.emit("charge.dispute.created", dp, ctx)
            return dp

    def close_dispute(self, dp_id: str, *, won: bool, ctx=None) -> dict[str, Any]:
        with self.lock:
            dp = self.get("dispute", dp_id)
            if dp["status"] in ("won", "lost"):
                raise invalid(f"Dispute {dp_id} is already closed.", param="dispute")
            before = deep(dp)
            dp["status"] = "won" if won else "lost"
            self.emit("charge.dispute.closed", dp, ctx, diff(before, dp))
            return dp

    def update_dispute(self, dp_id: str, p: dict[str, Any], ctx) -> dict[str, Any]:
        with self.lock:
            dp = self.get("dispute", dp_id)
            before = deep(dp)
            if p.get("evidence"):
                dp["evidence"].update(p["evidence"])
                dp["evidence_details"]["has_evidence"] = True
            if p.get("submit"):
                dp["status"] = "under_review"
                dp["evidence_details"]["submission_count"] += 1
            apply_metadata(dp, p.get("metadata"))
            self._updated("charge.dispute.updated", dp, before, ctx)
            return dp

    # ------------------------------------------------------------------ simple updates
    def update_metadata_fields(self, kind, ident, p, fields, ctx, event=None) -> dict[str, Any]:
        with self.lock:
            obj = self.get(kind, ident)
            before = deep(obj)
            for key in fields:
                if key in p:
                    obj[key] = _blank_to_none(p[key])
            apply_metadata(obj, p.get("metadata"))
            if event:
                self._updated(event, obj, before, ctx)
            return obj

    # ------------------------------------------------------------------ billing portal
    def create_portal_session(self, p: dict[str, Any], ctx) -> dict[str, Any]:
        with self.lock:
            base_url = self.public_url()
            if not p.get("customer"):
                raise missing_param("customer")
            cus = self.get("customer", p["customer"], "customer")
            bps = new_id("bps")
            flow = p.get("flow_data")
            obj = self.shapes.blank(
                "billing_portal.session",
                id=bps,
                configuration=p.get("configuration") or "bpc_" + "standin" + "0" * 18,
                created=now(),
                customer=cus["id"],
                locale=p.get("locale"),
                on_behalf_of=p.get("on_behalf_of"),
                return_url=p.get("return_url"),
                url=f"{base_url}/portal/{bps}",
                flow=None,
            )
            if flow:
                obj["flow"] = {
                    "after_completion": flow.get("after_completion")
                    or {"hosted_confirmation": None, "redirect": None, "type": "portal_homepage"},
                    "subscription_cancel": flow.get("subscription_cancel"),
                    "subscription_update": flow.get("subscription_update"),
                    "subscription_update_confirm": flow.get("subscription_update_confirm"),
                    "type": flow["type"],
                }
            self._put("billing_portal.session", obj)
            return obj


def _created_ok(obj: dict[str, Any], created: Any) -> bool:
    if created is None or created == "":
        return True
    ts = obj.get("created", 0)
    if isinstance(created, str):
        return ts == int(created)
    ops = {"gt": ts.__gt__, "gte": ts.__ge__, "lt": ts.__lt__, "lte": ts.__le__}
    for op, value in created.items():
        if op not in ops:
            raise invalid(f"Received unknown parameter: created[{op}]", param=f"created[{op}]")
        try:
            bound = int(value)
        except (TypeError, ValueError):
            raise invalid(f"Invalid integer: {value}", param=f"created[{op}]") from None
        if not ops[op](bound):
            return False
    return True


__all__ = ["Ctx", "Engine", "StripeError", "add_interval", "diff", "money"]
