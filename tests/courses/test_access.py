"""Who sees a lesson: the tree's rules, lesson_access, and what each visitor is answered."""

import zoneinfo
from datetime import datetime, time, timedelta
from urllib.parse import quote

import pytest
from django.utils import timezone
from wagtail.models import Site

from core.models import BrandSettings, HomePage
from courses.models import CourseCatalogPage, CoursePage, LessonPage, ModulePage
from courses.selectors import Reason, lesson_access
from payments import services as payment_services
from payments.models import Entitlement

from .conftest import PAID_LESSON_TEXT, publish_child

pytestmark = pytest.mark.django_db


def _starts(buyer, tree, *, days_ago: float) -> datetime:
    starts_at = timezone.now() - timedelta(days=days_ago)
    Entitlement.objects.filter(user=buyer, product=tree.product).update(starts_at=starts_at)
    return starts_at


# --- The tree ---------------------------------------------------------------------------


def test_pages_only_nest_as_catalog_course_module_lesson(tree):
    home = HomePage.objects.get()
    module = tree.modules[0]

    assert CourseCatalogPage.can_create_at(home)
    assert CoursePage.can_create_at(tree.catalog)
    assert ModulePage.can_create_at(tree.course)
    assert LessonPage.can_create_at(module)

    assert not CoursePage.can_create_at(home)
    assert not ModulePage.can_create_at(tree.catalog)
    assert not LessonPage.can_create_at(tree.course)
    assert not LessonPage.can_create_at(tree.paid_lesson)
    assert not CourseCatalogPage.can_create_at(tree.course)
    assert LessonPage.allowed_subpage_models() == []


# --- Buyers, strangers, visitors, staff ---------------------------------------------------


def test_buyer_sees_a_paid_lesson_in_a_private_uncached_response(client, tree, buyer):
    client.force_login(buyer)

    response = client.get(tree.paid_lesson.url)

    assert response.status_code == 200
    assert PAID_LESSON_TEXT in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]
    assert lesson_access(buyer, tree.paid_lesson).reason == Reason.ENTITLED


def test_signed_in_non_buyer_gets_403_with_the_buy_message_and_button(client, tree, stranger):
    client.force_login(stranger)

    response = client.get(tree.paid_lesson.url)

    html = response.content.decode()
    assert response.status_code == 403
    assert "is for students of this course" in html
    assert "Buy the course to unlock this lesson" in html
    assert f'href="/pay/buy/{tree.offer.slug}/"' in html
    assert "€149.00" in html
    assert PAID_LESSON_TEXT not in html
    assert "no-store" in response["Cache-Control"]


def test_anonymous_visitor_is_sent_to_sign_in_and_back(client, tree):
    response = client.get(tree.paid_lesson.url)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={quote(tree.paid_lesson.url)}"
    assert "no-store" in response["Cache-Control"]


def test_staff_preview_every_lesson_without_buying_even_before_release(client, tree, staff):
    client.force_login(staff)

    for lesson in tree.lessons:
        response = client.get(lesson.url)
        assert response.status_code == 200, lesson.title
    assert "Staff preview" in client.get(tree.dripped_lesson.url).content.decode()
    assert lesson_access(staff, tree.dripped_lesson).reason == Reason.STAFF_PREVIEW


def test_free_preview_lesson_is_open_to_everyone(client, tree, stranger):
    assert client.get(tree.free_lesson.url).status_code == 200

    client.force_login(stranger)
    response = client.get(tree.free_lesson.url)

    assert response.status_code == 200
    assert "free preview lesson" in response.content.decode()
    assert lesson_access(None, tree.free_lesson).allowed


def test_a_course_without_a_product_opens_to_nobody_but_staff(client, home, stranger):
    catalog = publish_child(home, CourseCatalogPage(title="Courses", slug="courses"))
    course = publish_child(catalog, CoursePage(title="Unsold", slug="unsold"))
    module = publish_child(course, ModulePage(title="One", slug="one"))
    lesson = publish_child(module, LessonPage(title="Only lesson", slug="only"))

    client.force_login(stranger)
    response = client.get(lesson.url)

    assert response.status_code == 403
    assert "not on sale right now" in response.content.decode()


# --- Drip -------------------------------------------------------------------------------


def test_dripped_module_is_refused_on_day_one_with_its_opening_date(client, tree, buyer):
    starts_at = _starts(buyer, tree, days_ago=0.01)
    client.force_login(buyer)

    access = lesson_access(buyer, tree.dripped_lesson)
    response = client.get(tree.dripped_lesson.url)

    assert not access.allowed
    assert access.reason == Reason.NOT_RELEASED
    assert access.opens_at == starts_at + timedelta(days=7)
    html = response.content.decode()
    assert response.status_code == 403
    assert "This lesson opens on" in html
    assert f'datetime="{access.opens_at.isoformat()}"' in html
    assert "Outline in an afternoon body." not in html
    assert "no-store" in response["Cache-Control"]


def test_dripped_module_opens_on_day_eight(client, tree, buyer):
    _starts(buyer, tree, days_ago=7.01)
    client.force_login(buyer)

    response = client.get(tree.dripped_lesson.url)

    assert response.status_code == 200
    assert "Outline in an afternoon body." in response.content.decode()


def test_undripped_module_is_open_from_the_first_minute(tree, buyer):
    _starts(buyer, tree, days_ago=0)

    assert lesson_access(buyer, tree.paid_lesson).allowed


def test_fixed_release_date_opens_at_midnight_in_the_site_time_zone(tree, buyer):
    brand = BrandSettings.for_site(Site.objects.get(is_default_site=True))
    brand.default_time_zone = "Asia/Tehran"
    brand.save()
    module = tree.modules[1]
    release_on = timezone.localdate() + timedelta(days=3)
    module.release_after_days = None
    module.release_on = release_on
    module.save_revision().publish()

    access = lesson_access(buyer, LessonPage.objects.get(pk=tree.dripped_lesson.pk))

    assert access.reason == Reason.NOT_RELEASED
    assert access.opens_at == datetime.combine(
        release_on, time.min, tzinfo=zoneinfo.ZoneInfo("Asia/Tehran")
    )


def test_release_date_page_shows_the_date_in_the_site_time_zone(client, tree, buyer):
    brand = BrandSettings.for_site(Site.objects.get(is_default_site=True))
    brand.default_time_zone = "Europe/Helsinki"
    brand.save()
    _starts(buyer, tree, days_ago=1)
    client.force_login(buyer)

    html = client.get(tree.dripped_lesson.url).content.decode()

    assert "(Europe/Helsinki)" in html
    assert "data-local-time" in html


# --- Losing access -------------------------------------------------------------------------


def test_refunded_buyer_is_refused_from_that_moment(client, tree, buyer):
    client.force_login(buyer)
    assert client.get(tree.paid_lesson.url).status_code == 200

    payment_services.entitlement_revoke(user=buyer, product=tree.product, reason="refund")

    response = client.get(tree.paid_lesson.url)
    assert response.status_code == 403
    assert PAID_LESSON_TEXT not in response.content.decode()
    assert lesson_access(buyer, tree.paid_lesson).reason == Reason.NOT_ENTITLED


def test_ended_subscription_closes_the_course(tree, buyer):
    Entitlement.objects.filter(user=buyer).update(ends_at=timezone.now() - timedelta(minutes=1))

    assert not lesson_access(buyer, tree.paid_lesson).allowed


def test_inactive_staff_account_gets_no_preview(tree, staff):
    staff.is_active = False
    staff.save()

    assert not lesson_access(staff, tree.paid_lesson).allowed


def test_lesson_pages_answer_only_reads(client, tree, buyer):
    client.force_login(buyer)

    assert client.post(tree.paid_lesson.url).status_code == 405
