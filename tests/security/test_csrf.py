"""CSRF on every state-changing route, derived from the URL configuration: a post without
the token is refused everywhere except on a short, reasoned list (webhooks proved by
signature or basic auth, RFC 8058 one-click unsubscribe, the visit counter) and the forms
of edge-cached pages, which are checked by Origin instead (core/csrf.py)."""

import pytest
from django.test import Client
from django.urls import resolve

from tests.security.authz_table import ROUTES
from tests.security.conftest import client_for
from tests.security.test_authz_matrix import public_routes

# route name -> why it takes posts without a CSRF token
EXEMPT = {
    "payments:stripe_webhook": "Stripe signs every event; the signature is checked first",
    "funnels:esp_postmark_tracking": "the email provider's webhook, behind basic auth",
    "funnels:esp_postmark_inbound": "the email provider's webhook, behind basic auth",
    "funnels:unsubscribe": "RFC 8058 one-click: mail providers post without our token",
    "funnels:visit": "a visit counter: a forged post can only inflate it (rate-limited)",
}
# Forms on edge-cached pages: no token, but the post must come from our own origin. The
# buy button sits on landing and product pages, so payments:buy is checked the same way.
SAME_ORIGIN = {"funnels:subscribe", "set_language", "webinars:register", "payments:buy"}
EVIL = "https://evil.example"


@pytest.fixture
def urls(world) -> dict[str, str]:
    """One URL per route (its first case in the authorisation table, as the buyer)."""
    return {name: ROUTES[name][0].url(world, "buyer") for name in public_routes()}


def test_only_the_known_routes_skip_the_csrf_token(urls):
    exempt, same_origin = set(), set()
    for name, url in urls.items():
        func = resolve(url.split("?")[0]).func
        if getattr(func, "same_origin_post", False):
            same_origin.add(name)
        elif getattr(func, "csrf_exempt", False):
            exempt.add(name)

    assert exempt == set(EXEMPT), (
        "A route skips Django's CSRF check without being listed in tests/security/"
        "test_csrf.py EXEMPT (with the reason it is safe): "
        f"{sorted(exempt ^ set(EXEMPT))}"
    )
    assert same_origin == SAME_ORIGIN


def test_every_other_route_refuses_a_post_without_the_token(world, urls):
    # given a signed-in buyer whose browser is made to post from another site
    refused, accepted = [], []
    for name, url in sorted(urls.items()):
        if name in EXEMPT or name in SAME_ORIGIN:
            continue
        client = client_for(world, "buyer", enforce_csrf_checks=True)
        case = ROUTES[name][0]

        # when it posts without the token
        response = client.post(url, case.data, HTTP_ORIGIN=EVIL)

        # then Django's CSRF check refuses it before the view runs
        (refused if response.status_code == 403 else accepted).append(
            f"{name}: {response.status_code}"
        )

    assert accepted == []
    assert len(refused) >= 40


def test_a_post_with_the_pages_token_from_our_origin_goes_through(world):
    client = client_for(world, "buyer", enforce_csrf_checks=True)
    client.get(world.tree.paid_lesson.url)  # the page hands out the token
    token = client.cookies["csrftoken"].value

    response = client.post(
        f"/learn/complete/{world.tree.paid_lesson.pk}/",
        {"completed": "1", "csrfmiddlewaretoken": token},
        HTTP_ORIGIN="http://testserver",
    )

    assert response.status_code == 303


@pytest.mark.parametrize("name", sorted(SAME_ORIGIN))
def test_forms_of_cached_pages_refuse_cross_site_posts(world, urls, name):
    response = Client().post(urls[name], {"language": "fi"}, HTTP_ORIGIN=EVIL)

    assert response.status_code == 403


def test_admin_actions_need_the_token_even_for_staff(world):
    client = client_for(world, "staff", enforce_csrf_checks=True)

    response = client.post(f"/admin/pages/{world.landing.pk}/unpublish/", HTTP_ORIGIN=EVIL)

    assert response.status_code == 403
    world.landing.refresh_from_db()
    assert world.landing.live
