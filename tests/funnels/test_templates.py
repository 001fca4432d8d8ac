"""The funnel's templates: a landing page with every block, its opt-in form with and
without JavaScript, the small pages behind email links, and the emails themselves."""

import io
import re
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from bs4 import BeautifulSoup
from django.core import signing
from django.core.files.images import ImageFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PillowImage
from wagtail.embeds.embeds import get_embed_hash
from wagtail.embeds.models import Embed
from wagtail.images.models import Image
from wagtail.models import Page, Site
from wagtail.rich_text import RichText

from core.models import BrandSettings, OutboundEmail
from funnels import services
from funnels.forms import RENDERED_SALT
from funnels.models import LandingPage, SignUp, Subscriber
from tests.funnels.conftest import process_signups

pytestmark = pytest.mark.django_db

CONSENT = "Send me the checklist and weekly tips. I can unsubscribe at any time."
PERSIAN_HEADLINE = "یاد بگیرید آنچه می‌دانید را بفروشید"
VISITOR = services.Visitor(ip_address="203.0.113.9", user_agent="Firefox/140")


@pytest.fixture(autouse=True)
def files_in_tmp(settings, tmp_path, protected_dir):
    """Uploads go to tmp_path (lead magnets already do: protected_dir), never to var/."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media"), "base_url": "/media/"},
        },
    }


@pytest.fixture
def brand() -> BrandSettings:
    brand = BrandSettings.for_site(Site.objects.get(is_default_site=True))
    brand.brand_name = "Northwind Studio"
    brand.postal_address = "12 Harbour Street\nBristol BS1 4RN"
    brand.save()
    return brand


def _png(width: int, height: int) -> ImageFile:
    buffer = io.BytesIO()
    PillowImage.new("RGB", (width, height), (67, 56, 202)).save(buffer, "PNG")
    return ImageFile(io.BytesIO(buffer.getvalue()), name="share.png")


def _every_block(magnet, *, headline: str) -> list:
    return [
        ("hero", {"headline": headline, "subheadline": "A plan for your first 100 sales."}),
        ("rich_text", RichText("<p>Launching is <b>a hundred small decisions</b>.</p>")),
        (
            "benefits",
            {
                "heading": "What you get",
                "items": [{"title": "A weekend plan", "text": "Every step, in order."}],
            },
        ),
        (
            "testimonials",
            {
                "heading": "Creators who launched with it",
                "items": [
                    {
                        "quote": "I opened the doors in three weeks.",
                        "name": "Sara Ahmadi",
                        "role": "Watercolour teacher",
                        "photo": None,
                    }
                ],
            },
        ),
        (
            "faq",
            {
                "heading": "Questions",
                "items": [
                    {"question": "Is it really free?", "answer": RichText("<p>Yes, always.</p>")}
                ],
            },
        ),
        (
            "countdown",
            {
                "heading": "Launch bonus ends in",
                "deadline": timezone.now() + timedelta(days=2),
                "expired_text": "The bonus has ended.",
            },
        ),
        (
            "optin_form",
            {
                "heading": "Get your free copy",
                "text": "Straight to your inbox.",
                "magnet": magnet,
                "ask_name": True,
                "button_label": "Send me the checklist",
                "consent_text": CONSENT,
                "double_opt_in": True,
                "tags": "checklist",
            },
        ),
        (
            "cta",
            {
                "heading": "Ready to launch?",
                "text": "It takes two minutes.",
                "button_label": "Book a call",
                "page": None,
                "url": "https://cal.example.com/northwind",
            },
        ),
        (
            "author_bio",
            {
                "name": "Maya Lindqvist",
                "photo": None,
                "bio": RichText("<p>11 courses since 2016.</p>"),
            },
        ),
    ]


def _install(page: LandingPage) -> LandingPage:
    Page.get_first_root_node().add_child(instance=page)
    site = Site.objects.get(is_default_site=True)
    site.root_page = page
    site.save()
    return LandingPage.objects.get(pk=page.pk)


@pytest.fixture
def landing_page(magnet, brand) -> LandingPage:
    return _install(
        LandingPage(
            title="Launch checklist",
            slug="launch-checklist",
            seo_title="The free launch checklist",
            search_description="27 steps to your first 100 sales.",
            share_image=Image.objects.create(title="Share", file=_png(1600, 900)),
            body=_every_block(magnet, headline="Launch your first course without the overwhelm"),
        )
    )


@pytest.fixture
def form_id(landing_page) -> str:
    return next(iter(landing_page.optin_forms()))


def _subscribe_path(page: LandingPage, form_id: str) -> str:
    return reverse("funnels:subscribe", args=[page.pk, form_id])


def _soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.content.decode(), "html.parser")


def _rendered_seconds_ago(seconds: int) -> str:
    return signing.dumps(int(time.time()) - seconds, salt=RENDERED_SALT)


def _post_form(client, path: str, data: dict, **headers):
    # Url-encoded, as a browser sends this form (and as optin.js sends it).
    return client.post(
        path, urlencode(data), content_type="application/x-www-form-urlencoded", **headers
    )


def _optin_data(**overrides) -> dict:
    data = {
        "email": "leila@example.com",
        "name": "Leila",
        "consent": "on",
        "time_zone": "Europe/Helsinki",
        "rendered_at": _rendered_seconds_ago(10),
        "website": "",
        "utm_source": "newsletter",
    }
    data.update(overrides)
    return data


# --- The landing page -------------------------------------------------------------------


def test_landing_page_renders_every_block(client, landing_page, magnet):
    response = client.get("/")

    assert response.status_code == 200
    assert "funnels/landing_page.html" in [t.name for t in response.templates]
    html = response.content.decode()
    for text in [
        "<h1",
        "Launch your first course without the overwhelm",
        "A plan for your first 100 sales.",
        "<b>a hundred small decisions</b>",
        "A weekend plan",
        "Every step, in order.",
        "I opened the doors in three weeks.",
        "Sara Ahmadi",
        "Watercolour teacher",
        "<summary",
        "Is it really free?",
        "<p>Yes, always.</p>",
        "Launch bonus ends in",
        "Get your free copy",
        magnet.title,
        CONSENT,
        "Ready to launch?",
        'href="https://cal.example.com/northwind"',
        "Book a call",
        "Maya Lindqvist",
        "11 courses since 2016.",
    ]:
        assert text in html, text


def test_countdown_prints_the_deadline_for_browsers_without_javascript(client, landing_page):
    deadline = landing_page.body.first_block_by_name("countdown").value["deadline"]

    soup = _soup(client.get("/"))

    time_element = soup.select_one(".lp-countdown time[datetime]")
    assert time_element["datetime"] == timezone.localtime(deadline).isoformat()
    assert time_element.get_text(strip=True)
    assert soup.select_one("[data-countdown-clock]").has_attr("hidden")


def test_countdown_past_its_deadline_shows_the_expired_text(client, magnet, brand):
    body = [
        (
            "countdown",
            {
                "heading": "Bonus",
                "deadline": timezone.now() - timedelta(minutes=1),
                "expired_text": "The bonus has ended.",
            },
        )
    ]
    _install(LandingPage(title="Over", slug="over", body=body))

    soup = _soup(client.get("/"))

    assert soup.select_one(".lp-countdown__ended").get_text(strip=True) == "The bonus has ended."
    assert soup.select_one("[data-countdown-clock]") is None


def test_hero_video_is_the_providers_player(client, brand):
    # given an embed the site has already fetched (no network in tests)
    url = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    player = '<iframe src="https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ"></iframe>'
    Embed.objects.create(
        url=url, max_width=960, hash=get_embed_hash(url, 960), type="video", html=player
    )
    _install(
        LandingPage(
            title="Video", slug="video", body=[("hero", {"headline": "Watch", "video": url})]
        )
    )

    html = client.get("/").content.decode()

    assert f'<div class="lp-hero__media lp-video">{player}</div>' in html


def test_optin_form_posts_to_its_subscribe_route_with_csrf_and_bot_traps(
    client, landing_page, form_id
):
    soup = _soup(client.get("/?utm_source=newsletter&utm_campaign=spring"))

    form = soup.select_one("form[data-optin-form]")
    assert form["method"] == "post"
    assert form["action"] == f"{_subscribe_path(landing_page, form_id)}#optin-{form_id}"
    # no CSRF token: the page is edge-cached; the post is checked by its Origin
    assert not form.select_one("input[name=csrfmiddlewaretoken]")
    email = form.select_one("input[name=email]")
    assert (email["type"], email["autocomplete"]) == ("email", "email")
    assert email.has_attr("required")
    consent = form.select_one("input[name=consent]")
    assert consent.has_attr("required")
    assert form.select_one(f"label[for={consent['id']}]").get_text(strip=True) == CONSENT
    assert form.select_one(f"label[for={email['id']}]")
    honeypot = form.select_one("input[name=website]")
    assert (honeypot["tabindex"], honeypot["autocomplete"]) == ("-1", "off")
    assert honeypot.find_parent(attrs={"aria-hidden": "true"}) is not None
    rendered_at = form.select_one("input[name=rendered_at]")["value"]
    assert isinstance(signing.loads(rendered_at, salt=RENDERED_SALT), int)
    assert form.select_one("input[name=utm_source]")["value"] == "newsletter"
    assert form.select_one("input[name=utm_campaign]")["value"] == "spring"
    assert form.select_one("input[name=utm_medium]")["value"] == ""
    assert form.select_one("input[name=time_zone]")["type"] == "hidden"
    assert form.select_one("input[name=referrer]")["type"] == "hidden"


def test_landing_page_loads_only_its_own_deferred_script_and_counts_the_visit(client, landing_page):
    soup = _soup(client.get("/"))

    scripts = soup.select("script[src]")
    assert [s["src"] for s in scripts] == ["/static/js/optin.js"]
    assert all(s.has_attr("defer") for s in scripts)
    assert soup.select_one("[data-visit-url]")["data-visit-url"] == f"/f/visit/{landing_page.pk}/"


def test_creator_markup_in_the_headline_is_escaped(client, magnet, brand):
    headline = '<script>alert("x")</script> Launch'
    _install(
        LandingPage(title="Escaping", slug="escaping", body=_every_block(magnet, headline=headline))
    )

    html = client.get("/").content.decode()

    assert '<script>alert("x")</script>' not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Launch" in html


def test_seo_title_description_canonical_and_open_graph_image(client, landing_page):
    soup = _soup(client.get("/"))

    assert soup.title.get_text().startswith("The free launch checklist")
    assert soup.select_one("meta[name=description]")["content"] == (
        "27 steps to your first 100 sales."
    )
    assert soup.select_one("link[rel=canonical]")["href"] == landing_page.full_url
    assert soup.select_one("meta[property='og:title']")["content"] == "The free launch checklist"
    assert soup.select_one("meta[property='og:url']")["content"] == landing_page.full_url
    og_image = soup.select_one("meta[property='og:image']")["content"]
    assert re.match(r"^https?://", og_image)
    assert ".fill-1200x630" in og_image
    assert soup.select_one("meta[property='og:image:width']")["content"] == "1200"
    assert soup.select_one("meta[property='og:image:height']")["content"] == "630"


def test_persian_visitor_gets_a_right_to_left_page(client, magnet, brand):
    _install(
        LandingPage(title="چک‌لیست", slug="fa", body=_every_block(magnet, headline=PERSIAN_HEADLINE))
    )

    response = client.get("/", HTTP_ACCEPT_LANGUAGE="fa")

    html = response.content.decode()
    assert '<html lang="fa" dir="rtl">' in html
    assert PERSIAN_HEADLINE in html


# --- Posting the form without JavaScript ------------------------------------------------


def test_plain_post_with_email_and_consent_redirects_to_the_thanks_page(
    client, landing_page, form_id
):
    response = _post_form(client, _subscribe_path(landing_page, form_id), _optin_data())

    thanks = landing_page.url + landing_page.reverse_subpage("optin_thanks")
    assert response.status_code == 302
    assert response["Location"] == thanks
    assert SignUp.objects.get().email == "leila@example.com"
    assert process_signups() == ["confirm"]
    assert Subscriber.objects.filter(email="leila@example.com").exists()
    page = client.get(thanks)
    assert page.status_code == 200
    assert "Check your inbox" in page.content.decode()


def test_plain_post_with_a_bad_email_shows_the_error_and_keeps_what_was_typed(
    client, landing_page, form_id
):
    response = _post_form(
        client,
        _subscribe_path(landing_page, form_id),
        _optin_data(email="leila@", name="لیلا"),
    )

    assert response.status_code == 400
    soup = _soup(response)
    form = soup.select_one("form[data-optin-form]")
    error = form.select_one("[role=alert]")
    assert "Please enter a valid email address" in error.get_text()
    assert form.select_one("input[name=name]")["value"] == "لیلا"
    assert form.select_one("input[name=email]")["value"] == "leila@"
    assert form.select_one("input[name=email]")["aria-describedby"] == error["id"]
    assert form.select_one("input[name=consent]").has_attr("checked")
    assert form.select_one("input[name=utm_source]")["value"] == "newsletter"
    assert not SignUp.objects.exists()
    assert not Subscriber.objects.exists()


def test_plain_post_sooner_than_a_person_could_type_is_refused(client, landing_page, form_id):
    response = _post_form(
        client,
        _subscribe_path(landing_page, form_id),
        _optin_data(rendered_at=_rendered_seconds_ago(0)),
    )

    assert response.status_code == 400
    assert "quicker than we expected" in response.content.decode()
    assert not SignUp.objects.exists()
    assert not Subscriber.objects.exists()


# --- Posting the form with JavaScript (fetch) -------------------------------------------


def test_json_post_answers_ok_with_a_message(client, landing_page, form_id):
    response = _post_form(
        client,
        _subscribe_path(landing_page, form_id),
        _optin_data(),
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert "check your inbox" in body["message"]


def test_json_post_without_consent_answers_with_the_reason(client, landing_page, form_id):
    data = _optin_data()
    del data["consent"]

    response = _post_form(
        client, _subscribe_path(landing_page, form_id), data, HTTP_ACCEPT="application/json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "message": (
            "Please tick the box to agree to receive emails — "
            "we cannot send the download otherwise."
        ),
    }


# --- Pages behind email links -----------------------------------------------------------


def _signed_up(landing_page, form_id, email="leila@example.com", name="Leila") -> Subscriber:
    return services.optin_submit(
        landing_page=landing_page,
        form_id=form_id,
        email=email,
        name=name,
        consent=True,
        visitor=VISITOR,
        attribution=services.Attribution(),
    ).subscriber


def _link(text: str, path: str) -> str:
    return re.search(rf"https?://[^\s\"<>]+/f/{path}/[^\s\"<>]+/", text).group(0)


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_confirm_link_shows_a_button_that_posts_and_confirms_no_one_by_itself(
    client, landing_page, form_id
):
    subscriber = _signed_up(landing_page, form_id)
    mail = OutboundEmail.objects.get(kind="funnels:confirm")
    path = _path(_link(mail.text_body, "confirm"))

    soup = _soup(client.get(path))

    form = soup.select_one("form[data-autosubmit]")
    assert (form["method"], form["action"]) == ("post", path)
    assert form.select_one("input[name=csrfmiddlewaretoken]")
    assert form.select_one("button[type=submit]").get_text(strip=True) == "Confirm my subscription"
    assert soup.select_one("script[src='/static/js/confirm.js'][defer]")
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.PENDING


def test_confirming_shows_the_download_link(client, landing_page, form_id, magnet):
    _signed_up(landing_page, form_id, name="<i>Leila</i>")
    path = _path(_link(OutboundEmail.objects.get(kind="funnels:confirm").text_body, "confirm"))

    response = client.post(path)

    assert response.status_code == 200
    soup = _soup(response)
    assert " ".join(soup.h1.get_text().split()) == "Thank you, <i>Leila</i>!"
    assert "<i>Leila</i>" not in response.content.decode()
    assert magnet.title in soup.get_text()
    download = soup.select_one("main a[href*='/f/download/']")
    assert download.get_text(strip=True) == "Download your copy"


def test_used_confirm_link_says_so(client, landing_page, form_id):
    _signed_up(landing_page, form_id)
    path = _path(_link(OutboundEmail.objects.get(kind="funnels:confirm").text_body, "confirm"))
    client.post(path)

    response = client.post(path)

    assert "Already confirmed" in response.content.decode()


def test_broken_link_explains_the_problem(client, landing_page):
    response = client.get("/f/confirm/not-a-real-token/")

    assert response.status_code == 400
    soup = _soup(response)
    assert "This link is not valid" in soup.select_one("[role=alert]").get_text()
    assert soup.select_one("meta[name=robots]")["content"] == "noindex, nofollow"


def test_unsubscribe_link_asks_first_then_says_goodbye(client, landing_page, form_id):
    subscriber = _signed_up(landing_page, form_id)
    path = _path(services.unsubscribe_url(subscriber))

    asked = _soup(client.get(path))
    form = asked.select_one("main form[method=post]")
    done = client.post(form["action"])

    assert form["action"] == path
    assert "You are unsubscribed" in done.content.decode()
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.UNSUBSCRIBED


def test_my_data_page_offers_export_and_a_confirmed_erase(client, landing_page, form_id):
    subscriber = _signed_up(landing_page, form_id)
    path = _path(services.manage_url(subscriber))

    soup = _soup(client.get(path))
    refused = _soup(client.post(path, {"action": "erase", "confirm_email": "someone@else.org"}))

    actions = [i["value"] for i in soup.select("main form input[name=action]")]
    assert actions == ["export", "erase"]
    assert soup.select_one("input[name=confirm_email]").has_attr("required")
    assert "leila@example.com" in soup.get_text()
    error = refused.select_one("[role=alert]")
    assert "Type your email address to confirm." in error.get_text()
    assert refused.select_one("input[name=confirm_email]")["aria-describedby"] == error["id"]
    erased = client.post(path, {"action": "erase", "confirm_email": "Leila@example.com"})
    assert "Your data is erased" in erased.content.decode()


# --- Emails -----------------------------------------------------------------------------


def test_confirmation_email_has_the_link_the_magnet_and_a_footer(landing_page, form_id, magnet):
    _signed_up(landing_page, form_id, name="Leila&Co")

    mail = OutboundEmail.objects.get(kind="funnels:confirm")

    assert mail.subject == f"Confirm your email to get {magnet.title}"
    assert "\n" not in mail.subject
    confirm_url = _link(mail.text_body, "confirm")
    assert mail.text_body.startswith("Hi Leila&Co,")
    assert "12 Harbour Street\nBristol BS1 4RN" in mail.text_body
    assert "Hi Leila&amp;Co," in mail.html_body
    html = BeautifulSoup(mail.html_body, "html.parser")
    assert html.find("a", string=re.compile("Confirm my subscription"))["href"] == confirm_url
    assert html.find("a", string="Unsubscribe")["href"] == _link(mail.text_body, "unsubscribe")
    assert html.find("a", string="Your data")["href"] == _link(mail.text_body, "my-data")
    assert "12 Harbour Street<br>Bristol BS1 4RN" in mail.html_body
    assert html.find_all(attrs={"dir": "auto"})
    assert html.find("table") is None


def test_delivery_email_renders_the_creators_text_and_a_download_button(
    landing_page, form_id, magnet
):
    subscriber = _signed_up(landing_page, form_id)
    magnet.delivery_body = "Hi {first_name},\n\nHere it is: {download_url}\n\n<Enjoy> & share"
    magnet.save()

    services.magnet_send(subscriber=subscriber, magnet=magnet)

    mail = OutboundEmail.objects.get(kind="funnels:delivery")
    download_url = _link(mail.text_body, "download")
    assert mail.text_body.startswith("Hi Leila,\n\nHere it is: ")
    assert "<Enjoy> & share" in mail.text_body
    html = BeautifulSoup(mail.html_body, "html.parser")
    assert "&lt;Enjoy&gt; &amp; share" in mail.html_body
    assert html.find("a", string=re.compile("Download"))["href"] == download_url
    assert html.find("a", string="Unsubscribe")
