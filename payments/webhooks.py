"""Stripe events: verify, store, process exactly once, replay, reconcile.

Every event is stored under its Stripe id (a unique constraint) before anything else
happens, then processed in its own transaction holding a lock on its row: a duplicate
delivery that arrives while the first is still being processed waits, then finds it done.
A handler that raises leaves the event unprocessed with its error, for Stripe's retries,
``stripe_replay`` or the reconciliation sweep.
"""

import json
import logging
import math
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import stripe
from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from . import exceptions, services
from .models import StripeEvent
from .stripe_client import as_dict, stripe_client

logger = logging.getLogger(__name__)

SIGNATURE_TOLERANCE = 300  # seconds; Stripe's own default
STRIPE_ID_MAX_LENGTH = 255  # StripeEvent.stripe_id
RECONCILE_WINDOW = timedelta(days=3)


def _checkout_completed(obj: dict) -> None:
    services.order_fulfil_from_session(session=obj)


def _checkout_async_failed(obj: dict) -> None:
    services.order_fail_from_session(session=obj)


HANDLERS: dict[str, Callable[[dict], object]] = {
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "checkout.session.async_payment_failed": _checkout_async_failed,
    "charge.refunded": lambda obj: services.charge_refund_record(charge=obj),
    "charge.dispute.created": lambda obj: services.dispute_record(dispute=obj),
    "invoice.paid": lambda obj: services.invoice_paid_record(invoice=obj),
    "invoice.payment_failed": lambda obj: services.invoice_payment_failed_record(invoice=obj),
    "customer.subscription.deleted": lambda obj: services.subscription_ended_record(
        subscription=obj
    ),
}


# --- Receiving --------------------------------------------------------------------------


def webhook_verify(*, body: bytes, signature_header: str | None) -> dict:
    """The event in a webhook body, if the Stripe-Signature header proves it is Stripe's and
    fresh (5 minutes); WebhookRejected otherwise. Touches no database."""
    if not signature_header:
        raise exceptions.WebhookRejected("Missing Stripe-Signature header.")
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise exceptions.PaymentsNotConfigured("STRIPE_WEBHOOK_SECRET is not set.")
    try:
        stripe.WebhookSignature.verify_header(
            body.decode("utf-8"), signature_header, secret, tolerance=SIGNATURE_TOLERANCE
        )
    except UnicodeDecodeError as exc:
        raise exceptions.WebhookRejected("Body is not UTF-8.") from exc
    except stripe.SignatureVerificationError as exc:
        raise exceptions.WebhookRejected(f"Bad signature: {exc}") from exc
    try:
        payload = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotStandardJSON as exc:
        raise exceptions.WebhookRejected(f"Body is not standard JSON: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise exceptions.WebhookRejected("Body is not JSON.") from exc
    if (
        not isinstance(payload, dict)
        or payload.get("object") != "event"
        or not isinstance(payload.get("id"), str)
        or not payload["id"].startswith("evt_")
        or len(payload["id"]) > STRIPE_ID_MAX_LENGTH
        or not isinstance(payload.get("type"), str)
        or not isinstance(payload.get("data"), dict)
        or not isinstance(payload["data"].get("object"), dict)
    ):
        raise exceptions.WebhookRejected("Body is not a Stripe event.")
    return payload


class _NotStandardJSON(ValueError):
    pass


def _refuse_constant(name: str):
    # NaN, Infinity, -Infinity: Python's json reads them, JSON (and PostgreSQL's jsonb) does
    # not, and Stripe never sends them.
    raise _NotStandardJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):  # 1e999
        raise _NotStandardJSON(f"{text[:40]} is out of range")
    return number


# PostgreSQL text and jsonb cannot hold NUL, nor can UTF-8 hold a lone surrogate (JSON's
# "\ud800"); both become U+FFFD, the replacement character, in what we store.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_DEPTH = 64  # Stripe's events nest a handful of levels


def storable(value, *, depth: int = 0):
    """``value`` as PostgreSQL can store it: every string (keys too) without NUL or lone
    surrogates. Stored with the event and processed from the store, so the handlers see
    the same data the admin shows. WebhookRejected when it nests absurdly deep."""
    if depth > MAX_DEPTH:
        raise exceptions.WebhookRejected("Body nests too deep to be a Stripe event.")
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {storable(k): storable(v, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v, depth=depth + 1) for v in value]
    return value


def _created_at(created) -> datetime | None:
    if isinstance(created, bool) or not isinstance(created, int | float):
        return None
    try:
        return datetime.fromtimestamp(created, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def stripe_event_record(*, payload: dict, via: str = "webhook") -> StripeEvent:
    """Store an event under its Stripe id; a second copy returns the stored row.

    Strings PostgreSQL cannot hold (NUL, lone surrogates) are stored with U+FFFD in their
    place (``storable``); WebhookRejected if the event still cannot be stored."""
    payload = storable(payload)
    existing = StripeEvent.objects.filter(stripe_id=payload["id"]).first()
    if existing is not None:
        return existing
    api_version = payload.get("api_version")
    try:
        with transaction.atomic():
            return StripeEvent.objects.create(
                stripe_id=payload["id"],
                type=str(payload.get("type", ""))[:128],
                api_version=api_version[:64] if isinstance(api_version, str) else "",
                livemode=payload.get("livemode") is True,
                payload=payload,
                stripe_created_at=_created_at(payload.get("created")),
                received_via=via,
            )
    except IntegrityError:
        # A concurrent delivery of the same event stored it first.
        return StripeEvent.objects.get(stripe_id=payload["id"])
    except DataError as exc:
        # Whatever else the database refuses: not an event we can keep, and never a 500.
        logger.warning("Stripe event %r could not be stored: %s", payload["id"][:80], exc)
        raise exceptions.WebhookRejected("The event cannot be stored.") from exc


@dataclass
class ProcessResult:
    event: StripeEvent
    processed_now: bool  # False: someone else had already processed it


def stripe_event_process(*, event_id: int, force: bool = False) -> ProcessResult:
    """Process a stored event once. ``force`` runs it again even if it was processed (the
    handlers are idempotent, so this repairs rather than repeats).

    Raises EventProcessingFailed, after recording the error on the event.
    """
    try:
        with transaction.atomic():
            event = StripeEvent.objects.select_for_update().get(pk=event_id)
            if event.processed_at is not None and not force:
                return ProcessResult(event=event, processed_now=False)
            handler = HANDLERS.get(event.type)
            if handler is not None:
                handler(event.data_object)
            event.processed_at = timezone.now()
            event.attempts = F("attempts") + 1
            event.last_error = ""
            event.error_traceback = ""
            event.save(update_fields=["processed_at", "attempts", "last_error", "error_traceback"])
            event.refresh_from_db()
            return ProcessResult(event=event, processed_now=True)
    except Exception as exc:
        summary = traceback_summary(exc)
        StripeEvent.objects.filter(pk=event_id).update(
            attempts=F("attempts") + 1,
            last_error=f"{type(exc).__name__}: {exc}"[:2000],
            last_error_at=timezone.now(),
            error_traceback=summary,
        )
        logger.exception("Processing Stripe event %s failed", event_id)
        raise exceptions.EventProcessingFailed(str(exc)) from exc


def traceback_summary(exc: BaseException, *, frames: int = 8) -> str:
    """Where it failed, short enough to read in the admin: our own frames (the last few)
    plus the innermost one, then the exception."""
    stack = traceback.extract_tb(exc.__traceback__)
    keep = [i for i, f in enumerate(stack) if "site-packages" not in f.filename][-frames:]
    if stack and len(stack) - 1 not in keep:
        keep.append(len(stack) - 1)
    lines = [
        "Traceback (most recent call last; library frames left out):\n",
        *traceback.format_list([stack[i] for i in keep]),
        *traceback.format_exception_only(exc),
    ]
    return "".join(lines)[-4000:]


def stripe_event_receive(*, payload: dict, via: str = "webhook") -> ProcessResult:
    event = stripe_event_record(payload=payload, via=via)
    return stripe_event_process(event_id=event.pk)


# --- Replay and reconciliation ---------------------------------------------------------------


def stripe_event_replay(*, stripe_id: str, force: bool = False) -> ProcessResult:
    """Process a stored event again (after fixing what made it fail). An event we never
    stored is fetched from Stripe first."""
    event = StripeEvent.objects.filter(stripe_id=stripe_id).first()
    if event is None:
        payload = as_dict(stripe_client().v1.events.retrieve(stripe_id))
        event = stripe_event_record(payload=payload, via="replay")
    return stripe_event_process(event_id=event.pk, force=force)


@dataclass
class ReconcileReport:
    seen: int = 0
    processed: int = 0
    already_done: int = 0
    failed: list[str] = field(default_factory=list)


def stripe_reconcile(*, since: datetime) -> ReconcileReport:
    """Ask Stripe for the events since ``since`` and process any we have not: the safety net
    for webhooks that never arrived (endpoint down, disabled, misconfigured)."""
    client = stripe_client()
    events = client.v1.events.list(
        params={
            "created": {"gte": int(since.timestamp())},
            "types": sorted(HANDLERS),
            "limit": 100,
        }
    )
    payloads = [as_dict(event) for event in events.auto_paging_iter()]
    report = ReconcileReport()
    # Stripe lists newest first; the handlers cope with any order, but oldest first reads
    # like what happened.
    for payload in sorted(payloads, key=lambda p: (p.get("created") or 0, p["id"])):
        report.seen += 1
        event = stripe_event_record(payload=payload, via="reconcile")
        try:
            result = stripe_event_process(event_id=event.pk)
        except exceptions.EventProcessingFailed:
            report.failed.append(payload["id"])
            continue
        if result.processed_now:
            report.processed += 1
        else:
            report.already_done += 1
    return report


def stripe_reconcile_recent() -> ReconcileReport:
    report = stripe_reconcile(since=timezone.now() - RECONCILE_WINDOW)
    _retry_unfinished_plan_cancellations()
    return report


def _retry_unfinished_plan_cancellations() -> None:
    from .models import Order

    pending = Order.objects.filter(
        plan_completed_at__isnull=False, subscription_cancel_requested_at__isnull=True
    ).values_list("pk", flat=True)[:100]
    for order_id in pending:
        try:
            services.order_plan_subscription_cancel(order_id=order_id)
        except Exception as exc:
            logger.warning("Plan of order %s still not cancelled: %r", order_id, exc)
