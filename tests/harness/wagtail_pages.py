"""Pages and sites for tests that render the public site."""

from django.conf import settings
from wagtail.coreutils import get_supported_content_language_variant
from wagtail.models import Locale, Page, Site

from core.models import HomePage


def site_root_install(page: Page) -> Page:
    """Make `page` the root of the only (default) Site, and publish it.

    Works on the database as migrations leave it (a root page, Wagtail's welcome page
    and a Site pointing at it) and as a transactional test's flush leaves it (no pages,
    no locale).
    """
    locale, _created = Locale.objects.get_or_create(
        language_code=get_supported_content_language_variant(settings.LANGUAGE_CODE)
    )
    root = Page.get_first_root_node()
    if root is None:
        root = Page.add_root(instance=Page(title="Root", slug="root", locale=locale))
    Site.objects.all().delete()
    for child in root.get_children():
        child.delete()
    root.refresh_from_db()  # the deletes changed its child count
    root.add_child(instance=page)
    page.save_revision().publish()
    Site.objects.create(
        hostname="localhost",
        port=80,
        site_name=settings.WAGTAIL_SITE_NAME,
        root_page=page,
        is_default_site=True,
    )
    return page.__class__.objects.get(pk=page.pk)


def home_page_install(*, title: str, tagline: str = "") -> HomePage:
    return site_root_install(HomePage(title=title, slug="home", tagline=tagline))
