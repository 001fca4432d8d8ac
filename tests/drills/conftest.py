"""Fixtures shared by the fault drills: a landing page with an opt-in form in the test
database, and opt-in POSTs made the way a browser makes them."""

import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import pytest
from django.core import signing
from django.core.files.base import ContentFile

from funnels.forms import RENDERED_SALT
from funnels.models import LandingPage, LeadMagnet
from tests.harness.wagtail_pages import site_root_install

from .servers import DRILL_SECRET_KEY

MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


@dataclass(frozen=True)
class OptInForm:
    page_id: int
    form_id: str

    @property
    def path(self) -> str:
        return f"/f/subscribe/{self.page_id}/{self.form_id}/"


@pytest.fixture
def optin_form(settings, tmp_path) -> OptInForm:
    """A published landing page (the site root) with a double opt-in form; committed, so
    the drill's server processes see it (drills use `transactional_db`)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    magnet = LeadMagnet(title="Launch Checklist", download_filename="launch-checklist.pdf")
    magnet.file.save("launch-checklist.pdf", ContentFile(MINIMAL_PDF), save=False)
    magnet.save()
    page = site_root_install(
        LandingPage(
            title="Launch checklist",
            slug="launch-checklist",
            body=[
                (
                    "optin_form",
                    {
                        "heading": "Get the checklist",
                        "magnet": magnet,
                        "ask_name": True,
                        "button_label": "Send it",
                        "consent_text": "Send me the checklist. Unsubscribe any time.",
                        "double_opt_in": True,
                        "tags": "drill",
                    },
                )
            ],
        )
    )
    return OptInForm(page_id=page.pk, form_id=str(next(iter(page.optin_forms()))))


def drill_address(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(5)}@drill.lodestone-mail.fi"


def optin_post(
    base_url: str, form: OptInForm, email: str, *, timeout: float = 30
) -> tuple[int, dict]:
    """POST the opt-in form as the page's script does: same-origin, JSON answer, a render
    time signed by the server's key a minute ago (past the form's bot check)."""
    rendered_at = signing.dumps(int(time.time()) - 60, key=DRILL_SECRET_KEY, salt=RENDERED_SALT)
    body = urllib.parse.urlencode(
        {"email": email, "name": "Drill", "consent": "on", "rendered_at": rendered_at}
    ).encode()
    request = urllib.request.Request(
        base_url + form.path,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "Origin": base_url,
            "Referer": base_url + "/",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, {"body": text[:300].decode(errors="replace")}
