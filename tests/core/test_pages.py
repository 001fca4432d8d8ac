"""The site-wide templates: home page, language direction, escaping, account pages."""

import pytest
from allauth.account.models import EmailAddress
from django.test import RequestFactory
from django.urls import reverse
from django.views.defaults import server_error
from wagtail.models import Page, Site

from accounts.models import User
from core.models import BrandSettings, HomePage

pytestmark = pytest.mark.django_db

PERSIAN_TITLE = "یاد بگیرید آنچه می‌دانید را بفروشید"
ARABIC_TAGLINE = "دورات وكتب إلكترونية وندوات مباشرة — كل ذلك في مكان واحد"


@pytest.fixture
def site() -> Site:
    site = Site.objects.get(is_default_site=True)
    brand = BrandSettings.for_site(site)
    brand.brand_name = "Northwind Academy"
    brand.postal_address = "12 Harbour Street\nBristol"
    brand.save()
    return site


@pytest.fixture
def make_home_page(site):
    def make(**fields) -> HomePage:
        fields.setdefault("title", "Learn to sell what you know")
        home = HomePage(slug="lodestone-home", **fields)
        Page.get_first_root_node().add_child(instance=home)
        site.root_page = home
        site.save()
        return home

    return make


@pytest.fixture
def user_with_two_emails() -> User:
    user = User.objects.create_user("sara@example.com", "a-long pass phrase")
    EmailAddress.objects.create(user=user, email="sara@example.com", verified=True, primary=True)
    EmailAddress.objects.create(user=user, email="sara.work@example.org", verified=False)
    return user


def test_home_page_shows_brand_name_title_and_call_to_action(client, make_home_page):
    home = make_home_page(tagline="Courses that pay for themselves")
    home.call_to_action_label = "Start the free lesson"
    home.call_to_action_page = home
    home.save()

    response = client.get("/")

    assert response.status_code == 200
    assert "core/home_page.html" in [t.name for t in response.templates]
    html = response.content.decode()
    assert "Northwind Academy" in html
    assert "<h1" in html and "Learn to sell what you know</h1>" in html
    assert "Courses that pay for themselves" in html
    assert "Start the free lesson" in html
    assert "12 Harbour Street<br>Bristol" in html


@pytest.mark.parametrize(
    ("accept_language", "lang", "direction"),
    [("fa", "fa", "rtl"), ("ar", "ar", "rtl"), ("en", "en", "ltr"), ("vi", "vi", "ltr")],
)
def test_page_direction_follows_the_visitors_language(
    client, make_home_page, accept_language, lang, direction
):
    make_home_page()

    response = client.get("/", HTTP_ACCEPT_LANGUAGE=accept_language)

    assert f'<html lang="{lang}" dir="{direction}">' in response.content.decode()


def test_persian_and_arabic_creator_text_round_trips_unescaped(client, make_home_page):
    make_home_page(
        title=PERSIAN_TITLE,
        tagline=ARABIC_TAGLINE,
        intro="<p>در <b>آکادمی نورث‌وین</b> یاد می‌گیرید</p>",
    )

    response = client.get("/", HTTP_ACCEPT_LANGUAGE="fa")

    html = response.content.decode()
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert f"{PERSIAN_TITLE}</h1>" in html
    assert ARABIC_TAGLINE in html
    assert "<b>آکادمی نورث‌وین</b>" in html
    assert "&#" not in html.split("<main", 1)[1].split("</main>", 1)[0]


def test_markup_in_creator_text_is_escaped(client, make_home_page):
    make_home_page(title="<img src=x onerror=alert(1)>", tagline="<script>alert('x')</script>")

    html = client.get("/").content.decode()

    assert "<script>alert(" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<img src=x" not in html


def test_login_page_offers_password_and_sign_in_by_code(client, site):
    response = client.get(reverse("account_login"))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'type="password"' in html
    assert 'name="password"' in html
    assert f'href="{reverse("account_request_login_code")}"' in html
    assert "Northwind Academy" in html, "allauth pages wear the site header"
    assert 'class="auth-card"' in html


def test_sign_in_code_request_page_uses_the_site_layout(client, site):
    response = client.get(reverse("account_request_login_code"))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="email"' in html
    assert 'class="site-header"' in html


def test_account_page_requires_login(client, site):
    response = client.get(reverse("account_overview"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login"))
    assert "next=" in response.url


def test_account_page_lists_the_users_email_addresses(client, site, user_with_two_emails):
    other = User.objects.create_user("someone@example.net", "a-long pass phrase")
    EmailAddress.objects.create(user=other, email="someone@example.net", verified=True)
    client.force_login(user_with_two_emails)

    response = client.get(reverse("account_overview"))

    assert response.status_code == 200
    html = response.content.decode()
    assert "sara@example.com" in html
    assert "sara.work@example.org" in html
    assert "someone@example.net" not in html
    assert "Verified" in html and "Unverified" in html
    assert reverse("account_change_password") in html
    assert reverse("account_email") in html


def test_messages_are_announced_as_status(client, site, user_with_two_emails):
    response = client.post(
        reverse("account_login"),
        {"login": "sara@example.com", "password": "a-long pass phrase"},
        follow=True,
    )

    html = response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("account_overview")
    assert 'role="status"' in html
    assert "sara@example.com" in html.split('role="status"', 1)[1]


def test_unknown_address_uses_the_site_404_page(client, make_home_page):
    make_home_page()

    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert "404.html" in [t.name for t in response.templates]
    assert "Northwind Academy" in response.content.decode()


def test_500_page_renders_without_database_or_context_processors(django_assert_num_queries):
    request = RequestFactory().get("/")

    with django_assert_num_queries(0):
        response = server_error(request)

    assert response.status_code == 500
    html = response.content.decode()
    assert 'dir="ltr"' in html
    assert "<style>" in html
    assert "/static/" not in html
