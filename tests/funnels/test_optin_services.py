"""Sign-up, confirmation and delivery, at the service layer and through the views."""

import re
import threading
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.utils import timezone

from core.models import OutboundEmail
from core.tasks import send_outbound_email
from funnels import exceptions, services
from funnels.models import (
    ConsentRecord,
    MagnetDelivery,
    Subscriber,
    SubscriberToken,
    Suppression,
    Touch,
)

from .conftest import MINIMAL_PDF, make_landing_page

pytestmark = pytest.mark.django_db

VISITOR = services.Visitor(
    ip_address="203.0.113.9", user_agent="Firefox/140", time_zone="Asia/Tehran"
)
UTM = services.Attribution(
    utm_source="instagram", utm_campaign="launch", referrer="https://l.instagram.com/"
)


def sign_up(page, form_id, email="leila@lodestone-mail.fi", name="لیلا", consent=True, **kw):
    return services.optin_submit(
        landing_page=page,
        form_id=form_id,
        email=email,
        name=name,
        consent=consent,
        visitor=kw.get("visitor", VISITOR),
        attribution=kw.get("attribution", UTM),
    )


def queued(kind):
    return list(OutboundEmail.objects.filter(kind=kind).order_by("pk"))


def link_in(message, path):
    return re.search(rf"https?://[^\s\"<>]+/f/{path}/[^\s\"<>]+/", message.text_body).group(0)


def token_of(url):
    return url.rstrip("/").rsplit("/", 1)[-1]


def test_new_visitor_is_stored_pending_with_consent_attribution_and_a_confirmation_mail(
    landing_page, form_id
):
    sign_up(landing_page, form_id, email="  Leila@Lodestone-Mail.FI ")

    subscriber = Subscriber.objects.get()
    assert subscriber.email == "leila@lodestone-mail.fi"
    assert subscriber.name == "لیلا"
    assert subscriber.status == Subscriber.Status.PENDING
    assert subscriber.time_zone == "Asia/Tehran"
    assert sorted(subscriber.tags.names()) == ["checklist", "launch"]
    touch = Touch.objects.get()
    assert subscriber.first_touch == touch == subscriber.last_touch
    assert (touch.landing_page_id, touch.utm_source, touch.utm_campaign) == (
        landing_page.pk,
        "instagram",
        "launch",
    )
    assert touch.referrer == "https://l.instagram.com/"
    consent = ConsentRecord.objects.get()
    assert consent.action == ConsentRecord.Action.GRANTED
    assert consent.consent_text == "Send me the checklist and weekly tips. Unsubscribe any time."
    assert consent.form_id == form_id
    assert consent.form_version == str(landing_page.live_revision_id)
    assert (consent.ip_address, consent.user_agent) == ("203.0.113.9", "Firefox/140")
    [mail] = queued("funnels:confirm")
    assert mail.to == "leila@lodestone-mail.fi"
    assert "/f/confirm/" in mail.text_body
    assert not queued("funnels:delivery"), "nothing is delivered before the address is confirmed"


def test_unknown_time_zone_falls_back_to_the_site_default(landing_page, form_id):
    sign_up(landing_page, form_id, visitor=services.Visitor(time_zone="Mars/Olympus"))

    assert Subscriber.objects.get().time_zone == "UTC"


def test_confirmation_link_confirms_once_and_sends_the_magnet(landing_page, form_id):
    sign_up(landing_page, form_id)
    token = token_of(link_in(queued("funnels:confirm")[0], "confirm"))

    result = services.subscriber_confirm(token=token, visitor=VISITOR)

    subscriber = Subscriber.objects.get()
    assert result.subscriber == subscriber
    assert subscriber.status == Subscriber.Status.CONFIRMED
    assert subscriber.confirmed_at is not None
    assert list(ConsentRecord.objects.values_list("action", flat=True)) == ["granted", "confirmed"]
    [delivery] = queued("funnels:delivery")
    assert "/f/download/" in delivery.text_body
    assert delivery.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    with pytest.raises(exceptions.TokenUsed):
        services.subscriber_confirm(token=token, visitor=VISITOR)
    assert len(queued("funnels:delivery")) == 1


def test_tampered_expired_and_email_only_links_confirm_no_one(landing_page, form_id, client):
    sign_up(landing_page, form_id)
    token = token_of(link_in(queued("funnels:confirm")[0], "confirm"))

    with pytest.raises(exceptions.TokenInvalid):
        services.subscriber_confirm(token=token[:-2] + "xx", visitor=VISITOR)
    response = client.post("/f/confirm/leila@lodestone-mail.fi/")
    assert response.status_code == 400
    SubscriberToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(exceptions.TokenExpired):
        services.subscriber_confirm(token=token, visitor=VISITOR)
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING


def test_confirm_page_get_does_not_confirm_but_post_does(landing_page, form_id, client):
    sign_up(landing_page, form_id)
    url = link_in(queued("funnels:confirm")[0], "confirm")
    path = url.split("://", 1)[1].split("/", 1)[1]

    assert client.get("/" + path).status_code == 200
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING
    response = client.post("/" + path)

    assert response.status_code == 200
    assert Subscriber.objects.get().status == Subscriber.Status.CONFIRMED
    assert "/f/download/" in response.content.decode()


def test_returning_confirmed_visitor_gets_the_magnet_again_without_a_duplicate(
    landing_page, form_id
):
    sign_up(landing_page, form_id)
    services.subscriber_confirm(
        token=token_of(link_in(queued("funnels:confirm")[0], "confirm")), visitor=VISITOR
    )

    sign_up(
        landing_page,
        form_id,
        email="LEILA@lodestone-mail.fi",
        attribution=services.Attribution(utm_source="newsletter"),
    )

    subscriber = Subscriber.objects.get()
    assert subscriber.status == Subscriber.Status.CONFIRMED
    assert len(queued("funnels:delivery")) == 2
    assert len(queued("funnels:confirm")) == 1
    assert subscriber.first_touch.utm_source == "instagram"
    assert subscriber.last_touch.utm_source == "newsletter"


def test_unsubscribed_visitor_is_not_resubscribed_until_they_confirm_again(landing_page, form_id):
    sign_up(landing_page, form_id)
    services.subscriber_confirm(
        token=token_of(link_in(queued("funnels:confirm")[0], "confirm")), visitor=VISITOR
    )
    services.subscriber_unsubscribe(
        subscriber=Subscriber.objects.get(), visitor=VISITOR, source="link"
    )

    sign_up(landing_page, form_id)

    assert Subscriber.objects.get().status == Subscriber.Status.UNSUBSCRIBED
    assert len(queued("funnels:delivery")) == 1
    second_confirm = queued("funnels:confirm")[1]
    services.subscriber_confirm(token=token_of(link_in(second_confirm, "confirm")), visitor=VISITOR)
    assert Subscriber.objects.get().status == Subscriber.Status.CONFIRMED


def test_single_opt_in_form_confirms_and_delivers_at_once(magnet):
    page = make_landing_page(magnet, double_opt_in=False, title="Instant guide")
    form_id = next(iter(page.optin_forms()))

    sign_up(page, form_id)

    assert Subscriber.objects.get().status == Subscriber.Status.CONFIRMED
    assert len(queued("funnels:delivery")) == 1
    assert not queued("funnels:confirm")


@pytest.mark.parametrize(
    ("email", "consent", "error"),
    [
        ("not-an-email", True, exceptions.InvalidEmail),
        ("a" * 250 + "@lodestone-mail.fi", True, exceptions.InvalidEmail),
        ("", True, exceptions.InvalidEmail),
        ("ok@lodestone-mail.fi", False, exceptions.ConsentMissing),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(landing_page, form_id, email, consent, error):
    with pytest.raises(error):
        sign_up(landing_page, form_id, email=email, consent=consent)

    assert not Subscriber.objects.exists()
    assert not ConsentRecord.objects.exists()


def test_idn_domains_are_accepted(landing_page, form_id):
    sign_up(landing_page, form_id, email="Anh@TiếngViệt.vn", name="Nguyễn Văn Anh")

    assert Subscriber.objects.get().email == "anh@tiếngviệt.vn"


def test_unknown_form_is_refused(landing_page):
    with pytest.raises(exceptions.FormNotFound):
        sign_up(landing_page, "00000000-0000-0000-0000-000000000000")


def test_download_link_records_the_delivery_and_serves_the_protected_file(
    landing_page, form_id, client
):
    sign_up(landing_page, form_id)
    services.subscriber_confirm(
        token=token_of(link_in(queued("funnels:confirm")[0], "confirm")), visitor=VISITOR
    )
    url = link_in(queued("funnels:delivery")[0], "download")

    response = client.get("/" + url.split("://", 1)[1].split("/", 1)[1])

    assert response.status_code == 200
    sent = b"".join(response.streaming_content)
    assert sent.startswith(b"%PDF-1.4")
    assert sent != MINIMAL_PDF
    assert b"leila@lodestone-mail.fi" in sent  # stamped; page-by-page checks live in tests/media
    assert "filename*=UTF-8''launch-checklist.pdf" in response["Content-Disposition"]
    delivery = MagnetDelivery.objects.get()
    assert delivery.subscriber.email == "leila@lodestone-mail.fi"
    assert delivery.file_name.endswith(".pdf")


def test_one_click_unsubscribe_post_needs_no_csrf_token_but_get_changes_nothing(
    landing_page, form_id
):
    sign_up(landing_page, form_id)
    subscriber = Subscriber.objects.get()
    path = "/" + services.unsubscribe_url(subscriber).split("://", 1)[1].split("/", 1)[1]
    client = Client(enforce_csrf_checks=True)

    assert client.get(path).status_code == 200
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING
    response = client.post(path, {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    assert Subscriber.objects.get().status == Subscriber.Status.UNSUBSCRIBED
    assert ConsentRecord.objects.filter(action="withdrawn").count() == 1


def test_consent_ledger_rows_cannot_be_updated(landing_page, form_id):
    sign_up(landing_page, form_id)

    with pytest.raises(DatabaseError), transaction.atomic():
        ConsentRecord.objects.update(consent_text="I agreed to everything")


def test_erasure_keeps_only_a_hashed_suppression(landing_page, form_id, client):
    sign_up(landing_page, form_id)
    subscriber = Subscriber.objects.get()
    manage = "/" + services.manage_url(subscriber).split("://", 1)[1].split("/", 1)[1]
    export = client.post(manage, {"action": "export"})
    assert export.json()["consents"][0]["text"].startswith("Send me the checklist")

    response = client.post(manage, {"action": "erase", "confirm_email": "leila@lodestone-mail.fi"})

    assert response.status_code == 200
    assert not Subscriber.objects.exists()
    assert not ConsentRecord.objects.exists()
    assert not OutboundEmail.objects.filter(to="leila@lodestone-mail.fi").exists()
    assert Suppression.objects.get().email_hash == services.email_hash("leila@lodestone-mail.fi")
    assert "leila" not in str(Suppression.objects.values_list().get())
    assert client.get(manage).status_code == 400


def test_smtp_down_at_sign_up_loses_nothing_and_the_mail_goes_out_later(
    landing_page, form_id, settings, mailoutbox
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    sign_up(landing_page, form_id)
    [mail] = queued("funnels:confirm")

    send_outbound_email.apply(args=[mail.pk], retries=send_outbound_email.max_retries)

    mail.refresh_from_db()
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING
    assert mail.status == OutboundEmail.Status.FAILED
    assert "Connection refused" in mail.last_error or "Errno" in mail.last_error
    # SMTP is back; the creator (or the sweep) re-queues it and it goes out once.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    send_outbound_email.apply(args=[mail.pk])
    send_outbound_email.apply(args=[mail.pk])
    mail.refresh_from_db()
    assert mail.status == OutboundEmail.Status.SENT
    assert len(mailoutbox) == 1


@pytest.mark.django_db(transaction=True)
def test_a_double_clicked_submit_creates_one_subscriber(magnet):
    page = make_landing_page(magnet, title="Race page")
    form_id = next(iter(page.optin_forms()))
    barrier = threading.Barrier(2)
    errors = []

    def submit():
        try:
            barrier.wait(timeout=10)
            sign_up(page, form_id, email="racer@lodestone-mail.fi")
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert Subscriber.objects.filter(email="racer@lodestone-mail.fi").count() == 1
    assert ConsentRecord.objects.count() == 2, "both submissions are on the ledger"
