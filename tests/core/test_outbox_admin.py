"""The email outbox in the admin lists an email's attachments (name, size, type), escaped,
and never serves their bytes."""

import base64

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from accounts.models import User
from core.models import OutboundEmail
from core.services import OutboundAttachment, email_enqueue

pytestmark = pytest.mark.django_db

WORKSHEET = b"%PDF-1.7\n\x00\xff\xfe worksheet bytes" * 64
INVITE = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nSUMMARY:Hinnoittelu – kysy\r\nEND:VCALENDAR\r\n"
HOSTILE_NAME = '"><img src=x onerror=alert(1)>.pdf'


@pytest.fixture
def message() -> OutboundEmail:
    return email_enqueue(
        to="maryam@example.com",
        subject="Your worksheet and invitation",
        text_body="Attached.",
        kind="tests:attachments",
        attachments=[
            OutboundAttachment(HOSTILE_NAME, WORKSHEET, "application/pdf"),
            OutboundAttachment("invite.ics", INVITE, "text/calendar; method=REQUEST"),
        ],
    )


def inspect_url(message: OutboundEmail) -> str:
    return reverse("outbound_emails:inspect", args=[message.pk])


def test_inspect_lists_each_attachment_with_name_size_and_type_escaped(client, message):
    client.force_login(User.objects.create_superuser("creator@example.com", "a-long pass"))

    response = client.get(inspect_url(message))

    assert response.status_code == 200
    page = response.content.decode()
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;.pdf" in page
    assert "<img src=x" not in page
    assert f'title="{len(WORKSHEET)} bytes"' in page
    assert f'title="{len(INVITE.encode())} bytes"' in page
    assert "application/pdf" in page
    assert "text/calendar; method=REQUEST" in page


def test_inspect_shows_no_attachment_bytes_and_no_download(client, message):
    client.force_login(User.objects.create_superuser("creator@example.com", "a-long pass"))

    page = client.get(inspect_url(message)).content.decode()

    assert base64.b64encode(WORKSHEET).decode()[:40] not in page
    assert "SUMMARY:Hinnoittelu" not in page
    assert "download" not in page.lower()


def test_inspect_of_an_email_without_attachments_says_none(client):
    client.force_login(User.objects.create_superuser("creator@example.com", "a-long pass"))
    message = email_enqueue(to="a@example.com", subject="Hi", text_body="Hi", kind="tests:plain")

    response = client.get(inspect_url(message))

    assert response.status_code == 200
    assert "Content type" not in response.content.decode()


def test_a_malformed_attachment_record_does_not_break_the_page(client, message):
    client.force_login(User.objects.create_superuser("creator@example.com", "a-long pass"))
    OutboundEmail.objects.filter(pk=message.pk).update(
        attachments=[{"filename": "odd.bin", "content_base64": "not base64!"}, "junk"]
    )

    response = client.get(inspect_url(message))

    assert response.status_code == 200
    assert "odd.bin" in response.content.decode()


def test_staff_without_outbox_permission_cannot_inspect_it(client, message):
    staff = User.objects.create_user("editor@example.com", "a-long pass", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="access_admin"))
    client.force_login(staff)

    response = client.get(inspect_url(message))

    assert response.status_code in (302, 403)
    assert HOSTILE_NAME.encode() not in response.content
    assert b"invite.ics" not in response.content


def test_a_visitor_who_is_not_staff_is_sent_to_log_in(client, message):
    client.force_login(User.objects.create_user("buyer@example.com", "a-long pass"))

    response = client.get(inspect_url(message))

    assert response.status_code == 302
    assert "login" in response["Location"]
