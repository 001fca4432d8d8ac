"""Webhook endpoints, signed delivery, retries on a virtual clock, and a log of every attempt."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._core import new_id, new_secret

# Seconds (virtual clock) to wait before each retry after a failed attempt: Stripe retries
# with exponential back-off for up to three days.
DEFAULT_RETRY_SCHEDULE: tuple[int, ...] = (
    60,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    10 * 3600,
    10 * 3600,
    10 * 3600,
    10 * 3600,
    10 * 3600,
)

STALE_SECONDS = 600  # older than stripe.Webhook's 300 s tolerance

Transport = Callable[[str, bytes, dict[str, str]], Any]


class Clock:
    """Wall time plus an offset the tests advance; drives retry schedules and expiry."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> float:
        self.offset += seconds
        return self.now()


@dataclass
class Endpoint:
    id: str
    url: str
    secret: str
    enabled_events: list[str]
    api_version: str | None = None
    status: str = "enabled"
    transport: Transport | None = None

    def wants(self, event_type: str) -> bool:
        return self.status == "enabled" and (
            "*" in self.enabled_events or event_type in self.enabled_events
        )


@dataclass
class Attempt:
    """One HTTP POST of an event to an endpoint."""

    event_id: str
    event_type: str
    endpoint_id: str
    url: str
    kind: str  # automatic | retry | manual | redelivery | tampered
    number: int  # 1 for the first attempt of this (event, endpoint) delivery
    status: int | None  # HTTP status; None when the connection failed
    error: str | None
    response_body: str
    signature_header: str
    payload: str
    timestamp: int  # the signed `t=`
    clock: float  # virtual clock when sent
    sent_at: float  # wall clock when sent

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["ok"] = self.ok
        return d


@dataclass
class Delivery:
    event_id: str
    endpoint_id: str
    seq: int
    next_at: float
    attempts: int = 0
    state: str = "pending"  # pending | in_flight | succeeded | failed
    history: list[Attempt] = field(default_factory=list)


def sign(payload: str, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # Stripe treats 3xx as failure
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http_transport(timeout: float) -> Transport:
    def post(url: str, body: bytes, headers: dict[str, str]):
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                return resp.status, resp.read(4096).decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read(4096).decode("utf-8", "replace")

    return post


class Webhooks:
    """Queues events for endpoints and delivers them (thread or on demand)."""

    def __init__(
        self,
        lock: threading.RLock,
        clock: Clock,
        *,
        auto_deliver: bool = True,
        retry_schedule: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE,
        timeout: float = 10.0,
        default_api_version: str,
    ) -> None:
        self.lock = lock
        self.cond = threading.Condition(lock)
        self.clock = clock
        self.auto_deliver = auto_deliver
        self.retry_schedule = tuple(retry_schedule)
        self.timeout = timeout
        self.default_api_version = default_api_version
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._busy = 0
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.endpoints: dict[str, Endpoint] = {}
            self.events: dict[str, dict[str, Any]] = {}
            self.deliveries: dict[tuple[str, str], Delivery] = {}
            self.attempts: list[Attempt] = []
            self._seq = 0
            self.cond.notify_all()

    # ------------------------------------------------------------------ endpoints
    def add_endpoint(
        self,
        url: str,
        *,
        secret: str | None = None,
        enabled_events: list[str] | tuple[str, ...] = ("*",),
        api_version: str | None = None,
        transport: Transport | None = None,
        endpoint_id: str | None = None,
    ) -> Endpoint:
        with self.lock:
            ep = Endpoint(
                id=endpoint_id or new_id("we"),
                url=url,
                secret=secret or new_secret(),
                enabled_events=list(enabled_events),
                api_version=api_version,
                transport=transport,
            )
            self.endpoints[ep.id] = ep
            return ep

    def remove_endpoint(self, endpoint_id: str) -> None:
        with self.lock:
            self.endpoints.pop(endpoint_id, None)
            for key in [k for k in self.deliveries if k[1] == endpoint_id]:
                d = self.deliveries.pop(key)
                if d.state in ("pending", "in_flight"):
                    self._settled(d.event_id)

    # ------------------------------------------------------------------ queueing
    def enqueue(self, event: dict[str, Any]) -> None:
        """Called (under the lock) for every new event."""
        self.events[event["id"]] = event
        n = 0
        for ep in self.endpoints.values():
            if ep.wants(event["type"]):
                self._seq += 1
                self.deliveries[(event["id"], ep.id)] = Delivery(
                    event["id"], ep.id, self._seq, self.clock.now()
                )
                n += 1
        event["pending_webhooks"] = n
        self.cond.notify_all()

    def _settled(self, event_id: str) -> None:
        evt = self.events.get(event_id)
        if evt is not None and evt["pending_webhooks"] > 0:
            evt["pending_webhooks"] -= 1

    def _due(self) -> list[Delivery]:
        t = self.clock.now()
        due = [d for d in self.deliveries.values() if d.state == "pending" and d.next_at <= t]
        return sorted(due, key=lambda d: (d.next_at if d.attempts else 0, d.seq))

    def pending(self) -> list[Delivery]:
        with self.lock:
            return sorted(
                (d for d in self.deliveries.values() if d.state in ("pending", "in_flight")),
                key=lambda d: d.seq,
            )

    def delivery_succeeded(self, event_id: str) -> bool:
        with self.lock:
            ds = [d for (e, _), d in self.deliveries.items() if e == event_id]
            return all(d.state == "succeeded" for d in ds)

    # ------------------------------------------------------------------ sending
    def _payload(self, event: dict[str, Any], ep: Endpoint) -> str:
        with self.lock:
            evt = dict(event)
            evt["api_version"] = ep.api_version or event.get("api_version")
            return json.dumps(evt, indent=2)

    def _send(
        self,
        delivery: Delivery | None,
        event: dict[str, Any],
        ep: Endpoint,
        kind: str,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        signature_header: str | None = None,
    ) -> Attempt:
        payload = self._payload(event, ep)
        t = int(time.time()) if timestamp is None else int(timestamp)
        header = (
            signature_header
            if signature_header is not None
            else sign(payload, secret or ep.secret, t)
        )
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Accept": "*/*; q=0.5, application/xml",
            "Cache-Control": "no-cache",
            "Stripe-Signature": header,
        }
        transport = ep.transport or http_transport(self.timeout)
        status: int | None
        error = None
        body = ""
        clock_at, sent_at = self.clock.now(), time.time()
        try:
            result = transport(ep.url, payload.encode("utf-8"), headers)
            if isinstance(result, tuple):
                status, body = int(result[0]), str(result[1] or "")
            else:
                status = int(result)
        except Exception as e:  # connection refused, timeout, receiver crash
            status, error = None, f"{type(e).__name__}: {e}"
        with self.lock:
            number = (delivery.attempts + 1) if delivery is not None else 0
            attempt = Attempt(
                event_id=event["id"],
                event_type=event["type"],
                endpoint_id=ep.id,
                url=ep.url,
                kind=kind,
                number=number,
                status=status,
                error=error,
                response_body=body[:2000],
                signature_header=header,
                payload=payload,
                timestamp=t,
                clock=clock_at,
                sent_at=sent_at,
            )
            self.attempts.append(attempt)
            if delivery is not None:
                self._record(delivery, attempt)
            self.cond.notify_all()
            return attempt

    def _record(self, d: Delivery, attempt: Attempt) -> None:
        d.attempts += 1
        d.history.append(attempt)
        if attempt.ok:
            d.state = "succeeded"
            self._settled(d.event_id)
        elif d.attempts > len(self.retry_schedule):
            d.state = "failed"
        else:
            d.state = "pending"
            d.next_at = self.clock.now() + self.retry_schedule[d.attempts - 1]

    def _take(self, d: Delivery) -> tuple[Delivery, dict[str, Any], Endpoint] | None:
        ep = self.endpoints.get(d.endpoint_id)
        evt = self.events.get(d.event_id)
        if ep is None or evt is None or d.state != "pending":
            return None
        d.state = "in_flight"
        return d, evt, ep

    def deliver_due(self, order: str = "created", seed: int | None = None) -> list[Attempt]:
        """Send every due delivery now, in this thread; ``order``: created|reverse|random."""
        with self.lock:
            batch = [t for t in (self._take(d) for d in self._due()) if t]
            self._busy += 1
        try:
            if order == "reverse":
                batch.reverse()
            elif order == "random":
                random.Random(seed).shuffle(batch)
            elif order != "created":
                raise ValueError("order must be created, reverse or random")
            return [
                self._send(d, evt, ep, "retry" if d.attempts else "automatic")
                for d, evt, ep in batch
            ]
        finally:
            with self.lock:
                self._busy -= 1
                self.cond.notify_all()

    def deliver_event(
        self,
        event_id: str,
        *,
        endpoint_id: str | None = None,
        timestamp: int | None = None,
        stale: bool = False,
        bad_signature: bool = False,
        signature_header: str | None = None,
    ) -> list[Attempt]:
        """Send one event now (again, if it was delivered already: a duplicate).

        A normal send consumes the event's queued delivery if one is pending; a tampered one
        (``stale``, ``bad_signature``, ``timestamp``, ``signature_header``) never does.
        """
        tampered = stale or bad_signature or timestamp is not None or signature_header is not None
        if stale and timestamp is None:
            timestamp = int(time.time()) - STALE_SECONDS
        with self.lock:
            evt = self.events.get(event_id)
            if evt is None:
                raise KeyError(f"no such event {event_id!r} (or it was created before reset)")
            if endpoint_id is not None:
                if endpoint_id not in self.endpoints:
                    raise KeyError(f"no such webhook endpoint {endpoint_id!r}")
                eps = [self.endpoints[endpoint_id]]
            else:
                eps = [ep for ep in self.endpoints.values() if ep.wants(evt["type"])]
            plan = []
            for ep in eps:
                d = self.deliveries.get((event_id, ep.id))
                if not tampered and d is not None and d.state == "pending":
                    self._take(d)
                    plan.append((d, ep, "manual"))
                else:
                    plan.append((None, ep, "tampered" if tampered else "redelivery"))
            self._busy += 1
        try:
            return [
                self._send(
                    d,
                    evt,
                    ep,
                    kind,
                    timestamp=timestamp,
                    secret=new_secret() if bad_signature else None,
                    signature_header=signature_header,
                )
                for d, ep, kind in plan
            ]
        finally:
            with self.lock:
                self._busy -= 1
                self.cond.notify_all()

    def signed(
        self,
        event_id: str,
        *,
        endpoint_id: str | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers a delivery of ``event_id`` would carry (nothing is sent)."""
        with self.lock:
            evt = self.events[event_id]
            if endpoint_id is not None:
                ep = self.endpoints[endpoint_id]
            elif self.endpoints:
                ep = next(iter(self.endpoints.values()))
            else:
                ep = Endpoint("we_none", "", secret or "", ["*"])
            payload = self._payload(evt, ep)
            t = int(time.time()) if timestamp is None else timestamp
            header = sign(payload, secret or ep.secret, t)
            return payload.encode("utf-8"), {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": header,
            }

    # ------------------------------------------------------------------ background
    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="stripe-standin-webhooks", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        with self.lock:
            self._stopped = True
            self.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self._stopped and not (self.auto_deliver and self._due()):
                    self.cond.wait(timeout=self._next_wakeup())
                if self._stopped:
                    return
            self.deliver_due()

    def _next_wakeup(self) -> float | None:
        if not self.auto_deliver:
            return None
        waiting = [d.next_at for d in self.deliveries.values() if d.state == "pending"]
        if not waiting:
            return None
        return max(0.01, min(1.0, min(waiting) - self.clock.now()))

    def kick(self) -> None:
        with self.lock:
            self.cond.notify_all()

    def idle(self) -> bool:
        return self._busy == 0 and not (self.auto_deliver and self._due())

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Block until nothing is due or in flight (with automatic delivery on)."""
        with self.lock:
            if not self.cond.wait_for(self.idle, timeout=timeout):
                raise TimeoutError(
                    f"webhook deliveries still running after {timeout}s: "
                    f"{[(d.event_id, d.endpoint_id, d.state) for d in self.pending()]}"
                )
