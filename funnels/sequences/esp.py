"""What the email provider tells us, as django-anymail normalises it: hard bounces and
spam complaints suppress the address for good; an unsubscribe at the provider, or a
reply to our List-Unsubscribe mailto, unsubscribes. Events arrive again on retries, so
every outcome here is idempotent."""

import logging
import re

from anymail.signals import EventType, RejectReason

from funnels import exceptions
from funnels.models import Subscriber

from .services import address_suppress

logger = logging.getLogger(__name__)

# Provider event types that mean "this will never be delivered" only temporarily.
SOFT_BOUNCE_TYPES = {"SoftBounce", "Transient", "DnsError", "AutoResponder"}
UNSUBSCRIBE_SUBJECT = re.compile(r"unsubscribe\s+(?P<token>[\w:\-]+)", re.IGNORECASE)


def _is_soft(event) -> bool:
    raw = event.esp_event if isinstance(event.esp_event, dict) else {}
    return raw.get("Type") in SOFT_BOUNCE_TYPES or raw.get("bounceType") == "Transient"


def tracking_event_record(*, event, esp_name: str) -> str:
    """Apply one tracking event; returns what was done (for logs and tests)."""
    from funnels.services import Visitor, subscriber_unsubscribe

    email = (event.recipient or "").strip()
    if not email:
        return "ignored"
    kind = event.event_type
    if kind == EventType.COMPLAINED:
        address_suppress(email=email, reason="complained")
        return "complained"
    if kind == EventType.BOUNCED and not _is_soft(event):
        address_suppress(email=email, reason="bounced")
        return "bounced"
    if kind == EventType.REJECTED and event.reject_reason in (
        RejectReason.BOUNCED,
        RejectReason.INVALID,
    ):
        address_suppress(email=email, reason="bounced")
        return "bounced"
    if kind == EventType.UNSUBSCRIBED:
        subscriber = Subscriber.objects.filter(email__iexact=email).first()
        if subscriber is not None:
            subscriber_unsubscribe(
                subscriber=subscriber, visitor=Visitor(), source=f"{esp_name} unsubscribe"
            )
        return "unsubscribed"
    return "ignored"


def inbound_unsubscribe(*, event, esp_name: str) -> str:
    """A mail to the List-Unsubscribe mailto address: the subject carries the same signed
    token as the one-click link, so only the recipient of our email can send it."""
    from funnels.services import Visitor, subscriber_from_link, subscriber_unsubscribe

    message = event.message
    match = UNSUBSCRIBE_SUBJECT.search((message.subject or "") if message else "")
    if not match:
        return "ignored"
    try:
        subscriber = subscriber_from_link("funnels:unsubscribe", match.group("token"))
    except exceptions.FunnelError:
        logger.info("mailto unsubscribe with an invalid token via %s", esp_name)
        return "invalid"
    subscriber_unsubscribe(subscriber=subscriber, visitor=Visitor(), source="mailto")
    return "unsubscribed"
