"""The harness's own tests: each real server does what the rest of the suite relies on."""

import re
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from playwright.sync_api import expect

from accounts.models import User
from core.models import OutboundEmail
from core.services import email_enqueue
from core.tasks import send_outbound_email
from media.delivery import protected_url
from tests.harness.wagtail_pages import home_page_install
from tests.harness.waiting import wait_until
from tests.harness.web import http_get

# --- S3 (SeaweedFS) ------------------------------------------------------------------


def _save(storage, name: str, content: bytes) -> str:
    return storage.save(f"harness/{uuid.uuid4().hex}/{name}", ContentFile(content))


def test_file_saved_through_the_protected_storage_is_readable_through_its_presigned_url(
    s3_protected_storage,
):
    # given
    name = _save(s3_protected_storage.storage, "notes.txt", b"lesson one notes")

    # when
    response = http_get(s3_protected_storage.storage.url(name))

    # then
    assert response.status == 200
    assert response.body == b"lesson one notes"


def test_protected_storage_refuses_an_unsigned_request(s3_protected_storage):
    # given
    storage = s3_protected_storage.storage
    name = _save(storage, "notes.txt", b"lesson one notes")
    url = storage.url(name)

    # when
    response = http_get(url.split("?", 1)[0])

    # then
    assert response.status == 403


def test_presigned_url_with_a_tampered_signature_is_refused(s3_protected_storage):
    # given
    name = _save(s3_protected_storage.storage, "notes.txt", b"lesson one notes")
    url = s3_protected_storage.storage.url(name)
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    forged = ("0" if signature[0] != "0" else "1") + signature[1:]

    # when
    response = http_get(url.replace(signature, forged))

    # then
    assert response.status == 403
    assert b"lesson one notes" not in response.body


def test_presigned_url_is_refused_once_it_has_expired(s3_protected_storage):
    # given a link valid for one second
    name = _save(s3_protected_storage.storage, "notes.txt", b"lesson one notes")
    url = s3_protected_storage.storage.url(name, expire=1)
    query = parse_qs(urlsplit(url).query)
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    expires_at = signed_at.timestamp() + int(query["X-Amz-Expires"][0])

    # when its deadline has passed (the server compares whole seconds)
    time.sleep(max(0.0, expires_at + 1.1 - time.time()))
    response = http_get(url)

    # then
    assert response.status == 403
    assert b"expired" in response.body.lower()


def test_protected_url_is_a_presigned_s3_url_when_the_protected_storage_is_s3(
    s3_protected_storage,
):
    # given
    name = _save(s3_protected_storage.storage, "workbook.pdf", b"%PDF-1.7 workbook")

    # when
    url = protected_url(name=name, user_id=7, filename="Workbook – week 1.pdf")
    response = http_get(url)

    # then
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(s3_protected_storage.server.endpoint_url + "/")
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == [str(s3_protected_storage.max_age)]
    assert response.status == 200
    assert response.body == b"%PDF-1.7 workbook"
    assert response.headers["Content-Disposition"] == (
        "attachment; filename*=UTF-8''Workbook%20%E2%80%93%20week%201.pdf"
    )


# --- Mail through the outbox and the live worker ----------------------------------------


def _address() -> str:
    return f"reader-{uuid.uuid4().hex[:10]}@example.com"


def _status(email_id: int) -> str:
    return OutboundEmail.objects.values_list("status", flat=True).get(pk=email_id)


@pytest.mark.django_db(transaction=True)
def test_mail_queued_through_the_outbox_arrives_in_the_smtp_sink(celery_worker, smtp_sink):
    # given
    to = _address()
    subject = "خوش آمدید به دوره"  # "Welcome to the course"
    body = "سلام!\nYour first lesson is ready."

    # when
    with transaction.atomic():
        email_enqueue(to=to, subject=subject, text_body=body, kind="test:welcome")

    # then
    message = smtp_sink.wait_for(lambda m: m["To"] == to)
    assert message["Subject"] == subject
    assert message.get_body(("plain",)).get_content().strip() == body


@pytest.mark.django_db(transaction=True)
def test_task_queued_on_commit_runs_on_the_live_worker(celery_worker, smtp_sink):
    # given
    to = _address()

    # when
    with transaction.atomic():
        outbound = email_enqueue(
            to=to, subject="Your receipt", text_body="Thank you.", kind="test:receipt"
        )

    # then
    wait_until(
        lambda: _status(outbound.pk) == OutboundEmail.Status.SENT,
        timeout=20,
        what="the worker to send the email",
    )
    outbound.refresh_from_db()
    assert outbound.attempts == 1
    assert outbound.sent_at is not None
    assert [m["Subject"] for m in smtp_sink.matching(lambda m: m["To"] == to)] == ["Your receipt"]


class _Rollback(Exception):
    pass


@pytest.mark.django_db(transaction=True)
def test_task_queued_in_a_transaction_that_rolls_back_never_runs(celery_worker, smtp_sink):
    # given a committed email that nothing has queued yet
    stranded_to = _address()
    stranded = OutboundEmail.objects.create(
        kind="test:stranded", to=stranded_to, subject="Never sent", text_body="-"
    )

    # when its task is queued in a transaction that rolls back,
    with pytest.raises(_Rollback), transaction.atomic():
        send_outbound_email.delay_on_commit(stranded.pk)
        raise _Rollback
    # and then another email is queued and committed behind it on the same queue
    later_to = _address()
    with transaction.atomic():
        later = email_enqueue(to=later_to, subject="Sent", text_body="-", kind="test:later")

    # then once the single worker has handled the later one, it has seen every earlier
    # message on the queue, and the rolled-back one was not among them
    smtp_sink.wait_for(lambda m: m["To"] == later_to)
    wait_until(
        lambda: _status(later.pk) == OutboundEmail.Status.SENT,
        timeout=20,
        what="the later email to be marked sent",
    )
    stranded.refresh_from_db()
    assert stranded.status == OutboundEmail.Status.QUEUED
    assert stranded.attempts == 0
    assert smtp_sink.matching(lambda m: m["To"] == stranded_to) == []


# --- The app in a real server, driven by Chromium ---------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_chromium_loads_the_home_page_from_the_live_server(web_server, page):
    # given
    home_page_install(title="Learn to bind books", tagline="A course for patient hands")

    # when
    response = page.goto(web_server.url + "/")

    # then
    assert response is not None and response.status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("Learn to bind books")
    expect(page.get_by_text("A course for patient hands")).to_be_visible()
    stylesheet = page.locator("link[rel=stylesheet]").first.get_attribute("href")
    assert http_get(web_server.url + stylesheet).status == 200, "static files need no collectstatic"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_staff_user_logs_into_the_wagtail_admin_with_chromium(web_server, page):
    # given a creator: staff, and superuser so the admin needs no permission setup; the
    # verified primary address is what mandatory email verification asks for
    home_page_install(title="Lodestone")
    email, password = "editor@example.com", "correct horse battery staple"
    user = User.objects.create_superuser(email=email, password=password)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)

    # when
    page.goto(web_server.url + "/admin/")
    expect(page).to_have_url(f"{web_server.url}/accounts/login/?next=/admin/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign In").click()

    # then the dashboard shows, headed by the site's name
    expect(page).to_have_url(f"{web_server.url}/admin/")
    expect(page).to_have_title(re.compile(r"^Dashboard\b"))
    expect(page.get_by_role("heading", level=1)).to_have_text(settings.WAGTAIL_SITE_NAME)
