"""Webinar fixtures: a published webinar page under a home page, its sessions made into
occasions by publishing (as the admin does), and helpers to register and read mail."""

import datetime
import re
import time
from datetime import UTC

import pytest
from django.core import signing

from core.models import OutboundEmail
from funnels.forms import RENDERED_SALT
from tests.harness.wagtail_pages import home_page_install
from webinars import services
from webinars.models import Occasion, WebinarPage, WebinarSession

ROOM = "https://meet.example.org/spring-pricing-qa"


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def local_start(moment: datetime.datetime, zone: str) -> dict:
    """WebinarSession start fields for an instant, written in ``zone``."""
    import zoneinfo

    local = moment.astimezone(zoneinfo.ZoneInfo(zone))
    return {"start_date": local.date(), "start_time": local.time(), "time_zone": zone}


def session_at(moment: datetime.datetime, zone: str = "Europe/Helsinki", **fields):
    return WebinarSession(**local_start(moment, zone), **fields)


def make_webinar(home, *, sessions=(), rules=(), slug="pricing-qa", **fields) -> WebinarPage:
    page = WebinarPage(
        title=fields.pop("title", "Pricing your first course: live Q&A"),
        slug=slug,
        host_name="Maya Virtanen",
        join_url=fields.pop("join_url", ROOM),
        **fields,
    )
    for session in sessions:
        page.sessions.add(session)
    for rule in rules:
        page.evergreen_rules.add(rule)
    home.add_child(instance=page)
    # Publishing runs the page_published receiver: sessions become occasions.
    page.save_revision().publish()
    services.webinar_product_ensure(page=page)
    return WebinarPage.objects.get(pk=page.pk)


def republish(page: WebinarPage) -> WebinarPage:
    """Publish the page as it is in the database now (after editing its sessions)."""
    page = WebinarPage.objects.get(pk=page.pk)
    page.save_revision().publish()
    return WebinarPage.objects.get(pk=page.pk)


def occasions(page: WebinarPage) -> list[Occasion]:
    return list(Occasion.objects.filter(page=page).order_by("starts_at"))


def rendered_long_ago() -> str:
    """A form render time that passes the bot check (a person took 10 s)."""
    return signing.dumps(int(time.time()) - 10, salt=RENDERED_SALT)


def form(email: str, occasion: Occasion | None = None, **extra) -> dict:
    data = {
        "email": email,
        "name": "Leila",
        "consent": "on",
        "time_zone": "Asia/Kathmandu",
        "rendered_at": rendered_long_ago(),
    }
    if occasion is not None:
        data["occasion"] = str(occasion.pk)
    data.update(extra)
    return data


def same_origin(client) -> dict:
    # The register view checks the Origin (the form lives on edge-cacheable pages).
    return {"HTTP_ORIGIN": "http://testserver"}


class Visitor:
    ip_address = "203.0.113.7"
    user_agent = "pytest"
    time_zone = ""


def register(page, occasion, email, *, name="Leila", time_zone="Asia/Kathmandu", **kwargs):
    return services.registration_free_submit(
        page=page,
        email=email,
        name=name,
        consent=True,
        time_zone=time_zone,
        visitor=Visitor(),
        occasion_id=occasion.pk if occasion is not None else None,
        **kwargs,
    )


def outbox(to: str, kind: str | None = None) -> list[OutboundEmail]:
    rows = OutboundEmail.objects.filter(to__iexact=to).order_by("pk")
    if kind:
        rows = rows.filter(kind=kind)
    return list(rows)


def link(text: str, path: str) -> str:
    found = re.search(rf"https?://[^\s\"<>]+{re.escape(path)}[^\s\"<>]+", text)
    assert found, f"no {path} link in:\n{text}"
    return found.group(0)


@pytest.fixture
def home(db):
    return home_page_install(title="Northwind Academy")
