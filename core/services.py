import logging
import time
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from wagtail.models import Site

from .models import BrandSettings, OutboundEmail

logger = logging.getLogger(__name__)

# A row still "queued" this long after commit never reached the broker.
STALE_QUEUED_AFTER = timedelta(minutes=2)
# A row that failed a try waits for its retry (backoff capped at an hour, core.tasks); one
# still waiting well past that lost its retry message (broker restarted without its data).
STALE_RETRY_AFTER = timedelta(hours=1, minutes=15)


def email_send_lease() -> timedelta:
    """How long a worker's claim on a row lasts. A send takes a few SMTP round trips of at
    most EMAIL_TIMEOUT each; a claim older than the lease belongs to a worker that died
    mid-send (SIGKILL, OOM, machine lost), and the row may be claimed again."""
    return timedelta(seconds=settings.EMAIL_SEND_LEASE)


_brand_cache: dict = {}
BRAND_CACHE_SECONDS = 10


def brand_settings() -> BrandSettings:
    """The default site's brand and sender. Read on every email, so kept in memory for a
    few seconds; a save in the admin clears it here and reaches other processes in 10 s."""
    cached = _brand_cache.get("brand")
    if cached and cached[0] > time.monotonic():
        return cached[1]
    site = Site.objects.filter(is_default_site=True).first() or Site.objects.first()
    brand = BrandSettings.for_site(site) if site else BrandSettings()
    _brand_cache["brand"] = (time.monotonic() + BRAND_CACHE_SECONDS, brand)
    return brand


def brand_settings_forget(**kwargs) -> None:
    _brand_cache.clear()


def default_from_email() -> str:
    return brand_settings().from_email or settings.DEFAULT_FROM_EMAIL


@transaction.atomic
def email_enqueue(
    *,
    to: str,
    subject: str,
    text_body: str,
    html_body: str = "",
    kind: str,
    from_email: str = "",
    headers: dict[str, str] | None = None,
) -> OutboundEmail:
    """Store an email and queue its sending once the current transaction commits."""
    from .tasks import send_outbound_email

    message = OutboundEmail.objects.create(
        kind=kind,
        to=to,
        from_email=from_email or default_from_email(),
        subject=" ".join(subject.splitlines()).strip(),
        text_body=text_body,
        html_body=html_body,
        headers=headers or {},
    )
    send_outbound_email.delay_on_commit(message.pk)
    return message


def email_claim(*, email_id: int) -> OutboundEmail | None:
    """Move a queued row to "sending"; only one worker wins, the others get None.

    A row left in "sending" by a worker that died mid-send can be claimed again once its
    lease has run out (the task retries until then)."""
    now = timezone.now()
    expired = now - email_send_lease()
    claimed = (
        OutboundEmail.objects.filter(pk=email_id)
        .filter(
            Q(status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.FAILED])
            | Q(status=OutboundEmail.Status.SENDING, claimed_at__lt=expired)
            | Q(
                status=OutboundEmail.Status.SENDING, claimed_at__isnull=True, created_at__lt=expired
            )
        )
        .update(status=OutboundEmail.Status.SENDING, attempts=F("attempts") + 1, claimed_at=now)
    )
    if not claimed:
        return None
    return OutboundEmail.objects.get(pk=email_id)


def email_lease_remaining(*, email_id: int) -> float | None:
    """Seconds until another worker's claim on a row runs out; None when the row is not
    held by a claim (sent, failed for good, gone)."""
    row = (
        OutboundEmail.objects.filter(pk=email_id, status=OutboundEmail.Status.SENDING)
        .values("claimed_at", "created_at")
        .first()
    )
    if row is None:
        return None
    held_since = row["claimed_at"] or row["created_at"]
    return max(0.0, (held_since + email_send_lease() - timezone.now()).total_seconds())


def outbound_message_id(message: OutboundEmail) -> str:
    """The same Message-ID for every try of one row: should a worker die between the SMTP
    server's acceptance and recording it, the second copy is recognisably the same message
    (receiving systems and mail clients collapse duplicates by Message-ID)."""
    domain = (message.from_email or settings.DEFAULT_FROM_EMAIL).rpartition("@")[2]
    domain = domain.strip(" >").lower() or "localhost"
    return f"<outbound.{message.pk}.{int(message.created_at.timestamp())}@{domain}>"


def email_deliver(*, message: OutboundEmail) -> None:
    """Hand a claimed row to the email backend and record the outcome."""
    headers = dict(message.headers)
    if not any(name.lower() == "message-id" for name in headers):
        headers["Message-ID"] = outbound_message_id(message)
    mail = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text_body,
        from_email=message.from_email or settings.DEFAULT_FROM_EMAIL,
        to=[message.to],
        headers=headers,
    )
    if message.html_body:
        mail.attach_alternative(message.html_body, "text/html")
    mail.send(fail_silently=False)
    OutboundEmail.objects.filter(pk=message.pk).update(
        status=OutboundEmail.Status.SENT,
        sent_at=timezone.now(),
        message_id=mail.extra_headers.get("Message-ID", "") or "",
        last_error="",
    )


def email_record_failure(*, email_id: int, error: str, final: bool) -> None:
    # Not final: back to "queued" so the retry can claim it again.
    status = OutboundEmail.Status.FAILED if final else OutboundEmail.Status.QUEUED
    OutboundEmail.objects.filter(pk=email_id).update(status=status, last_error=error[:2000])


def email_requeue_stale(*, now=None) -> int:
    """Re-queue rows that were committed but never sent: never handed to the broker (it was
    down), left "sending" by a worker that died, or whose retry message was lost.

    ``now`` lets a drill run the sweep as of a later time instead of waiting for it."""
    from .tasks import send_outbound_email

    now = now or timezone.now()
    expired = now - email_send_lease()
    OutboundEmail.objects.filter(status=OutboundEmail.Status.SENDING, sent_at__isnull=True).filter(
        Q(claimed_at__lt=expired) | Q(claimed_at__isnull=True, created_at__lt=expired)
    ).update(status=OutboundEmail.Status.QUEUED)
    stale = list(
        OutboundEmail.objects.filter(status=OutboundEmail.Status.QUEUED)
        .filter(
            Q(claimed_at__isnull=True, created_at__lt=now - STALE_QUEUED_AFTER)
            | Q(claimed_at__lt=now - STALE_RETRY_AFTER)
        )
        .values_list("pk", flat=True)[:1000]
    )
    for pk in stale:
        send_outbound_email.delay(pk)
    return len(stale)
