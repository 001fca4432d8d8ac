"""Start/stop the stand-in and drive it from tests: ``start_stripe_standin() -> StripeStandin``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._core import StripeError, deep, invalid, no_such, now
from ._engine import Ctx, Engine
from ._schema import schema_api_version
from ._shapes import Shapes
from ._webhooks import (
    DEFAULT_RETRY_SCHEDULE,
    Attempt,
    Clock,
    Delivery,
    Endpoint,
    Transport,
    Webhooks,
)

DEFAULT_API_KEY = "sk_test_standin_0000000000000000000000"


class StripeStandin:
    """A running stand-in. ``url`` is the API base for the official client.

    Buyer/bank/time actions (``complete_checkout``, ``refund``, ``renew_subscription``, ...)
    act directly on the stand-in's state and emit the events Stripe would.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        public_url: str | None = None,
        api_version: str | None = None,
        auto_deliver: bool = True,
        retry_schedule: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE,
        webhook_timeout: float = 10.0,
        fixtures_path: str | Path | None = None,
        verbose: bool = False,
    ) -> None:
        self.api_key = api_key or DEFAULT_API_KEY
        self.strict_api_key = api_key is not None
        self.api_version = api_version or schema_api_version()
        self.verbose = verbose
        self.clock = Clock()
        self.shapes = Shapes(Path(fixtures_path) if fixtures_path else None)
        self._public_url = public_url
        self.engine = Engine(
            self.shapes,
            api_version=self.api_version,
            public_url=lambda: self.public_url,
            clock=self.clock.now,
        )
        self.webhooks = Webhooks(
            self.engine.lock,
            self.clock,
            auto_deliver=auto_deliver,
            retry_schedule=retry_schedule,
            timeout=webhook_timeout,
            default_api_version=self.api_version,
        )
        self.engine.on_event = self.webhooks.enqueue
        self._defaults = (auto_deliver, tuple(retry_schedule))
        from ._server import StandinHTTPServer

        self._server = StandinHTTPServer((host, port), self)
        self.host = host if host not in ("0.0.0.0", "") else "127.0.0.1"  # noqa: S104
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """Base URL for ``stripe.api_base`` / ``base_addresses={"api": url}``."""
        return f"http://{self.host}:{self.port}"

    @property
    def public_url(self) -> str:
        """Base of the hosted pages' URLs (session ``url``, portal ``url``)."""
        return self._public_url or self.url

    def start(self) -> StripeStandin:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"stripe-standin:{self.port}",
            daemon=True,
        )
        self._thread.start()
        self.webhooks.start()
        return self

    def stop(self) -> None:
        self.webhooks.stop()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StripeStandin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all objects, events, endpoints, attempts and idempotency keys; clock to now."""
        with self.engine.lock:
            self.engine.reset()
            self.webhooks.reset()
            self.webhooks.auto_deliver, self.webhooks.retry_schedule = self._defaults
            self.clock.offset = 0.0
        with self._server.idem_lock:
            self._server.idem.clear()

    def client(self, **kwargs: Any):
        """An official ``stripe.StripeClient`` pointed at this stand-in (needs ``stripe``)."""
        import stripe

        kwargs.setdefault("base_addresses", {"api": self.url})
        kwargs.setdefault("max_network_retries", 0)
        return stripe.StripeClient(kwargs.pop("api_key", self.api_key), **kwargs)

    # ------------------------------------------------------------------ inspection
    def get(self, object_id: str, *, expand: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """Any stored object by id, as the API would return it."""
        obj = self.engine.lookup(object_id)
        if obj is None:
            raise KeyError(object_id)
        return self.engine.render(obj, expand)

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """Events in the order they were created (oldest first), optionally of one type."""
        with self.engine.lock:
            evts = sorted(
                self.engine.db.get("event", {}).values(), key=lambda e: self.engine.seq[e["id"]]
            )
            return [deep(e) for e in evts if type is None or e["type"] == type]

    def event_types(self) -> list[str]:
        return [e["type"] for e in self.events()]

    def last_event(self, type: str) -> dict[str, Any]:
        found = self.events(type)
        if not found:
            raise LookupError(f"no {type} event")
        return found[-1]

    # ------------------------------------------------------------------ buyer / bank actions
    def complete_checkout(
        self,
        session_id: str,
        *,
        outcome: str = "paid",
        promotion_code: str | None = None,
        email: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """The buyer pays on the hosted page.

        ``outcome``: ``paid`` (card, paid at once); ``async_pending`` (bank debit: session
        complete, ``payment_status`` unpaid); ``async_succeeded`` / ``async_failed`` (settle a
        pending one, or on an open session: pending then settled, with both sets of events).
        Returns the session.
        """
        s = self.engine.complete_checkout(
            session_id, outcome=outcome, promotion_code=promotion_code, email=email, name=name
        )
        return self.engine.render(s)

    def expire_checkout(self, session_id: str) -> dict[str, Any]:
        return self.engine.render(self.engine.expire_checkout_session(session_id, None))

    def refund(
        self, charge_or_payment_intent: str, amount: int | None = None, *, reason: str | None = None
    ) -> dict[str, Any]:
        """A refund made outside the app (e.g. in the Dashboard). Returns the refund."""
        key = "payment_intent" if charge_or_payment_intent.startswith("pi_") else "charge"
        p: dict[str, Any] = {key: charge_or_payment_intent, "amount": amount, "reason": reason}
        return self.engine.render(self.engine.create_refund(p, None))

    def dispute(
        self,
        charge_or_payment_intent: str,
        *,
        amount: int | None = None,
        reason: str = "fraudulent",
    ) -> dict[str, Any]:
        """The card holder disputes the charge: ``charge.dispute.created``."""
        return self.engine.render(
            self.engine.create_dispute(charge_or_payment_intent, amount=amount, reason=reason)
        )

    def close_dispute(self, dispute_id: str, *, won: bool = True) -> dict[str, Any]:
        return self.engine.render(self.engine.close_dispute(dispute_id, won=won))

    def renew_subscription(self, subscription_id: str, *, paid: bool = True) -> dict[str, Any]:
        """The next period starts: a new invoice, paid (``invoice.paid``) or not
        (``invoice.payment_failed``, subscription ``past_due``). A subscription set to cancel at
        period end ends instead (``customer.subscription.deleted``). Returns the invoice (or
        the ended subscription).
        """
        return self.engine.render(self.engine.renew_subscription(subscription_id, paid=paid))

    def retry_invoice(self, invoice_id: str, *, paid: bool = True) -> dict[str, Any]:
        """Stripe's dunning retries an open invoice."""
        return self.engine.render(self.engine.retry_invoice(invoice_id, paid=paid))

    def cancel_subscription(self, subscription_id: str) -> dict[str, Any]:
        """Cancelled now, outside the app: ``customer.subscription.deleted``."""
        return self.engine.render(self.engine.cancel_subscription(subscription_id, {}, None))

    # ------------------------------------------------------------------ webhooks
    def add_webhook_endpoint(
        self,
        url: str,
        *,
        secret: str | None = None,
        enabled_events: list[str] | tuple[str, ...] = ("*",),
        api_version: str | None = None,
        transport: Transport | None = None,
    ) -> Endpoint:
        """Register an endpoint (also listed by ``/v1/webhook_endpoints``).

        ``transport(url, body, headers) -> status | (status, text)`` replaces the HTTP POST,
        e.g. to post into Django's test client from ``deliver_pending()`` in the test thread.
        """
        with self.engine.lock:
            ep = self.webhooks.add_endpoint(
                url,
                secret=secret,
                enabled_events=enabled_events,
                api_version=api_version,
                transport=transport,
            )
            self._store_endpoint(ep, description=None, metadata={})
            return ep

    def remove_webhook_endpoint(self, endpoint_id: str) -> None:
        with self.engine.lock:
            self.webhooks.remove_endpoint(endpoint_id)
            self.engine.db.get("webhook_endpoint", {}).pop(endpoint_id, None)

    @property
    def auto_deliver(self) -> bool:
        return self.webhooks.auto_deliver

    @auto_deliver.setter
    def auto_deliver(self, on: bool) -> None:
        with self.engine.lock:
            self.webhooks.auto_deliver = on
            self.webhooks.kick()

    def set_auto_deliver(self, on: bool) -> None:
        self.auto_deliver = on

    @property
    def retry_schedule(self) -> tuple[int, ...]:
        return self.webhooks.retry_schedule

    @retry_schedule.setter
    def retry_schedule(self, schedule: tuple[int, ...]) -> None:
        self.webhooks.retry_schedule = tuple(schedule)

    def deliver_pending(self, *, order: str = "created", seed: int | None = None) -> list[Attempt]:
        """Send every due delivery now, in the calling thread (``created``|``reverse``|``random``)."""
        return self.webhooks.deliver_due(order=order, seed=seed)

    def deliver(
        self,
        event_id: str,
        *,
        endpoint: str | None = None,
        timestamp: int | None = None,
        stale: bool = False,
        bad_signature: bool = False,
        signature_header: str | None = None,
    ) -> list[Attempt]:
        """Send one event now; again if it was delivered already (a duplicate).

        ``stale``: signed 10 minutes ago; ``bad_signature``: signed with a wrong secret;
        ``timestamp``/``signature_header``: exact values. Tampered sends never settle the
        event's queued delivery.
        """
        return self.webhooks.deliver_event(
            event_id,
            endpoint_id=endpoint,
            timestamp=timestamp,
            stale=stale,
            bad_signature=bad_signature,
            signature_header=signature_header,
        )

    def wait_for_deliveries(self, timeout: float = 5.0) -> None:
        """Block until automatic delivery has nothing due or in flight."""
        self.webhooks.wait_idle(timeout)

    def attempts(
        self,
        *,
        event_id: str | None = None,
        endpoint: str | None = None,
        type: str | None = None,
    ) -> list[Attempt]:
        with self.engine.lock:
            return [
                a
                for a in self.webhooks.attempts
                if (event_id is None or a.event_id == event_id)
                and (endpoint is None or a.endpoint_id == endpoint)
                and (type is None or a.event_type == type)
            ]

    def pending_deliveries(self) -> list[Delivery]:
        return self.webhooks.pending()

    def signed_payload(
        self,
        event_id: str,
        *,
        endpoint: str | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """Body and headers of a delivery, without sending (for Django's test client)."""
        return self.webhooks.signed(
            event_id, endpoint_id=endpoint, secret=secret, timestamp=timestamp
        )

    # ------------------------------------------------------------------ clock
    def clock_now(self) -> float:
        return self.clock.now()

    def advance_clock(self, seconds: float) -> float:
        """Move virtual time on: retries fall due, open sessions past ``expires_at`` expire."""
        with self.engine.lock:
            t = self.clock.advance(seconds)
            self.engine.expire_due_sessions()
            self.webhooks.kick()
            return t

    # ------------------------------------------------------------------ /v1/webhook_endpoints
    def _store_endpoint(self, ep: Endpoint, *, description, metadata) -> dict[str, Any]:
        obj = self.shapes.blank(
            "webhook_endpoint",
            id=ep.id,
            api_version=ep.api_version,
            application=None,
            created=now(),
            description=description,
            enabled_events=list(ep.enabled_events),
            metadata=dict(metadata or {}),
            status=ep.status,
            url=ep.url,
        )
        self.engine._put("webhook_endpoint", obj)
        return obj

    def _api_create_endpoint(self, p: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
        if not p["enabled_events"]:
            raise invalid("enabled_events must not be empty", param="enabled_events")
        with self.engine.lock:
            ep = self.webhooks.add_endpoint(
                p["url"], enabled_events=p["enabled_events"], api_version=p.get("api_version")
            )
            obj = self._store_endpoint(
                ep, description=p.get("description"), metadata=p.get("metadata")
            )
            out = deep(obj)
            out["secret"] = ep.secret  # only in the create answer, as in Stripe
            return out

    def _api_update_endpoint(self, ident: str, p: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
        with self.engine.lock:
            obj = self.engine.get("webhook_endpoint", ident)
            ep = self.webhooks.endpoints[ident]
            if p.get("url"):
                obj["url"] = ep.url = p["url"]
            if p.get("enabled_events"):
                obj["enabled_events"] = ep.enabled_events = list(p["enabled_events"])
            if p.get("disabled") is not None:
                obj["status"] = ep.status = "disabled" if p["disabled"] else "enabled"
            if "description" in p:
                obj["description"] = p["description"] or None
            if p.get("metadata") is not None:
                from ._engine import apply_metadata

                apply_metadata(obj, p["metadata"])
            return obj

    def _api_delete_endpoint(self, ident: str, ctx: Ctx) -> dict[str, Any]:
        with self.engine.lock:
            if self.engine.find("webhook_endpoint", ident) is None:
                raise no_such("webhook endpoint", ident)
            self.remove_webhook_endpoint(ident)
            return {"id": ident, "object": "webhook_endpoint", "deleted": True}


def start_stripe_standin(port: int = 0, **options: Any) -> StripeStandin:
    """Start a stand-in on ``127.0.0.1:port`` (0: any free port) and return its handle.

    Use as ``with start_stripe_standin() as standin: ...`` or call ``standin.stop()``.
    Options: see ``StripeStandin``.
    """
    return StripeStandin(port=port, **options).start()


@contextmanager
def stripe_standin_running(**options: Any) -> Iterator[StripeStandin]:
    standin = start_stripe_standin(**options)
    try:
        yield standin
    finally:
        standin.stop()


__all__ = [
    "DEFAULT_API_KEY",
    "Attempt",
    "Endpoint",
    "StripeError",
    "StripeStandin",
    "start_stripe_standin",
    "stripe_standin_running",
]
