"""Drill: the SMTP server refuses mail. A temporary refusal (4xx) is retried with backoff
and the message goes out once the server accepts; a permanent refusal (5xx) stops at once,
stays visible in the outbox with the server's words, and is not retried by the sweep."""

import asyncio
from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import OutboundEmail
from core.services import email_enqueue, email_requeue_stale
from core.tasks import send_outbound_email
from tests.harness.smtp import SmtpSink

pytestmark = pytest.mark.django_db


class RefusingSink(SmtpSink):
    """Refuses recipients with a given reply: `temporary` times with 451, `permanent`
    always with 550."""

    def __init__(self, *, temporary: int, permanent: set[str]) -> None:
        super().__init__()
        self.temporary = temporary
        self.permanent = permanent
        self.refused = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await asyncio.sleep(0)
        if address in self.permanent:
            return "550 5.1.1 Mailbox does not exist"
        if self.refused < self.temporary:
            self.refused += 1
            return "451 4.3.2 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def refusing_sink(settings):
    sink = RefusingSink(temporary=2, permanent={"gone@drill.lodestone-mail.fi"})
    sink.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = sink.host, sink.port, 5
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield sink
    sink.stop()


def test_smtp_refusing_for_a_while_retries_and_sends_once(refusing_sink):
    # given an email in the outbox while the server answers 451 to the first two tries
    message = email_enqueue(
        to="leila@drill.lodestone-mail.fi", subject="Your receipt", text_body="-", kind="drill"
    )

    # when the task runs (eagerly here: each retry at once instead of after its backoff)
    send_outbound_email.apply(args=[message.pk])

    # then it was tried three times and sent once
    message.refresh_from_db()
    assert message.status == OutboundEmail.Status.SENT
    assert message.attempts == 3
    assert message.last_error == ""
    assert len(refusing_sink.matching(lambda m: str(m["To"]) == message.to)) == 1


def test_smtp_refusing_a_recipient_for_good_fails_once_and_stays_visible(refusing_sink):
    refusing_sink.temporary = 0
    message = email_enqueue(
        to="gone@drill.lodestone-mail.fi", subject="Your receipt", text_body="-", kind="drill"
    )

    send_outbound_email.apply(args=[message.pk])

    message.refresh_from_db()
    assert message.status == OutboundEmail.Status.FAILED
    assert message.attempts == 1
    assert "550" in message.last_error and "Mailbox does not exist" in message.last_error
    # the sweep leaves a final failure alone (the admin shows it; a person decides)
    assert email_requeue_stale(now=timezone.now() + timedelta(hours=3)) == 0
    assert refusing_sink.matching(lambda m: str(m["To"]) == message.to) == []
