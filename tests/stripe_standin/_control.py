"""The stand-in's own HTTP control API (``/_control/...``), mirroring the Python handle."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ._core import invalid

if TYPE_CHECKING:
    from .handle import StripeStandin


def _bool(v: Any, default: bool = True) -> bool:
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    return str(v).lower() in ("1", "true", "yes", "on")


def _int(v: Any) -> int | None:
    return None if v in (None, "") else int(v)


def control(h: StripeStandin, method: str, path: str, d: dict[str, Any]) -> tuple[int, Any]:
    """Answer one control request: (status, JSON body)."""
    parts = path.strip("/").split("/")[1:]  # drop "_control"
    route = "/".join(re.sub(r"^(cs|sub|in|evt|dp|we)_\w+$", "{id}", p) for p in parts)
    ident = next((p for p in parts if re.match(r"^(cs|sub|in|evt|dp|we)_", p)), None)

    if method == "GET" and route == "health":
        return 200, {"ok": True, "url": h.url, "clock": h.clock_now()}
    if method == "POST" and route == "reset":
        h.reset()
        return 200, {"ok": True}
    if method == "GET" and len(parts) == 2 and parts[0] == "objects":
        try:
            return 200, h.get(parts[1])
        except KeyError:
            return 404, {"error": {"type": "invalid_request_error", "message": "No such object"}}
    if method == "POST" and route == "checkout/sessions/{id}/complete":
        return 200, h.complete_checkout(
            ident,
            outcome=d.get("outcome") or "paid",
            promotion_code=d.get("promotion_code"),
            email=d.get("email"),
            name=d.get("name"),
        )
    if method == "POST" and route == "checkout/sessions/{id}/expire":
        return 200, h.expire_checkout(ident)
    if method == "POST" and route == "refunds":
        target = d.get("charge") or d.get("payment_intent")
        if not target:
            raise invalid("charge or payment_intent is required")
        return 200, h.refund(target, _int(d.get("amount")), reason=d.get("reason"))
    if method == "POST" and route == "disputes":
        return 200, h.dispute(
            d.get("charge") or d["payment_intent"],
            amount=_int(d.get("amount")),
            reason=d.get("reason") or "fraudulent",
        )
    if method == "POST" and route == "disputes/{id}/close":
        return 200, h.close_dispute(ident, won=_bool(d.get("won")))
    if method == "POST" and route == "subscriptions/{id}/renew":
        return 200, h.renew_subscription(ident, paid=_bool(d.get("paid")))
    if method == "POST" and route == "subscriptions/{id}/cancel":
        return 200, h.cancel_subscription(ident)
    if method == "POST" and route == "invoices/{id}/retry":
        return 200, h.retry_invoice(ident, paid=_bool(d.get("paid")))
    if method == "POST" and route == "webhook_endpoints":
        events = d.get("enabled_events") or ["*"]
        if isinstance(events, str):
            events = events.split(",")
        ep = h.add_webhook_endpoint(
            d["url"],
            secret=d.get("secret"),
            enabled_events=events,
            api_version=d.get("api_version"),
        )
        return 200, {"id": ep.id, "url": ep.url, "secret": ep.secret, "enabled_events": events}
    if method == "GET" and route == "webhook_endpoints":
        eps = h.webhooks.endpoints.values()
        return 200, [
            {"id": e.id, "url": e.url, "secret": e.secret, "enabled_events": e.enabled_events}
            for e in eps
        ]
    if method == "POST" and route == "webhooks/auto":
        h.auto_deliver = _bool(d.get("enabled"))
        return 200, {"auto_deliver": h.auto_deliver}
    if method == "POST" and route == "webhooks/deliver_pending":
        attempts = h.deliver_pending(order=d.get("order") or "created", seed=_int(d.get("seed")))
        return 200, [a.as_dict() for a in attempts]
    if method == "POST" and route == "webhooks/wait":
        h.wait_for_deliveries(float(d.get("timeout") or 5))
        return 200, {"ok": True}
    if method == "POST" and route == "events/{id}/deliver":
        attempts = h.deliver(
            ident,
            endpoint=d.get("endpoint"),
            timestamp=_int(d.get("timestamp")),
            stale=_bool(d.get("stale"), False),
            bad_signature=_bool(d.get("bad_signature"), False),
            signature_header=d.get("signature_header"),
        )
        return 200, [a.as_dict() for a in attempts]
    if method == "GET" and route == "attempts":
        found = h.attempts(event_id=d.get("event"), endpoint=d.get("endpoint"), type=d.get("type"))
        return 200, [a.as_dict() for a in found]
    if method == "GET" and route == "events":
        return 200, h.events(d.get("type"))
    if method == "POST" and route == "clock/advance":
        return 200, {"clock": h.advance_clock(float(d["seconds"]))}
    if method == "GET" and route == "clock":
        return 200, {"clock": h.clock_now()}
    return 404, {
        "error": {"type": "invalid_request_error", "message": f"No control route {method} {path}"}
    }
