"""The demo sells for real on the Stripe stand-in: its settings point there only without a
Stripe key, load_demo puts a buy button on the landing page, and a purchase made through
the stand-in's hosted page comes back by signed webhook as an order with access.

Also the buy button block itself: the formatted price, and a way to payments:buy.
"""

import io
import json
import re
import runpy
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client
from wagtail.coreutils import get_supported_content_language_variant
from wagtail.models import Locale, Page

import core.demo
from accounts.models import User
from funnels.models import LandingPage
from payments import demo as payments_demo
from payments import selectors
from payments.models import Offer, Order, Price, StripeCustomer
from tests.harness.wagtail_pages import site_root_install

from .conftest import make_offer

BUYER = "aino.virtanen@example.fi"


def settings_module(name: str, monkeypatch, **env) -> dict:
    """What config.settings.<name> makes of the given environment, read afresh."""
    for key in ("STRIPE_SECRET_KEY", "STRIPE_API_BASE", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delitem(sys.modules, "config.settings.base")  # re-read the environment
    return runpy.run_module(f"config.settings.{name}")


def wagtail_root_ensure() -> None:
    """The root page and locale migrations make, which a transactional test's flush removes;
    load_demo builds on them as on a freshly migrated database."""
    locale, _created = Locale.objects.get_or_create(
        language_code=get_supported_content_language_variant(django_settings.LANGUAGE_CODE)
    )
    if Page.get_first_root_node() is None:
        Page.add_root(instance=Page(title="Root", slug="root", locale=locale))


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def pay_on_hosted_page(session_url: str, email: str) -> str:
    """Press Pay on the stand-in's checkout page, as the buyer's browser would; returns
    where the page sends the buyer back to."""
    data = urllib.parse.urlencode(
        {"outcome": "paid", "email": email, "card_number": "4242 4242 4242 4242"}
    ).encode()
    opener = urllib.request.build_opener(NoRedirects)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(urllib.request.Request(session_url, data=data, method="POST"), timeout=10)
    assert answer.value.code == 303
    return answer.value.headers["Location"]


# --- Demo settings -------------------------------------------------------------------------


def test_demo_settings_use_the_standin_only_without_a_stripe_key(monkeypatch):
    demo = settings_module("dev", monkeypatch, LODESTONE_DEMO_STRIPE_PORT="12999")
    own_keys = settings_module(
        "dev",
        monkeypatch,
        STRIPE_SECRET_KEY="sk_test_from_the_creators_stripe_account",
        STRIPE_WEBHOOK_SECRET="whsec_from_stripe_listen",
    )

    assert demo["STRIPE_API_BASE"] == "http://127.0.0.1:12999"
    assert demo["STRIPE_SECRET_KEY"].startswith("sk_test_")
    assert demo["STRIPE_WEBHOOK_SECRET"]
    assert own_keys["STRIPE_API_BASE"] == ""  # Stripe itself
    assert own_keys["STRIPE_SECRET_KEY"] == "sk_test_from_the_creators_stripe_account"
    assert own_keys["STRIPE_WEBHOOK_SECRET"] == "whsec_from_stripe_listen"


def test_production_settings_never_default_to_the_standin(monkeypatch):
    production = settings_module(
        "production",
        monkeypatch,
        DJANGO_SECRET_KEY="x" * 60,
        DJANGO_ALLOWED_HOSTS="academy.example",
        DATABASE_URL="postgres://127.0.0.1/lodestone",
    )

    assert production["STRIPE_API_BASE"] == ""
    assert production["STRIPE_SECRET_KEY"] == ""


# --- The demo, paid through the stand-in ----------------------------------------------------


@pytest.fixture
def demo_site(settings, stripe_standin, live_server, tmp_path, monkeypatch):
    """load_demo and the Procfile's stand-in step, with the demo's own Stripe settings aimed
    at this test's stand-in and webhooks sent over HTTP to a live server."""
    demo_settings = settings_module(
        "dev", monkeypatch, LODESTONE_DEMO_STRIPE_PORT=str(stripe_standin.port)
    )
    stripe_standin.reset()
    stripe_standin.auto_deliver = True
    for name in ("STRIPE_API_BASE", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
        setattr(settings, name, demo_settings[name])
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.SITE_URL = live_server.url
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    monkeypatch.setattr(core.demo, "CREDENTIALS_FILE", tmp_path / "demo-credentials.txt")
    wagtail_root_ensure()
    call_command("load_demo", stdout=io.StringIO())
    out = io.StringIO()
    assert payments_demo.standin_connect(stdout=out), out.getvalue()
    yield stripe_standin
    stripe_standin.reset()


@pytest.mark.django_db(transaction=True)
def test_demo_purchase_through_the_standin_comes_back_by_webhook_with_access(
    demo_site, live_server
):
    client = Client()
    offer = Offer.objects.get(slug=payments_demo.OFFER_SLUG)
    price = offer.prices.get(is_active=True)

    # the landing page shows the price and a test-checkout notice
    landing = client.get("/launch-checklist/").content.decode()
    assert price.display in landing
    assert "Test checkout — no real payment" in landing
    action = re.search(r'<form class="lp-buy__form" method="post" action="([^"]+)"', landing)[1]
    assert action == f"/pay/buy/{offer.slug}/"

    # the buyer presses the button and pays on the stand-in's page
    response = client.post(action, {"price": price.pk}, HTTP_ORIGIN="http://testserver")
    assert response.status_code == 303
    back_to = pay_on_hosted_page(response["Location"], BUYER)
    demo_site.wait_for_deliveries(timeout=10)

    # the signed webhook reached the site and made the order and the access
    attempts = demo_site.attempts(type="checkout.session.completed")
    assert [a.status for a in attempts] == [200]
    assert json.loads(attempts[0].payload)["data"]["object"]["id"] in back_to
    order = Order.objects.get(email=BUYER)
    assert order.status == Order.Status.PAID
    assert (order.amount_total, order.currency) == (price.amount, price.currency)
    assert selectors.has_access(order.buyer, offer.products.get())
    assert back_to.startswith(live_server.url + "/pay/checkout/success/")

    # and the success page the buyer returns to says so
    success = client.get(back_to.removeprefix(live_server.url)).content.decode()
    assert "you are in" in success


@pytest.mark.django_db(transaction=True)
def test_restarted_standin_is_given_the_offers_and_webhook_endpoint_again(demo_site, live_server):
    offer = Offer.objects.get(slug=payments_demo.OFFER_SLUG)
    before = offer.stripe_product_id
    StripeCustomer.objects.create(
        user=User.objects.create_user("earlier-buyer@example.com"),
        stripe_customer_id="cus_from_the_last_run",
    )
    demo_site.reset()  # the stand-in keeps nothing: a restarted demo starts from empty

    assert payments_demo.standin_connect(stdout=io.StringIO())

    offer.refresh_from_db()
    assert offer.stripe_product_id and offer.stripe_product_id != before
    assert demo_site.get(offer.stripe_product_id)["name"] == offer.title
    assert all(demo_site.get(p.stripe_price_id) for p in offer.prices.filter(is_active=True))
    assert not StripeCustomer.objects.filter(stripe_customer_id="cus_from_the_last_run").exists()
    [endpoint] = demo_site.webhooks.endpoints.values()
    assert endpoint.url == live_server.url + "/pay/stripe/webhook/"


@pytest.mark.django_db(transaction=True)
def test_demo_loader_completes_the_offer_once_and_adds_one_buy_button(demo_site):
    payments_demo.load(stdout=io.StringIO())  # run again, as every `make run` does

    offer = Offer.objects.get(slug=payments_demo.OFFER_SLUG)
    assert offer.is_published
    assert offer.products.count() == 1
    assert offer.prices.filter(is_active=True).count() == 1
    page = LandingPage.objects.get(slug=payments_demo.LANDING_PAGE_SLUG)
    buttons = [b for b in page.body if b.block_type == "buy_button"]
    assert len(buttons) == 1
    assert buttons[0].value["offer"].pk == offer.pk


# --- The buy button block --------------------------------------------------------------------


def landing_page_selling(offer, **value) -> LandingPage:
    return site_root_install(
        LandingPage(
            title="Launch",
            slug="launch",
            body=[
                (
                    "buy_button",
                    {
                        "offer": offer,
                        "headline": "Ready to launch?",
                        "text": "Six weeks, one course.",
                        "button_label": "Get the course",
                        **value,
                    },
                )
            ],
        )
    )


@pytest.mark.django_db
def test_buy_button_shows_the_formatted_price_and_posts_to_checkout(sx, client):
    offer = make_offer("yen-course", amount=4900, currency="jpy")
    landing_page_selling(offer)

    html = client.get("/").content.decode()
    action = re.search(r'<form class="lp-buy__form" method="post" action="([^"]+)"', html)[1]
    price = re.search(r'name="price" value="(\d+)"', html)[1]
    response = client.post(action, {"price": price})

    assert "Ready to launch?" in html
    assert "¥4,900" in html
    assert "Get the course" in html
    assert action == "/pay/buy/yen-course/"
    assert price == str(offer.prices.get().pk)
    assert response.status_code == 303
    assert response["Location"].startswith(sx.url + "/pay/cs_")


@pytest.mark.django_db
def test_buy_button_with_several_prices_opens_the_buy_page_to_choose(client):
    offer = make_offer("course", amount=14900, currency="eur")
    Price.objects.create(
        offer=offer,
        kind=Price.Kind.PAYMENT_PLAN,
        amount=5500,
        currency="eur",
        interval=Price.Interval.MONTH,
        installments=3,
    )
    landing_page_selling(offer)

    html = client.get("/").content.decode()

    assert "€149.00" in html
    assert "3 × €55.00 / month" in html
    assert 'href="/pay/buy/course/"' in html
    assert "lp-buy__form" not in html


@pytest.mark.django_db
def test_buy_button_of_an_offer_that_cannot_be_bought_is_hidden(client):
    offer = make_offer("draft", amount=4900, published=False)
    landing_page_selling(offer)

    html = client.get("/").content.decode()

    assert "lp-buy" not in html
    assert "/pay/buy/draft/" not in html


@pytest.mark.django_db
def test_buy_button_notice_only_for_a_test_checkout(client, settings):
    offer = make_offer("course", amount=4900)
    landing_page_selling(offer)
    settings.STRIPE_API_BASE = ""
    settings.STRIPE_SECRET_KEY = "sk_live_real_money"
    live = client.get("/").content.decode()
    settings.STRIPE_SECRET_KEY = "sk_test_stripe_test_mode"
    test_mode = client.get("/").content.decode()

    assert "Test checkout" not in live
    assert "Test checkout — no real payment" in test_mode
