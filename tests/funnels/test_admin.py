"""The creator's funnel admin: lead magnets, subscribers, and the funnel performance report."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.core.files.storage import storages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook
from wagtail.models import ModelLogEntry, Page

from accounts.models import User
from funnels.models import (
    ConsentRecord,
    LandingPage,
    LeadMagnet,
    PageVisitDay,
    Subscriber,
    Suppression,
    Touch,
)
from funnels.services import email_hash
from media.stamping.samples import sample_pdf

pytestmark = pytest.mark.django_db

PERSIAN_NAME = "مریم رضایی"
VIETNAMESE_NAME = "Nguyễn Thị Hoa"
CONSENT_TEXT = "Send me the checklist and weekly tips. Unsubscribe any time."


@pytest.fixture
def creator_client(client):
    creator = User.objects.create_superuser("creator@example.com", "a-long pass phrase")
    client.force_login(creator)
    return client


def make_landing_page(title: str) -> LandingPage:
    page = LandingPage(title=title, slug=re.sub(r"\W+", "-", title.lower()).strip("-"))
    Page.get_first_root_node().add_child(instance=page)
    return page


def make_subscriber(
    email: str,
    *,
    page: LandingPage | None = None,
    name: str = "",
    status: str = Subscriber.Status.PENDING,
    utm_source: str = "",
    tags: tuple[str, ...] = (),
    at=None,
    confirmed: bool = False,
) -> Subscriber:
    """A subscriber as the opt-in service leaves one: a touch, a consent row, maybe confirmed."""
    at = at or timezone.now()
    subscriber = Subscriber.objects.create(
        email=email, name=name, time_zone="Europe/Helsinki", status=status, created_at=at
    )
    touch = Touch.objects.create(
        subscriber=subscriber, landing_page=page, utm_source=utm_source, created_at=at
    )
    subscriber.first_touch = subscriber.last_touch = touch
    subscriber.save()
    if tags:
        subscriber.tags.add(*tags)
        subscriber.save()
    ConsentRecord.objects.create(
        subscriber=subscriber,
        action=ConsentRecord.Action.GRANTED,
        email=email,
        consent_text=CONSENT_TEXT,
        landing_page_id=page.pk if page else None,
        page_url="https://example.com/free-checklist/",
        form_id="6f1c2b1e-0000-4000-8000-000000000001",
        form_version="17",
        ip_address="203.0.113.9",
        user_agent="Mozilla/5.0 (Test Browser)",
        created_at=at,
    )
    if confirmed:
        ConsentRecord.objects.create(
            subscriber=subscriber,
            action=ConsentRecord.Action.CONFIRMED,
            email=email,
            landing_page_id=page.pk if page else None,
            created_at=at,
        )
    return subscriber


def listed_emails(response) -> set[str]:
    return {s.email for s in response.context["object_list"]}


# --- Subscribers -------------------------------------------------------------------------------


@pytest.fixture
def audience():
    """Four subscribers differing in status, tag, first page, source and sign-up date."""
    checklist = make_landing_page("Free checklist")
    webinar = make_landing_page("Webinar replay")
    long_ago = timezone.now() - timedelta(days=60)
    return {
        "checklist": checklist,
        "webinar": webinar,
        "maryam": make_subscriber(
            "maryam@example.com",
            page=checklist,
            name=PERSIAN_NAME,
            status=Subscriber.Status.CONFIRMED,
            utm_source="newsletter",
            tags=("vip",),
            confirmed=True,
        ),
        "hoa": make_subscriber(
            "hoa@example.com",
            page=checklist,
            name=VIETNAMESE_NAME,
            status=Subscriber.Status.CONFIRMED,
            utm_source="instagram",
            tags=("vip", "launch"),
            confirmed=True,
        ),
        "pending": make_subscriber(
            "pending@example.com", page=webinar, utm_source="newsletter", tags=("launch",)
        ),
        "old": make_subscriber(
            "old@example.com",
            page=webinar,
            name="Olli",
            status=Subscriber.Status.UNSUBSCRIBED,
            at=long_ago,
        ),
    }


def test_subscriber_listing_filters_by_status_tag_page_source_and_date(creator_client, audience):
    url = reverse("subscribers:index")
    week_ago = (timezone.localdate() - timedelta(days=7)).isoformat()

    assert listed_emails(creator_client.get(url)) == {
        "maryam@example.com",
        "hoa@example.com",
        "pending@example.com",
        "old@example.com",
    }
    assert listed_emails(creator_client.get(url, {"status": "confirmed"})) == {
        "maryam@example.com",
        "hoa@example.com",
    }
    assert listed_emails(creator_client.get(url, {"tag": "launch"})) == {
        "hoa@example.com",
        "pending@example.com",
    }
    assert listed_emails(creator_client.get(url, {"landing_page": audience["webinar"].pk})) == {
        "pending@example.com",
        "old@example.com",
    }
    assert listed_emails(creator_client.get(url, {"utm_source": "newsletter"})) == {
        "maryam@example.com",
        "pending@example.com",
    }
    assert listed_emails(creator_client.get(url, {"created_from": week_ago})) == {
        "maryam@example.com",
        "hoa@example.com",
        "pending@example.com",
    }
    combined = creator_client.get(
        url, {"status": "confirmed", "tag": "vip", "utm_source": "instagram"}
    )
    assert listed_emails(combined) == {"hoa@example.com"}


def test_subscriber_listing_searches_email_and_name(creator_client, audience):
    url = reverse("subscribers:index")

    assert listed_emails(creator_client.get(url, {"q": "Nguyễn"})) == {"hoa@example.com"}
    assert listed_emails(creator_client.get(url, {"q": "pending@"})) == {"pending@example.com"}


def test_subscriber_listing_shows_source_tags_and_no_add_button(creator_client, audience):
    response = creator_client.get(reverse("subscribers:index"))

    html = response.content.decode()
    assert "Free checklist · newsletter" in html
    assert "launch, vip" in html
    assert PERSIAN_NAME in html
    assert "Erase (GDPR)" in html
    assert reverse("subscribers:add") not in html
    assert creator_client.get(reverse("subscribers:add")).status_code == 302


def test_csv_export_holds_the_filtered_subscribers_with_non_latin_names(creator_client, audience):
    response = creator_client.get(
        reverse("subscribers:index"), {"status": "confirmed", "export": "csv"}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {row["Email"] for row in rows} == {"maryam@example.com", "hoa@example.com"}
    by_email = {row["Email"]: row for row in rows}
    assert by_email["maryam@example.com"]["Name"] == PERSIAN_NAME
    assert by_email["hoa@example.com"]["Name"] == VIETNAMESE_NAME
    assert by_email["hoa@example.com"]["Tags"] == "launch, vip"
    assert by_email["hoa@example.com"]["First landing page"] == "Free checklist"
    assert by_email["hoa@example.com"]["utm_source"] == "instagram"


def test_csv_export_defuses_spreadsheet_formulas_in_names(creator_client):
    make_subscriber("mallory@example.com", name='=HYPERLINK("http://evil.example")')

    response = creator_client.get(reverse("subscribers:index"), {"export": "csv"})

    text = b"".join(response.streaming_content).decode("utf-8-sig")
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["Name"] == '\'=HYPERLINK("http://evil.example")'


def test_xlsx_export_holds_the_filtered_subscribers(creator_client, audience):
    response = creator_client.get(reverse("subscribers:index"), {"tag": "vip", "export": "xlsx"})

    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active
    header, *rows = list(sheet.values)
    names = {dict(zip(header, row, strict=True))["Name"] for row in rows}
    assert names == {PERSIAN_NAME, VIETNAMESE_NAME}


def test_inspect_shows_the_consent_ledger_touches_and_downloads(creator_client, audience):
    maryam = audience["maryam"]

    response = creator_client.get(reverse("subscribers:inspect", args=[maryam.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Consent ledger" in html
    assert CONSENT_TEXT in html
    assert "203.0.113.9" in html
    assert "Mozilla/5.0 (Test Browser)" in html
    assert "Address confirmed" in html
    assert "Consent given" in html
    assert "newsletter" in html
    assert "No downloads yet." in html
    assert reverse("subscribers:unsubscribe", args=[maryam.pk]) in html


def test_mailchimp_sync_error_is_visible_on_listing_and_inspect(creator_client, audience):
    Subscriber.objects.filter(pk=audience["hoa"].pk).update(
        audience_sync_error="Member Exists: hoa@example.com is already a list member."
    )

    listing = creator_client.get(reverse("subscribers:index")).content.decode()
    inspect = creator_client.get(
        reverse("subscribers:inspect", args=[audience["hoa"].pk])
    ).content.decode()

    assert listing.count("Sync failed") == 1
    assert "Mailchimp sync failed." in inspect
    assert "is already a list member" in inspect
    filtered = creator_client.get(reverse("subscribers:index"), {"sync_problem": "true"})
    assert listed_emails(filtered) == {"hoa@example.com"}


def test_unsubscribe_action_changes_status_and_appends_a_withdrawn_consent(
    creator_client, audience
):
    maryam = audience["maryam"]
    consents_before = maryam.consents.count()

    response = creator_client.post(
        reverse("subscribers:unsubscribe", args=[maryam.pk]),
        HTTP_USER_AGENT="Creator Browser/1.0",
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("subscribers:inspect", args=[maryam.pk])
    maryam.refresh_from_db()
    assert maryam.status == Subscriber.Status.UNSUBSCRIBED
    assert maryam.unsubscribed_at is not None
    assert maryam.consents.count() == consents_before + 1
    withdrawn = maryam.consents.order_by("-created_at", "-pk").first()
    assert withdrawn.action == ConsentRecord.Action.WITHDRAWN
    assert "creator@example.com" in withdrawn.consent_text
    assert withdrawn.user_agent == "Creator Browser/1.0"


def test_unsubscribe_action_refuses_get(creator_client, audience):
    maryam = audience["maryam"]

    response = creator_client.get(reverse("subscribers:unsubscribe", args=[maryam.pk]))

    assert response.status_code == 405
    maryam.refresh_from_db()
    assert maryam.status == Subscriber.Status.CONFIRMED


def test_erase_asks_first_then_removes_the_subscriber_and_leaves_a_suppression(
    creator_client, audience
):
    maryam = audience["maryam"]
    url = reverse("subscribers:delete", args=[maryam.pk])

    confirm = creator_client.get(url)
    assert confirm.status_code == 200
    assert "Yes, erase for good" in confirm.content.decode()
    assert Subscriber.objects.filter(pk=maryam.pk).exists()

    response = creator_client.post(url)

    assert response.status_code == 302
    assert not Subscriber.objects.filter(pk=maryam.pk).exists()
    assert not ConsentRecord.objects.filter(email="maryam@example.com").exists()
    assert not Touch.objects.filter(subscriber_id=maryam.pk).exists()
    assert Suppression.objects.filter(email_hash=email_hash("maryam@example.com")).exists()
    # The admin history keeps the erasure, but not the address.
    assert ModelLogEntry.objects.filter(action="wagtail.delete", object_id=str(maryam.pk)).exists()
    assert not ModelLogEntry.objects.filter(label__icontains="maryam@").exists()


def test_edit_changes_only_name_time_zone_and_tags(creator_client, audience):
    pending = audience["pending"]

    response = creator_client.post(
        reverse("subscribers:edit", args=[pending.pk]),
        {
            "name": "Pia Pending",
            "time_zone": "Asia/Tehran",
            "tags": "launch, webinar",
            "status": "confirmed",
            "email": "someone-else@example.com",
        },
    )

    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.name == "Pia Pending"
    assert pending.time_zone == "Asia/Tehran"
    assert sorted(pending.tags.names()) == ["launch", "webinar"]
    assert pending.status == Subscriber.Status.PENDING
    assert pending.email == "pending@example.com"
    assert not ModelLogEntry.objects.filter(label__icontains="pending@").exists()


# --- Access -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url_name", ["funnel_performance:index", "subscribers:index", "wagtailadmin_home"]
)
def test_non_staff_user_is_redirected_to_log_in(client, url_name):
    buyer = User.objects.create_user("buyer@example.com", "a-long pass phrase")
    client.force_login(buyer)

    response = client.get(reverse(url_name))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


# --- Lead magnets -------------------------------------------------------------------------------


CHECKLIST_PDF = sample_pdf(1, seed=3)


@pytest.fixture
def protected_tmp(settings, tmp_path, monkeypatch):
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    # FileField calls its storage callable once, at import; point it at the new store.
    monkeypatch.setattr(LeadMagnet._meta.get_field("file"), "storage", storages["protected"])
    return tmp_path / "protected"


def test_lead_magnet_created_in_the_admin_is_stored_in_protected_storage(
    creator_client, protected_tmp, settings
):
    # A real PDF: the admin refuses one that cannot be stamped for subscribers.
    upload = SimpleUploadedFile(
        "launch-checklist.pdf", CHECKLIST_PDF, content_type="application/pdf"
    )

    response = creator_client.post(
        reverse("wagtailsnippets_funnels_leadmagnet:add"),
        {
            "title": "Launch Checklist",
            "file": upload,
            "download_filename": "launch-checklist.pdf",
            "delivery_subject": "Here is your download: {title}",
            "delivery_body": "Hi {first_name}, {download_url}",
        },
    )

    assert response.status_code == 302, response.context["form"].errors
    magnet = LeadMagnet.objects.get(title="Launch Checklist")
    assert magnet.file.name.startswith("lead-magnets/")
    assert (protected_tmp / magnet.file.name).read_bytes() == CHECKLIST_PDF
    assert not (settings.MEDIA_ROOT / magnet.file.name).exists()


def test_lead_magnet_listing_shows_file_name_and_download_count(creator_client):
    magnet = LeadMagnet.objects.create(title="Launch Checklist", file="lead-magnets/x/abc.pdf")
    subscriber = make_subscriber("reader@example.com")
    for _ in range(2):
        magnet.deliveries.create(subscriber=subscriber, file_name=magnet.file.name)

    response = creator_client.get(reverse("wagtailsnippets_funnels_leadmagnet:list"))

    html = response.content.decode()
    assert "Launch Checklist" in html
    assert "abc.pdf" in html
    assert re.search(r">\s*2\s*</td>", html)


def test_lead_magnet_delete_warns_that_its_download_records_go_too(creator_client):
    magnet = LeadMagnet.objects.create(title="Launch Checklist", file="lead-magnets/x/abc.pdf")
    subscriber = make_subscriber("reader@example.com")
    for _ in range(3):
        magnet.deliveries.create(subscriber=subscriber, file_name=magnet.file.name)

    response = creator_client.get(
        reverse("wagtailsnippets_funnels_leadmagnet:delete", args=[magnet.pk])
    )

    assert "Its record of 3 downloads goes with it." in response.content.decode()


def test_lead_magnet_is_choosable_from_a_landing_page_opt_in_block(creator_client):
    LeadMagnet.objects.create(title="Launch Checklist", file="lead-magnets/x/abc.pdf")
    page = make_landing_page("Free checklist")

    edit = creator_client.get(reverse("wagtailadmin_pages:edit", args=[page.pk]))
    chooser_url = reverse("wagtailsnippetchoosers_funnels_leadmagnet:choose")
    chooser = creator_client.get(chooser_url)

    assert edit.status_code == 200
    assert chooser_url in edit.content.decode()
    assert chooser.status_code == 200
    assert "Launch Checklist" in chooser.json()["html"]


# --- Funnel performance -------------------------------------------------------------------------


@pytest.fixture
def two_funnels():
    """Checklist: 120 visits, 3 opt-ins, 2 confirmed. Webinar: 40 visits, 1 opt-in.

    Plus activity from before the default 30-day window, which must not count.
    """
    today = timezone.localdate()
    now = timezone.now()
    checklist = make_landing_page("Free checklist")
    webinar = make_landing_page("Webinar replay")
    PageVisitDay.objects.create(landing_page=checklist, day=today, visits=100)
    PageVisitDay.objects.create(landing_page=checklist, day=today - timedelta(days=3), visits=20)
    PageVisitDay.objects.create(landing_page=checklist, day=today - timedelta(days=45), visits=999)
    PageVisitDay.objects.create(landing_page=webinar, day=today - timedelta(days=1), visits=40)
    make_subscriber("a@example.com", page=checklist, confirmed=True)
    make_subscriber("b@example.com", page=checklist, confirmed=True)
    make_subscriber("c@example.com", page=checklist)
    make_subscriber("d@example.com", page=webinar, at=now - timedelta(days=1))
    make_subscriber("e@example.com", page=checklist, at=now - timedelta(days=45), confirmed=True)
    return checklist, webinar


def test_report_shows_each_pages_numbers_and_a_chart(creator_client, two_funnels):
    checklist, webinar = two_funnels

    response = creator_client.get(reverse("funnel_performance:index"))

    assert response.status_code == 200
    numbers = {
        row.page.pk: (row.visits, row.optins, row.confirmations) for row in response.context["rows"]
    }
    assert numbers == {checklist.pk: (120, 3, 2), webinar.pk: (40, 1, 0)}
    html = response.content.decode()
    assert "<svg" in html
    assert "<title id=" in html and "<desc id=" in html
    table = html[html.index("<table") :]
    assert re.search(
        r"Free checklist</a></th>\s*<td[^>]*>120</td>\s*<td[^>]*>3</td>\s*<td[^>]*>2\.5%</td>"
        r"\s*<td[^>]*>2</td>\s*<td[^>]*>66\.7%</td>",
        table,
    )
    assert re.search(
        r"Webinar replay</a></th>\s*<td[^>]*>40</td>\s*<td[^>]*>1</td>\s*<td[^>]*>2\.5%</td>"
        r"\s*<td[^>]*>0</td>\s*<td[^>]*>0\.0%</td>",
        table,
    )
    daily = response.context["daily_chart"]
    assert len(daily.bars) == 30
    assert "4 in all" in daily.desc


def test_report_period_can_be_chosen(creator_client, two_funnels):
    checklist, _webinar = two_funnels
    today = timezone.localdate()

    response = creator_client.get(
        reverse("funnel_performance:index"),
        {"since": (today - timedelta(days=60)).isoformat(), "until": today.isoformat()},
    )

    row = next(r for r in response.context["rows"] if r.page.pk == checklist.pk)
    assert (row.visits, row.optins, row.confirmations) == (1119, 4, 3)
    assert len(response.context["daily_chart"].bars) == 61


def test_report_rejects_a_reversed_period_and_falls_back_to_the_default(creator_client):
    today = timezone.localdate()

    response = creator_client.get(
        reverse("funnel_performance:index"),
        {"since": today.isoformat(), "until": (today - timedelta(days=5)).isoformat()},
    )

    assert response.status_code == 200
    assert "The start date is after the end date." in response.content.decode()
    assert response.context["since"] == today - timedelta(days=29)


def test_dashboard_shows_the_last_week_and_links_to_the_report(creator_client, two_funnels):
    response = creator_client.get(reverse("wagtailadmin_home"))

    html = response.content.decode()
    assert "Your funnels, last 7 days" in html
    assert reverse("funnel_performance:index") in html
    assert re.search(r"<dt>Visits</dt><dd>160</dd>", html)
