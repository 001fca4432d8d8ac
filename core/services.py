import logging
import time
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from wagtail.models import Site

from .models import BrandSettings, OutboundEmail

logger = logging.getLogger(__name__)

# A row stuck in "sending" this long belongs to a worker that died mid-send.
STALE_SENDING_AFTER = timedelta(minutes=15)
# A row still "queued" this long after commit never reached the broker.
STALE_QUEUED_AFTER = timedelta(minutes=2)


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
    """Move a queued row to "sending"; only one worker wins, the others get None."""
    claimed = OutboundEmail.objects.filter(
        pk=email_id, status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.FAILED]
    ).update(status=OutboundEmail.Status.SENDING, attempts=F("attempts") + 1)
    if not claimed:
        return None
    return OutboundEmail.objects.get(pk=email_id)


def email_deliver(*, message: OutboundEmail) -> None:
    """Hand a claimed row to the email backend and record the outcome."""
    mail = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text_body,
        from_email=message.from_email or settings.DEFAULT_FROM_EMAIL,
        to=[message.to],
        headers=message.headers,
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


def email_requeue_stale() -> int:
    """Re-queue rows that were committed but never sent (broker down, worker killed)."""
    from .tasks import send_outbound_email

    now = timezone.now()
    OutboundEmail.objects.filter(
        status=OutboundEmail.Status.SENDING,
        created_at__lt=now - STALE_SENDING_AFTER,
        sent_at__isnull=True,
    ).update(status=OutboundEmail.Status.QUEUED)
    stale = list(
        OutboundEmail.objects.filter(
            status=OutboundEmail.Status.QUEUED, created_at__lt=now - STALE_QUEUED_AFTER
        ).values_list("pk", flat=True)[:1000]
    )
    for pk in stale:
        send_outbound_email.delay(pk)
    return len(stale)
