import base64
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from email import encoders
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.text import MIMEText

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


# Attachments ride in the outbox row (every retry sends the same bytes); big files belong
# behind a signed link (media app), not in an email.
ATTACHMENTS_MAX_BYTES = 256 * 1024
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


class InvalidAttachment(ValueError):
    """An attachment the outbox will not store (bad name or type, too large)."""


@dataclass(frozen=True)
class OutboundAttachment:
    """A file to send with an email. ``content_type`` may carry parameters: a
    ``text/calendar; method=REQUEST`` (or CANCEL) attachment is sent as a calendar
    invitation (see ``email_deliver``)."""

    filename: str
    content: bytes | str
    content_type: str


def _content_type_parts(content_type: str) -> tuple[str, dict[str, str]]:
    """("type/subtype", {param: value}) of a Content-Type value, lower-cased type."""
    header = Message()
    header["Content-Type"] = content_type
    params = header.get_params() or []
    mime_type = params[0][0].lower() if params else ""
    return mime_type, {key.lower(): value for key, value in params[1:]}


def _attachment_record(attachment: OutboundAttachment) -> dict:
    filename = (attachment.filename or "").strip()
    if not filename or len(filename) > 200 or re.search(r"[\\/\x00-\x1f\x7f]", filename):
        raise InvalidAttachment(f"Attachment file name {attachment.filename!r} is not usable.")
    content_type = (attachment.content_type or "").strip()
    mime_type = "" if re.search(r"[\r\n]", content_type) else _content_type_parts(content_type)[0]
    if not _MIME_TYPE.match(mime_type):
        raise InvalidAttachment(f"Attachment type {attachment.content_type!r} is not a MIME type.")
    content = attachment.content
    if isinstance(content, str):
        content = content.encode()
    record = {"filename": filename, "content_type": content_type}
    if mime_type.startswith("text/"):
        try:
            record["content"] = content.decode()
        except UnicodeDecodeError as exc:
            raise InvalidAttachment(f"Attachment {filename!r} is not UTF-8 text.") from exc
    else:
        record["content_base64"] = base64.b64encode(content).decode("ascii")
    return record


def _attachment_records(attachments: Sequence[OutboundAttachment] | None) -> list[dict]:
    records = [_attachment_record(attachment) for attachment in attachments or ()]
    size = sum(
        len(r.get("content", "").encode()) + len(r.get("content_base64", "")) for r in records
    )
    if size > ATTACHMENTS_MAX_BYTES:
        raise InvalidAttachment(
            f"Attachments of {size} bytes exceed the outbox limit of {ATTACHMENTS_MAX_BYTES}; "
            "link to large files instead."
        )
    return records


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
    attachments: Sequence[OutboundAttachment] | None = None,
) -> OutboundEmail:
    """Store an email and queue its sending once the current transaction commits."""
    from .tasks import send_outbound_email

    records = _attachment_records(attachments)
    message = OutboundEmail.objects.create(
        kind=kind,
        to=to,
        from_email=from_email or default_from_email(),
        subject=" ".join(subject.splitlines()).strip(),
        text_body=text_body,
        html_body=html_body,
        headers=headers or {},
        attachments=records,
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


def _attachment_content(record: dict) -> bytes:
    if "content_base64" in record:
        return base64.b64decode(record["content_base64"])
    return record.get("content", "").encode()


def _attachment_part(record: dict, content: bytes) -> MIMEBase:
    """A MIME part for a stored attachment, its Content-Type parameters kept (Django's
    ``attach(filename, content, mimetype)`` takes a bare type)."""
    mime_type, params = _content_type_parts(record["content_type"])
    maintype, subtype = mime_type.split("/", 1)
    if maintype == "text":
        part = MIMEText(content.decode(), subtype, "utf-8")  # base64: bytes arrive exact
    else:
        part = MIMEBase(maintype, subtype)
        part.set_payload(content)
        encoders.encode_base64(part)  # in lines of 76: SMTP refuses lines over 998
    for key, value in params.items():
        if key != "charset":
            part.set_param(key, value)
    part.set_param("name", record["filename"])
    part.add_header("Content-Disposition", "attachment", filename=record["filename"])
    return part


def _backend_takes_alternative_parts() -> bool:
    # django-anymail (Postmark) refuses alternatives other than HTML; there the invitation
    # goes as a text/calendar attachment alone, which Postmark passes on as such.
    return not settings.EMAIL_BACKEND.startswith("anymail.")


def _attach(mail: EmailMultiAlternatives, record: dict) -> None:
    content = _attachment_content(record)
    mime_type, params = _content_type_parts(record["content_type"])
    method = (params.get("method") or "").upper()
    if mime_type == "text/calendar" and method and _backend_takes_alternative_parts():
        # An iMIP invitation (RFC 6047) laid out as Google Calendar sends one, which Gmail,
        # Outlook and Apple Mail all recognise: the calendar as the last alternative of the
        # body, "text/calendar; method=…" (the method must match the file's METHOD), and
        # the same file as a plain attachment for clients that only look there. The
        # attachment is application/ics so no client takes it for a second invitation.
        mail.attach_alternative(content.decode(), f"text/calendar; method={method}")
        mail.attach(
            _attachment_part(
                {"filename": record["filename"], "content_type": "application/ics"}, content
            )
        )
        return
    mail.attach(_attachment_part(record, content))


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
    for record in message.attachments or ():
        _attach(mail, record)
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
    return send_outbound_email.requeue(stale)
