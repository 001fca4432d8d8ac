"""Demo content for `make run`: a creator, the brand, and a home page.

Each app that has something to show adds a `demo.py` with `load(*, stdout)`; the
load_demo command runs them in order. Every loader is idempotent.
"""

import secrets

from allauth.account.models import EmailAddress
from django.conf import settings
from django.db import transaction
from wagtail.models import Page, Site

from accounts.models import User

from .models import BrandSettings, HomePage

CREATOR_EMAIL = "creator@lodestone.localhost"
CREDENTIALS_FILE = settings.VAR_DIR / "demo-credentials.txt"


def _creator_password() -> str:
    # A random password per installation, kept under var/ so every run prints the same.
    if CREDENTIALS_FILE.exists():
        return CREDENTIALS_FILE.read_text().strip()
    password = secrets.token_urlsafe(12)
    CREDENTIALS_FILE.parent.mkdir(parents=True, exist_ok=True)
    CREDENTIALS_FILE.write_text(password + "\n")
    CREDENTIALS_FILE.chmod(0o600)
    return password


@transaction.atomic
def load(*, stdout) -> dict:
    password = _creator_password()
    creator, created = User.objects.get_or_create(
        email=CREATOR_EMAIL,
        defaults={
            "first_name": "Maya",
            "last_name": "Creator",
            "is_staff": True,
            "is_superuser": True,
        },
    )
    if created or not creator.check_password(password):
        creator.set_password(password)
        creator.save()
    EmailAddress.objects.update_or_create(
        user=creator, email=CREATOR_EMAIL, defaults={"verified": True, "primary": True}
    )

    home = HomePage.objects.first()
    if home is None:
        root = Page.get_first_root_node()
        home = root.add_child(
            instance=HomePage(
                title="Learn to sell what you know",
                slug="northwind-academy",
                seo_title="Northwind Academy",
                tagline="Courses, e-books and live workshops for independent creators.",
                intro=(
                    "<p>Start with the free <b>Launch Checklist</b>, then join the "
                    "flagship course when you are ready.</p>"
                ),
            )
        )
    site = Site.objects.filter(is_default_site=True).first()
    if site is None:
        site = Site.objects.create(
            hostname="localhost", port=80, root_page=home, is_default_site=True
        )
    if site.root_page_id != home.pk:
        old_root = site.root_page
        site.root_page = home
        site.site_name = "Northwind Academy"
        site.save()
        # Wagtail's migration leaves a "Welcome" page; the demo replaces it.
        if old_root.specific_class is Page and old_root.pk != home.pk:
            old_root.delete()

    brand = BrandSettings.for_site(site)
    if brand.brand_name in ("", "Lodestone") and not brand.sender_email:
        brand.brand_name = "Northwind Academy"
        brand.sender_name = "Maya at Northwind"
        brand.sender_email = "maya@northwind.localhost"
        brand.postal_address = "Northwind Academy\nMannerheimintie 12\n00100 Helsinki\nFinland"
        brand.default_time_zone = "Europe/Helsinki"
        brand.save()
    return {"creator_email": CREATOR_EMAIL, "creator_password": password}
