"""Open redirects: no link or form of ours sends a visitor to an address an attacker chose —
click tracking, sign-in and sign-out `next`, the language switcher, the lesson forms."""

import pytest
from allauth.account.models import EmailAddress
from django.test import Client

from funnels.sequences import tracking
from payments import services as payment_services
from tests.security.conftest import client_for
from tests.security.world import path_of

SITE = "http://testserver"
PASSWORD = "a-long-test-passphrase-9"
HOSTILE = [
    "https://evil.example/phish",
    "//evil.example/phish",
    "/\\evil.example/phish",
    "\\\\evil.example/phish",
    "https:evil.example",
    " https://evil.example",
    "http://testserver@evil.example/",
    "javascript:alert(1)",
]


def lands_on_our_site(response) -> bool:
    location = response.get("Location", "")
    return location.startswith("/") and not location.startswith(("//", "/\\"))


@pytest.fixture
def member(world):
    # a copy: the module's world keeps its own (the database is rolled back after each test)
    user = type(world.buyer).objects.get(pk=world.buyer.pk)
    user.set_password(PASSWORD)
    user.save()
    EmailAddress.objects.update_or_create(
        user=user, email=user.email, defaults={"verified": True, "primary": True}
    )
    return user


@pytest.mark.parametrize("target", HOSTILE)
def test_signing_in_never_follows_a_foreign_next(world, member, target):
    response = Client().post(
        "/accounts/login/",
        {"login": member.email, "password": PASSWORD, "next": target},
        HTTP_ORIGIN=SITE,
    )

    assert response.status_code == 302
    assert lands_on_our_site(response), response["Location"]


def test_signing_in_follows_a_next_on_our_site(world, member):
    response = Client().post(
        "/accounts/login/?next=/account/",
        {"login": member.email, "password": PASSWORD, "next": "/account/"},
    )

    assert response["Location"] == "/account/"


@pytest.mark.parametrize("target", HOSTILE)
def test_signing_out_never_follows_a_foreign_next(world, target):
    response = client_for(world, "buyer").post("/accounts/logout/", {"next": target})

    assert response.status_code == 302
    assert lands_on_our_site(response), response["Location"]


@pytest.mark.parametrize("target", HOSTILE)
def test_the_language_switcher_never_follows_a_foreign_next(world, target):
    response = Client().post("/i18n/setlang/", {"language": "fi", "next": target}, HTTP_ORIGIN=SITE)

    assert response.status_code == 302
    assert lands_on_our_site(response), response["Location"]


@pytest.mark.parametrize("target", HOSTILE)
def test_marking_a_lesson_done_never_follows_a_foreign_next(world, target):
    lesson = world.tree.paid_lesson

    response = client_for(world, "buyer").post(
        f"/learn/complete/{lesson.pk}/", {"completed": "1", "next": target}
    )

    assert response["Location"] == lesson.url


@pytest.mark.parametrize("target", HOSTILE)
def test_wagtails_private_page_login_never_follows_a_foreign_next(world, target):
    response = Client().get("/_util/login/", {"next": target})

    assert response.status_code in (200, 302)
    if response.status_code == 302:
        assert lands_on_our_site(response), response["Location"]


def test_a_click_link_goes_only_where_we_signed_it_to(world):
    response = Client().get(world.links["click"])

    assert response.status_code == 302
    assert response["Location"] == "https://offers.lodestone-demo.fi/launch?utm_source=drip"


@pytest.mark.parametrize(
    "target", ["javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "//evil.example"]
)
def test_a_click_link_refuses_a_destination_that_is_not_a_web_address(world, target):
    # even one we signed ourselves (a typo in a creator's button URL)
    response = Client().get(path_of(tracking.click_url(1, target)))

    assert response.status_code == 400
    assert "Location" not in response


def test_a_click_link_with_its_destination_swapped_is_refused(world):
    import base64
    import json

    token = world.links["click"].split("/")[3]
    payload, stamp, mac = token.split(":")
    swapped = (
        base64.urlsafe_b64encode(
            json.dumps({"d": 1, "u": "https://evil.example/"}, separators=(",", ":")).encode()
        )
        .decode()
        .rstrip("=")
    )

    response = Client().get(f"/f/c/{swapped}:{stamp}:{mac}/")

    assert response.status_code == 400
    assert "Location" not in response
    assert payload != swapped


def test_checkout_return_addresses_are_ours_whatever_the_buy_form_carries(
    world, stripe_configured, settings
):
    # given a buy form with return addresses slipped in
    hostile = {f: "https://evil.example/" for f in ("next", "success_url", "cancel_url")}

    # when it is posted
    response = Client().post(f"/pay/buy/{world.tree.offer.slug}/", hostile, HTTP_ORIGIN=SITE)

    # then Stripe is asked to send the buyer back to this site only
    assert response.status_code == 303
    session_id = response["Location"].rstrip("/").rsplit("/", 1)[-1]
    session = stripe_configured.client().v1.checkout.sessions.retrieve(session_id)
    assert session.success_url.startswith(settings.SITE_URL + "/pay/checkout/success/")
    assert session.cancel_url == f"{settings.SITE_URL}/pay/buy/{world.tree.offer.slug}/"


def test_the_billing_portal_returns_to_this_site(world, stripe_configured, settings):
    customer = stripe_configured.client().v1.customers.create(params={"email": "b@example.com"})
    link = path_of(payment_services.billing_portal_link(customer_id=customer.id))

    response = Client().get(link + "?return_url=https://evil.example/")

    assert response.status_code == 303
    portal = stripe_configured.get(response["Location"].rstrip("/").rsplit("/", 1)[-1])
    assert portal["return_url"] == settings.SITE_URL + "/"
