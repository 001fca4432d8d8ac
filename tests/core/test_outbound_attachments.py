"""Attachments in the email outbox: stored with the row, so a retry sends the same files
once; a calendar invitation laid out as mail clients recognise one; bad attachments
refused before anything is stored."""

import asyncio
import base64

import pytest

from core.models import OutboundEmail
from core.services import (
    ATTACHMENTS_MAX_BYTES,
    InvalidAttachment,
    OutboundAttachment,
    email_enqueue,
)
from core.tasks import send_outbound_email
from tests.funnels.test_sequences_postmark import postmark  # noqa: F401 (fixture)
from tests.harness.smtp import SmtpSink
from tests.harness.wagtail_pages import home_page_install

pytestmark = pytest.mark.django_db

# A PDF-like file with bytes that are not text, and an invitation with a non-ASCII title.
WORKSHEET = b"%PDF-1.7\n\x00\xff\xfe binary \r\n tail" * 40
INVITE = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Lodestone//Tests//EN\r\nMETHOD:REQUEST\r\n"
    "BEGIN:VEVENT\r\nUID:occasion-1.7@academy.example\r\nSEQUENCE:0\r\n"
    "SUMMARY:Hinnoittelu – kysy mitä vain\r\nDTSTAMP:20261123T120000Z\r\n"
    "DTSTART:20261210T160000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


class RefusingSink(SmtpSink):
    """Answers 451 to the first ``temporary`` recipients, then accepts."""

    def __init__(self, *, temporary: int) -> None:
        super().__init__()
        self.temporary = temporary

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await asyncio.sleep(0)
        if self.temporary:
            self.temporary -= 1
            return "451 4.3.2 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def _smtp_to(settings, sink: SmtpSink) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = sink.host, sink.port, 5
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""


@pytest.fixture
def refusing_sink(settings):
    sink = RefusingSink(temporary=2)
    sink.start()
    _smtp_to(settings, sink)
    yield sink
    sink.stop()


def _enqueue(to: str) -> OutboundEmail:
    return email_enqueue(
        to=to,
        subject="Your worksheet and your seat",
        text_body="Attached.",
        html_body="<p>Attached.</p>",
        kind="test:attachments",
        attachments=[
            OutboundAttachment("worksheet.pdf", WORKSHEET, "application/pdf"),
            OutboundAttachment("invite.ics", INVITE, "text/calendar; method=REQUEST"),
        ],
    )


def test_an_email_with_attachments_survives_smtp_retries_and_is_sent_once_intact(
    refusing_sink,
):
    # given an email with two attachments while the server refuses the first two tries
    message = _enqueue("leila@lodestone-mail.fi")

    # when the task runs (eagerly: each retry at once instead of after its backoff)
    send_outbound_email.apply(args=[message.pk])
    send_outbound_email.apply(args=[message.pk])  # a duplicate task message changes nothing

    # then it was tried three times, sent once, with both files byte for byte
    message.refresh_from_db()
    assert (message.status, message.attempts) == (OutboundEmail.Status.SENT, 3)
    [received] = refusing_sink.matching(lambda m: m["To"] == message.to)
    files = {part.get_filename(): part for part in received.iter_attachments()}
    assert set(files) == {"worksheet.pdf", "invite.ics"}
    assert files["worksheet.pdf"].get_content_type() == "application/pdf"
    assert files["worksheet.pdf"].get_content() == WORKSHEET
    assert files["invite.ics"].get_content().decode() == INVITE
    # and the row keeps them (text as text, binary as base64) for the admin and retries
    stored = {item["filename"]: item for item in message.attachments}
    assert base64.b64decode(stored["worksheet.pdf"]["content_base64"]) == WORKSHEET
    assert stored["invite.ics"]["content"] == INVITE


def test_a_calendar_attachment_is_sent_as_an_invitation_and_as_a_file(settings):
    sink = SmtpSink()
    sink.start()
    try:
        _smtp_to(settings, sink)
        message = _enqueue("aino@lodestone-mail.fi")
        send_outbound_email.apply(args=[message.pk])
        received = sink.wait_for(lambda m: m["To"] == message.to)
    finally:
        sink.stop()

    # the invitation is the last alternative of the body, its iTIP method in the type
    # (as Google Calendar lays one out; Gmail, Outlook and Apple Mail show it as such)
    alternative = next(
        p for p in received.walk() if p.get_content_type() == "multipart/alternative"
    )
    body_types = [part.get_content_type() for part in alternative.iter_parts()]
    assert body_types == ["text/plain", "text/html", "text/calendar"]
    calendar_part = list(alternative.iter_parts())[-1]
    assert calendar_part.get_param("method") == "REQUEST"
    assert calendar_part.get_content_charset() == "utf-8"
    assert calendar_part.get_content().replace("\r\n", "\n") == INVITE.replace("\r\n", "\n")
    # and the same file is attached as invite.ics, not as a second invitation
    [invite] = [p for p in received.iter_attachments() if p.get_filename() == "invite.ics"]
    assert invite.get_content_type() == "application/ics"
    assert invite.get_content().decode() == INVITE


@pytest.fixture
def site_home(db):
    return home_page_install(title="Northwind Academy")


def test_through_postmark_the_invitation_goes_as_a_calendar_attachment(site_home, postmark):
    # Postmark's API (django-anymail) takes no calendar alternative; a refusal would fail
    # every webinar email, so there the invitation travels as the attachment alone.
    message = _enqueue("omar@lodestone-mail.fi")

    send_outbound_email.apply(args=[message.pk])

    message.refresh_from_db()
    assert message.status == OutboundEmail.Status.SENT, message.last_error
    [sent] = postmark.received
    files = {item["Name"]: item for item in sent["Attachments"]}
    assert set(files) == {"worksheet.pdf", "invite.ics"}
    content_type = files["invite.ics"]["ContentType"].replace('"', "")
    assert content_type.startswith("text/calendar") and "method=REQUEST" in content_type
    assert base64.b64decode(files["invite.ics"]["Content"]).decode() == INVITE
    assert base64.b64decode(files["worksheet.pdf"]["Content"]) == WORKSHEET


@pytest.mark.parametrize(
    ("attachment", "message"),
    [
        (OutboundAttachment("", b"x", "application/pdf"), "file name"),
        (OutboundAttachment("../../etc/passwd", b"x", "text/plain"), "file name"),
        (OutboundAttachment("a\r\nBcc: x@y.z", b"x", "text/plain"), "file name"),
        (OutboundAttachment("a.pdf", b"x", "pdf"), "not a MIME type"),
        (OutboundAttachment("a.txt", b"x", "text/plain\r\nBcc: x@y.z"), "not a MIME type"),
        (OutboundAttachment("a.txt", b"\xff\xfe", "text/plain"), "not UTF-8 text"),
        (
            OutboundAttachment("big.bin", b"\0" * ATTACHMENTS_MAX_BYTES, "application/zip"),
            "exceed the outbox limit",
        ),
    ],
)
def test_a_bad_attachment_is_refused_clearly_and_nothing_is_queued(attachment, message):
    with pytest.raises(InvalidAttachment, match=message):
        email_enqueue(
            to="leila@lodestone-mail.fi",
            subject="-",
            text_body="-",
            kind="test:attachments",
            attachments=[attachment],
        )
    assert not OutboundEmail.objects.filter(kind="test:attachments").exists()
