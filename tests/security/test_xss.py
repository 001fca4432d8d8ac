"""Stored XSS: markup typed into names, subjects, titles and rich text comes out escaped or
sanitised wherever it is shown — public pages, emails and the admin (lists, inspect pages,
reports)."""

import json
from types import SimpleNamespace

import pytest
from django.test import Client
from wagtail.admin.rich_text.converters.contentstate import ContentstateConverter

from core.models import OutboundEmail
from courses.models import CoursePage, LessonPage
from funnels import services as funnel_services
from funnels.models import LeadMagnet, Subscriber
from funnels.sequences import rendering
from payments.models import Offer
from tests.security.conftest import client_for

PAYLOAD = '"><script>alert("xss")</script><img src=x onerror=alert(1)>'
# What may never appear in a page: the payload's markup, live.
LIVE = ("<script>alert(", "<img src=x onerror", '<img src="x" onerror')


def assert_inert(html: str, where: str) -> None:
    for fragment in LIVE:
        assert fragment not in html, f"{fragment!r} rendered live in {where}"


@pytest.fixture
def poisoned(world):
    """Every creator- or visitor-typed text of the world set to the payload."""
    Subscriber.objects.filter(pk=world.subscriber.pk).update(name=PAYLOAD)
    world.subscriber.refresh_from_db()
    CoursePage.objects.filter(pk=world.tree.course.pk).update(title=PAYLOAD, subtitle=PAYLOAD)
    LessonPage.objects.filter(pk=world.tree.paid_lesson.pk).update(title=PAYLOAD)
    Offer.objects.filter(pk=world.tree.offer.pk).update(title=PAYLOAD)
    world.order.offer_title = PAYLOAD
    world.order.save(update_fields=["offer_title"])
    world.order.items.update(title=PAYLOAD)
    world.tree.product.title = PAYLOAD
    world.tree.product.save(update_fields=["title"])
    LeadMagnet.objects.filter(pk=world.magnet.pk).update(
        title=PAYLOAD, delivery_subject=PAYLOAD + " {title}"
    )
    world.magnet.refresh_from_db()
    return world


def test_public_pages_escape_stored_titles(poisoned):
    buyer = client_for(poisoned, "buyer")
    pages = {
        "course page": Client().get(poisoned.tree.course.url),
        "catalog": Client().get(poisoned.tree.catalog.url),
        "paid lesson": buyer.get(poisoned.tree.paid_lesson.url),
        "free lesson outline": Client().get(poisoned.tree.free_lesson.url),
        "buy page": Client().get(f"/pay/buy/{poisoned.tree.offer.slug}/"),
        "success page": buyer.get("/pay/checkout/success/?session_id=cs_test_securitysuite0001"),
        "account": buyer.get("/account/"),
        "my data": Client().get(poisoned.links["my_data"]),
        "unsubscribe": Client().get(poisoned.links["unsubscribe"]),
    }

    for where, response in pages.items():
        assert response.status_code == 200, where
        assert_inert(response.content.decode(), where)
    assert "&lt;script&gt;alert(" in pages["course page"].content.decode()


def test_emails_escape_subscriber_names_and_magnet_titles(poisoned):
    # when the confirmation and delivery emails are rendered for the poisoned subscriber
    funnel_services._confirmation_email(poisoned.subscriber, "token", poisoned.magnet)
    funnel_services.magnet_send(subscriber=poisoned.subscriber, magnet=poisoned.magnet)

    # then the HTML bodies show the markup as text
    for mail in OutboundEmail.objects.filter(to=poisoned.subscriber.email):
        assert_inert(mail.html_body, f"{mail.kind} email")
        assert "&lt;script&gt;" in mail.html_body, mail.kind
    assert OutboundEmail.objects.filter(to=poisoned.subscriber.email).count() == 2


def test_drip_emails_escape_what_merge_fields_bring_in(poisoned):
    step = SimpleNamespace(
        subject="Hello {{ first_name }} from {{ brand_name }}",
        preheader="",
        body="Hi {{ first_name }},\n\nHere is the plan: https://lodestone-demo.fi/plan",
        button_label=PAYLOAD,
        button_url="https://lodestone-demo.fi/offer",
    )
    brand = SimpleNamespace(
        brand_name=PAYLOAD, sender_name=PAYLOAD, postal_address=PAYLOAD, logo=None
    )

    message = rendering.render_message(
        rendering.compile_email(step),
        layout=rendering.Layout.build(brand=brand),
        values=rendering.values_for(poisoned.subscriber, brand),
        track=lambda url: url,
        unsubscribe_url="https://lodestone-demo.fi/u/",
        manage_url="https://lodestone-demo.fi/m/",
    )

    assert_inert(message.html, "drip email")
    assert "&lt;script&gt;" in message.html


@pytest.mark.parametrize(
    "path",
    [
        lambda w: "/admin/subscribers/",
        lambda w: f"/admin/subscribers/inspect/{w.subscriber.pk}/",
        lambda w: "/admin/outbound_emails/",
        lambda w: "/admin/payments/orders/",
        lambda w: f"/admin/payments/orders/inspect/{w.order.pk}/",
        lambda w: "/admin/payments/revenue/",
        lambda w: "/admin/snippets/payments/offer/",
        lambda w: f"/admin/courses/{w.tree.course.pk}/students/",
        lambda w: f"/admin/pages/{w.tree.course.pk}/",
        lambda w: "/admin/",
    ],
    ids=[
        "subscribers",
        "subscriber",
        "outbox",
        "orders",
        "order",
        "revenue",
        "offers",
        "students",
        "page-explorer",
        "dashboard",
    ],
)
def test_admin_lists_inspect_pages_and_reports_escape_stored_text(poisoned, path):
    funnel_services.magnet_send(subscriber=poisoned.subscriber, magnet=poisoned.magnet)
    staff = client_for(poisoned, "staff")

    response = staff.get(path(poisoned))

    assert response.status_code == 200
    assert_inert(response.content.decode(), path(poisoned))


def test_the_outbox_inspect_page_escapes_a_subject(poisoned):
    funnel_services.magnet_send(subscriber=poisoned.subscriber, magnet=poisoned.magnet)
    mail = OutboundEmail.objects.get(to=poisoned.subscriber.email)
    assert mail.subject.startswith(PAYLOAD)

    response = client_for(poisoned, "staff").get(f"/admin/outbound_emails/inspect/{mail.pk}/")

    assert response.status_code == 200
    assert_inert(response.content.decode(), "outbox inspect")


def test_rich_text_from_the_editor_loses_script_links_and_markup():
    # given what Draftail sends for a paragraph with a javascript: link and typed markup
    contentstate = {
        "blocks": [
            {
                "key": "a",
                "type": "unstyled",
                "text": f"Click {PAYLOAD}",
                "depth": 0,
                "inlineStyleRanges": [],
                "entityRanges": [{"offset": 0, "length": 5, "key": 0}],
            }
        ],
        "entityMap": {
            "0": {"type": "LINK", "mutability": "MUTABLE", "data": {"url": "javascript:alert(1)"}}
        },
    }
    # when Wagtail converts it to what it stores
    stored = ContentstateConverter(features=["bold", "italic", "link"]).to_database_format(
        json.dumps(contentstate)
    )

    # then the link's script is gone and the typed markup is text
    assert "javascript:" not in stored
    assert_inert(stored, "stored rich text")
