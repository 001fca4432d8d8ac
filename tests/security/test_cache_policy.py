"""Edge caching: anonymous public pages are cacheable by nginx or a CDN and purged on
publish; personal pages never are; the opt-in form, the buy button and the language switcher
work from a cached page (no per-visitor token in it) and still refuse cross-site posts."""

import http.server
import re
import threading
import time

import pytest
from django.core import signing
from django.test import Client

from funnels.forms import RENDERED_SALT
from funnels.models import SignUp, Subscriber
from payments.models import CheckoutAttempt
from tests.security.conftest import client_for
from tests.security.world import OPTIN_FORM_ID

PUBLIC = "public, max-age=0, s-maxage=600"
SITE = "http://testserver"


def cache_control(response) -> set[str]:
    return {part.strip() for part in response.get("Cache-Control", "").split(",") if part.strip()}


@pytest.mark.parametrize(
    "page", ["home", "landing", "tree.catalog", "tree.course", "webinar"], ids=lambda p: p
)
def test_anonymous_public_pages_are_cacheable_and_the_same_for_everyone(world, page):
    # given a public page
    url = "/" if page == "home" else _page(world, page).url

    # when an anonymous visitor asks for it
    response = Client().get(url)

    # then a shared cache may keep it, and nothing in it is the visitor's own
    assert response.status_code == 200
    assert cache_control(response) == set(PUBLIC.split(", "))
    assert not response.cookies
    assert b"csrfmiddlewaretoken" not in response.content
    assert "nonce-" not in response["Content-Security-Policy"]


def _page(world, dotted: str):
    if dotted == "webinar":
        from tests.webinars.authz import webinar_of

        return webinar_of(world)
    obj = world
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_the_cache_lifetimes_come_from_settings(world, settings):
    settings.EDGE_CACHE_MAX_AGE = 30
    settings.EDGE_CACHE_S_MAXAGE = 3600

    response = Client().get(world.landing.url)

    assert cache_control(response) == {"public", "max-age=30", "s-maxage=3600"}


def test_edge_caching_can_be_switched_off(world, settings):
    settings.EDGE_CACHE_MAX_AGE = 0
    settings.EDGE_CACHE_S_MAXAGE = 0

    response = Client().get(world.landing.url)

    assert cache_control(response) == {"private", "no-store"}


@pytest.mark.parametrize("role", ["other_buyer", "buyer", "staff"])
def test_a_signed_in_visitor_gets_public_pages_private(world, role):
    response = client_for(world, role).get(world.landing.url)

    assert response.status_code == 200
    assert cache_control(response) == {"private", "no-store"}


def test_an_anonymous_visitor_with_a_session_gets_them_private(world):
    client = Client()
    session = client.session
    session["payments_checkouts"] = ["x"]
    session.save()
    client.cookies["sessionid"] = session.session_key

    response = client.get(world.tree.course.url)

    assert cache_control(response) == {"private", "no-store"}


def test_a_visitor_who_chose_a_language_gets_them_private(world):
    client = Client()
    client.cookies["django_language"] = "fi"

    response = client.get(world.landing.url)

    assert cache_control(response) == {"private", "no-store"}


@pytest.mark.parametrize(
    "path",
    [
        lambda w: w.tree.free_lesson.url,
        lambda w: w.tree.paid_lesson.url,
        lambda w: "/pay/checkout/success/?session_id=cs_test_securitysuite0001",
        lambda w: "/account/",
        lambda w: w.links["my_data"],
        lambda w: f"/pay/buy/{w.tree.offer.slug}/",
        lambda w: "/accounts/login/",
    ],
    ids=["free-lesson", "paid-lesson", "success", "account", "my-data", "buy", "login"],
)
@pytest.mark.parametrize("role", ["anonymous", "buyer"])
def test_personal_pages_are_never_cacheable(world, stripe_configured, path, role):
    response = client_for(world, role).get(path(world))

    directives = cache_control(response)
    assert "public" not in directives
    assert "private" in directives or "no-store" in directives, response.get("Cache-Control")


def test_an_opt_in_from_a_cached_page_is_accepted_from_our_own_origin(world):
    # given the form as the cache holds it: no CSRF token, a render time from earlier
    client = Client(enforce_csrf_checks=True)
    data = _optin_data()

    # when the visitor's browser posts it (browsers name the page's origin)
    response = client.post(
        _subscribe(world), data, HTTP_ORIGIN=SITE, HTTP_ACCEPT="application/json"
    )

    # then the sign-up is taken (stored at once; a worker makes the subscriber)
    assert response.status_code == 200, response.content
    assert response.json()["ok"] is True
    assert SignUp.objects.filter(email="new.reader@lodestone-demo.fi").exists()


def test_an_old_browser_without_origin_is_judged_by_its_referer(world):
    response = Client(enforce_csrf_checks=True).post(
        _subscribe(world), _optin_data(), HTTP_REFERER=SITE + world.landing.url
    )

    assert response.status_code == 302
    assert SignUp.objects.filter(email="new.reader@lodestone-demo.fi").exists()


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_ORIGIN": "https://evil.example"},
        {"HTTP_ORIGIN": "null", "HTTP_REFERER": "https://evil.example/page"},
        {"HTTP_REFERER": "https://evil.example/" + "testserver"},
        {},
    ],
    ids=["other-origin", "null-origin", "other-referer", "neither"],
)
def test_a_cross_site_opt_in_is_refused_and_stores_nothing(world, headers):
    response = Client(enforce_csrf_checks=True).post(_subscribe(world), _optin_data(), **headers)

    assert response.status_code == 403
    assert not SignUp.objects.filter(email="new.reader@lodestone-demo.fi").exists()
    assert not Subscriber.objects.filter(email="new.reader@lodestone-demo.fi").exists()


def test_the_language_switcher_works_from_a_cached_page_and_refuses_other_sites(world):
    client = Client(enforce_csrf_checks=True)
    form = {"language": "fi", "next": world.landing.url}

    ours = client.post("/i18n/setlang/", form, HTTP_ORIGIN=SITE)
    theirs = Client(enforce_csrf_checks=True).post(
        "/i18n/setlang/", form, HTTP_ORIGIN="https://evil.example"
    )

    assert ours.status_code == 302
    assert ours.cookies["django_language"].value == "fi"
    assert theirs.status_code == 403
    assert "django_language" not in theirs.cookies


def test_trusted_origins_from_settings_are_accepted(world, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.lodestone-demo.fi"]

    response = Client(enforce_csrf_checks=True).post(
        "/i18n/setlang/",
        {"language": "fi", "next": "/"},
        HTTP_ORIGIN="https://www.lodestone-demo.fi",
    )

    assert response.status_code == 302


# --- Buy buttons on cached pages -----------------------------------------------------------


def _landing_selling(world):
    """The world's landing page with a buy button for the course's offer (one price, no
    bump: the button is a form that posts straight to checkout)."""
    landing = type(world.landing).objects.get(pk=world.landing.pk)  # the world keeps its own
    landing.body.append(
        (
            "buy_button",
            {
                "offer": world.tree.offer,
                "headline": "Ready to launch?",
                "text": "",
                "button_label": "Buy the course",
            },
        )
    )
    landing.save_revision().publish()
    return landing


def _buy_form(html: str) -> tuple[str, dict]:
    action = re.search(r'<form class="lp-buy__form" method="post" action="([^"]+)"', html)[1]
    price = re.search(r'name="price" value="(\d+)"', html)[1]
    return action, {"price": price}


def test_a_landing_page_with_a_buy_button_is_cacheable(world, stripe_configured):
    # given a landing page with a buy button
    landing = _landing_selling(world)

    # when an anonymous visitor asks for it
    response = Client().get(landing.url)

    # then the button is there and a shared cache may keep the page: no token, no cookie
    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="lp-buy__form"' in html
    assert cache_control(response) == set(PUBLIC.split(", "))
    assert not response.cookies
    assert "csrfmiddlewaretoken" not in html


def test_the_buy_button_of_a_cached_page_goes_to_checkout_from_our_own_origin(
    world, stripe_configured
):
    # given the button as the cache holds it
    action, form = _buy_form(Client().get(_landing_selling(world).url).content.decode())

    # when the visitor's browser posts it (it names the page's origin, or its address)
    by_origin = Client(enforce_csrf_checks=True).post(action, form, HTTP_ORIGIN=SITE)
    by_referer = Client(enforce_csrf_checks=True).post(
        action, form, HTTP_REFERER=SITE + world.landing.url
    )

    # then both go to Stripe Checkout
    for response in (by_origin, by_referer):
        assert response.status_code == 303, response.content[:300]
        assert response["Location"].startswith(stripe_configured.url + "/")
    assert len(stripe_configured.client().v1.checkout.sessions.list().data) == 2


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_ORIGIN": "https://evil.example"},
        {"HTTP_ORIGIN": "null", "HTTP_REFERER": "https://evil.example/page"},
        {},
    ],
    ids=["other-origin", "null-origin", "neither"],
)
def test_a_cross_site_post_to_the_buy_button_is_refused_and_starts_no_checkout(
    world, stripe_configured, headers
):
    action, form = _buy_form(Client().get(_landing_selling(world).url).content.decode())

    response = Client(enforce_csrf_checks=True).post(action, form, **headers)

    assert response.status_code == 403
    assert stripe_configured.client().v1.checkout.sessions.list().data == []
    assert not CheckoutAttempt.objects.exists()


def _subscribe(world) -> str:
    return f"/f/subscribe/{world.landing.pk}/{OPTIN_FORM_ID}/"


def _optin_data() -> dict:
    return {
        "email": "new.reader@lodestone-demo.fi",
        "name": "New",
        "consent": "on",
        "rendered_at": signing.dumps(int(time.time()) - 60, salt=RENDERED_SALT),
    }


# --- Purge on publish ---------------------------------------------------------------------


class _PurgeSink(http.server.BaseHTTPRequestHandler):
    seen: list

    def do_PURGE(self):
        self.seen.append((self.path, self.headers.get("Host"), self.headers.get("Accept-Language")))
        self.send_response(200 if len(self.seen) % 2 else 404)  # cached, or not
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def purge_sink():
    seen: list = []
    handler = type("Handler", (_PurgeSink,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_publishing_a_page_purges_every_language_copy_from_nginx(
    world, settings, purge_sink, django_capture_on_commit_callbacks, caplog
):
    # given nginx's purge location (here a stand-in that records what it is sent)
    location, seen = purge_sink
    settings.WAGTAILFRONTENDCACHE = {
        "nginx": {"BACKEND": "core.frontend_cache.NginxPurgeBackend", "LOCATION": location}
    }

    # when the creator publishes a new version of the landing page
    landing = type(world.landing).objects.get(pk=world.landing.pk)  # the world keeps its own
    landing.title = "Free checklist, 2nd edition"
    with django_capture_on_commit_callbacks(execute=True):
        landing.save_revision().publish()

    # then one PURGE per language went out for the page's path, with the site's host
    assert sorted(lang for _path, _host, lang in seen) == sorted(
        code for code, _name in settings.LANGUAGES
    )
    assert {(path, host) for path, host, _lang in seen} == {(landing.url, "localhost")}
    # and a copy that was not cached (404 from the purge module) is no error
    assert not [
        r for r in caplog.records if r.name == "wagtail.frontendcache" and r.levelname == "ERROR"
    ]


NGINX_CONFIGS = ("infra/nginx/lodestone.conf", "infra/stack/nginx.conf.template")


def _nginx_app_route_patterns(text: str) -> list[str]:
    block = re.search(r"map \$lodestone_path \$lodestone_app_route \{(.*?)\}", text, re.S)
    assert block, "the $lodestone_app_route map is gone"
    entries = re.findall(r'^\s*"([^"]+)"\s+1;', block.group(1), re.M)
    return [
        entry[1:] if entry.startswith("~") else "^" + re.escape(entry) + "$" for entry in entries
    ]


@pytest.mark.parametrize("config", NGINX_CONFIGS)
def test_every_django_route_skips_the_edge_cache_and_its_lock(config):
    # given nginx's list of Django's own routes (they skip the page cache and its lock, so
    # concurrent requests for one uncacheable address never queue behind each other)
    from django.conf import settings as django_settings

    from tests.security.test_authz_matrix import url_routes

    root = django_settings.BASE_DIR
    patterns = _nginx_app_route_patterns((root / config).read_text())

    # when every route of the URL configuration outside Wagtail's page tree is tried
    routes = {
        "/" + re.sub(r"<[^>]+>", "x", route).replace("^", "").replace("$", "")
        for route, _name in url_routes()
        if not route.startswith("^")  # Wagtail's page tree
    }
    missing = sorted(r for r in routes if not any(re.search(p, r) for p in patterns))

    # then each one is covered, and pages are not
    assert not missing, f"add these routes to $lodestone_app_route in {config}: {missing}"
    assert not any(re.search(p, "/free-checklist/") for p in patterns)
    assert not any(re.search(p, "/") for p in patterns)
