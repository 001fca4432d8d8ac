"""Shared funnel fixtures: a lead magnet in a throw-away protected store, and a landing
page (the site root) with one opt-in form."""

import pytest
from django.core.files.base import ContentFile

from funnels.models import LandingPage, LeadMagnet
from tests.harness.wagtail_pages import site_root_install

MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


@pytest.fixture
def protected_dir(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    return tmp_path / "protected"


@pytest.fixture
def magnet(protected_dir):
    magnet = LeadMagnet(title="Launch Checklist", download_filename="launch-checklist.pdf")
    magnet.file.save("launch-checklist.pdf", ContentFile(MINIMAL_PDF), save=False)
    magnet.save()
    return magnet


def make_landing_page(
    magnet, *, double_opt_in=True, tags="checklist, launch", title="Free checklist"
):
    return site_root_install(
        LandingPage(
            title=title,
            slug=title.lower().replace(" ", "-"),
            body=[
                (
                    "hero",
                    {"headline": "Launch without the panic", "subheadline": "A one-page plan."},
                ),
                (
                    "optin_form",
                    {
                        "heading": "Get the checklist",
                        "magnet": magnet,
                        "ask_name": True,
                        "button_label": "Send it",
                        "consent_text": "Send me the checklist and weekly tips. Unsubscribe any time.",
                        "double_opt_in": double_opt_in,
                        "tags": tags,
                    },
                ),
            ],
        )
    )


@pytest.fixture
def landing_page(magnet):
    return make_landing_page(magnet)


@pytest.fixture
def form_id(landing_page):
    return next(iter(landing_page.optin_forms()))


@pytest.fixture
def client():
    # Browsers name the page's origin on every POST; the opt-in form, on edge-cached
    # pages without a CSRF token, is checked by it (core/csrf.py).
    from django.test import Client

    return Client(headers={"Origin": "http://testserver"})


def process_signups() -> list[str]:
    """Run the processing task of every sign-up waiting, in this process, as the worker
    would (the opt-in request only stores the row and queues the task on commit)."""
    from funnels.models import SignUp
    from funnels.tasks_signups import signup_process_task

    waiting = SignUp.objects.filter(status=SignUp.Status.RECEIVED).order_by("pk")
    return [
        signup_process_task.apply(args=[pk]).get() for pk in waiting.values_list("pk", flat=True)
    ]
