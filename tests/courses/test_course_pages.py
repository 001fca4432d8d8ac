"""What the catalog, course, module and lesson pages show each visitor."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from courses.models import CoursePage, LessonPage, LessonProgress
from courses.selectors import course_outline
from courses.services import lesson_completion_set
from media.access import can_view_video
from media.models import Video
from payments.models import Entitlement
from payments.services import entitlement_grant

from .conftest import course_tree_install, publish_child

pytestmark = pytest.mark.django_db


def _complete(buyer, *lessons):
    for lesson in lessons:
        lesson_completion_set(user=buyer, lesson=lesson)


def _progress_value(html: str) -> str:
    return re.search(r'<progress class="course-progress__bar"[^>]*value="(\d+)"', html).group(1)


# --- Course page --------------------------------------------------------------------------


def test_course_page_shows_the_buyers_progress_as_percent_of_lessons(client, tree, buyer):
    Entitlement.objects.filter(user=buyer).update(starts_at=timezone.now() - timedelta(days=8))
    _complete(buyer, tree.lessons[0], tree.lessons[1], tree.lessons[3])
    client.force_login(buyer)

    response = client.get(tree.course.url)

    html = response.content.decode()
    assert response.status_code == 200
    assert _progress_value(html) == "75"
    assert "<span data-progress-done>3</span> of 4 lessons completed" in html
    assert html.count('class="outline-lesson is-complete"') == 3
    assert "private" in response["Cache-Control"]


def test_progress_percent_rounds_and_ignores_unpublished_lessons(tree, buyer):
    _complete(buyer, tree.lessons[0])
    extra = publish_child(tree.modules[0], LessonPage(title="Bonus", slug="bonus"))
    assert course_outline(course=tree.course, user=buyer).percent == 20  # 1 of 5

    extra.unpublish()

    outline = course_outline(course=tree.course, user=buyer)
    assert (outline.completed, outline.total, outline.percent) == (1, 4, 25)


def test_another_buyers_completions_do_not_count(tree, buyer, django_user_model):
    other = django_user_model.objects.create_user(email="other@example.com")
    entitlement_grant(user=other, product=tree.product)
    _complete(other, *tree.lessons[:2])

    assert course_outline(course=tree.course, user=buyer).percent == 0


def test_buyer_is_offered_to_continue_where_they_left_off(client, tree, buyer):
    _complete(buyer, tree.lessons[0])
    client.force_login(buyer)

    html = client.get(tree.course.url).content.decode()

    assert "Continue" in html
    assert f'href="{tree.paid_lesson.url}"' in html
    assert "Buy the course" not in html


def test_visitor_sees_price_buy_button_and_free_preview_but_no_progress(client, tree):
    html = client.get(tree.course.url).content.decode()

    assert "€149.00" in html
    assert f'href="/pay/buy/{tree.offer.slug}/"' in html
    assert "Watch the free preview" in html
    assert f'href="{tree.free_lesson.url}"' in html
    assert "<progress" not in html
    # Paid lessons are listed but not linked, with a lock for screen readers too.
    assert f'href="{tree.paid_lesson.url}"' not in html
    assert "Locked:" in html
    assert "Opens 7 days after you join" in html


def test_buyer_on_day_one_sees_when_the_dripped_module_opens(client, tree, buyer):
    client.force_login(buyer)

    html = client.get(tree.course.url).content.decode()

    assert "release-note--waiting" in html
    assert "data-local-time" in html
    assert f'href="{tree.dripped_lesson.url}"' not in html


def test_unpublished_offer_means_no_buy_button(client, tree):
    tree.offer.is_published = False
    tree.offer.save()

    html = client.get(tree.course.url).content.decode()

    assert "/pay/buy/" not in html
    assert "not on sale right now" in html


def test_module_page_lists_its_lessons_with_the_buyers_ticks(client, tree, buyer):
    _complete(buyer, tree.lessons[0])
    client.force_login(buyer)

    html = client.get(tree.modules[0].url).content.decode()

    assert 'class="outline-lesson is-complete"' in html
    assert "Write your promise" in html
    assert "Outline in an afternoon" not in html


# --- Lesson page --------------------------------------------------------------------------


def test_lesson_page_has_mark_complete_and_previous_and_next_lessons(client, tree, buyer):
    client.force_login(buyer)

    html = client.get(tree.paid_lesson.url).content.decode()

    assert f'action="/learn/complete/{tree.paid_lesson.pk}/"' in html
    assert "Mark as complete" in html
    assert f'href="{tree.free_lesson.url}" rel="prev"' in html
    # The next lesson is in the module that opens in a week: named, not linked.
    assert f'href="{tree.dripped_lesson.url}"' not in html
    assert "Lesson 2 of 4" in html


def test_last_lesson_leads_back_to_the_course(client, tree, staff):
    client.force_login(staff)

    html = client.get(tree.lessons[-1].url).content.decode()

    assert f'href="{tree.lessons[-2].url}" rel="prev"' in html
    assert "Back to the course" in html


def test_completed_lesson_offers_to_undo(client, tree, buyer):
    _complete(buyer, tree.paid_lesson)
    client.force_login(buyer)

    html = client.get(tree.paid_lesson.url).content.decode()

    assert "You completed this lesson." in html
    assert 'name="completed" value="0"' in html


def test_anonymous_reader_of_a_free_lesson_is_asked_to_sign_in_to_track_progress(client, tree):
    html = client.get(tree.free_lesson.url).content.decode()

    assert "to keep track of your progress" in html
    assert "/learn/complete/" not in html
    assert "Buy the course" in html


def test_a_buyer_gets_the_player_resuming_where_they_left_off(
    client, tree, buyer, protected_storage
):
    video = Video.objects.create(
        title="Welcome video", source="videos/sources/w.mp4", status=Video.Status.READY
    )
    LessonPage.objects.filter(pk=tree.paid_lesson.pk).update(video=video)
    client.force_login(buyer)
    client.post(f"/learn/progress/{tree.paid_lesson.pk}/", {"position": "42"})

    html = client.get(tree.paid_lesson.url).content.decode()

    assert f'data-video-src="/protected/video/{video.uid}/master.m3u8"' in html
    assert f'data-lesson-progress="/learn/progress/{tree.paid_lesson.pk}/"' in html
    assert 'data-position="42' in html


def test_a_video_still_processing_shows_its_progress_instead_of_a_player(
    client, tree, buyer, protected_storage
):
    video = Video.objects.create(
        title="Welcome video",
        source="videos/sources/w.mp4",
        status=Video.Status.PROCESSING,
        progress=40,
    )
    LessonPage.objects.filter(pk=tree.paid_lesson.pk).update(video=video)
    client.force_login(buyer)

    html = client.get(tree.paid_lesson.url).content.decode()

    assert 'data-status="processing"' in html
    assert 'value="40"' in html


def test_a_lesson_video_plays_for_whoever_may_see_the_lesson(
    tree, buyer, stranger, protected_storage
):
    paid_video = Video.objects.create(title="Paid", source="videos/sources/paid.mp4")
    free_video = Video.objects.create(title="Free", source="videos/sources/free.mp4")
    stray_video = Video.objects.create(title="In no lesson", source="videos/sources/stray.mp4")
    LessonPage.objects.filter(pk=tree.paid_lesson.pk).update(video=paid_video)
    LessonPage.objects.filter(pk=tree.free_lesson.pk).update(video=free_video)

    assert can_view_video(buyer, paid_video)
    assert not can_view_video(stranger, paid_video)
    assert not can_view_video(AnonymousUser(), paid_video)
    assert can_view_video(AnonymousUser(), free_video)
    assert not can_view_video(buyer, stray_video)


# --- Catalog ------------------------------------------------------------------------------


def test_catalog_lists_live_courses_with_their_price(client, home, buyer, tree):
    second = course_tree_install(home, slug="pricing", title="Pricing Workshop")
    draft = CoursePage.objects.get(pk=second.course.pk)
    CoursePage.objects.filter(pk=draft.pk).update(subtitle="Set a price you can defend.")
    hidden = publish_child(tree.catalog, CoursePage(title="Secret draft course", slug="draft"))
    hidden.unpublish()
    client.force_login(buyer)

    html = client.get(tree.catalog.url).content.decode()

    assert "Launch Your First Course" in html
    assert "Pricing Workshop" in html
    assert "Set a price you can defend." in html
    assert "Secret draft course" not in html
    assert "In your library" in html  # the buyer's course
    assert "€149.00" in html  # the other one's price
    assert "4 lessons" in html


# --- Right to left ------------------------------------------------------------------------


PERSIAN_TITLE = "دوره‌ی اول خود را راه‌اندازی کنید"
PERSIAN_LESSON = "قول دوره‌تان را بنویسید"


@pytest.fixture
def persian_tree(home):
    return course_tree_install(
        home,
        slug="fa-course",
        title=PERSIAN_TITLE,
        language="fa",
        lesson_titles=("خوش آمدید", PERSIAN_LESSON, "طرح کلی", "هفته‌ی راه‌اندازی"),
    )


def test_persian_course_renders_right_to_left_whatever_the_visitors_language(client, persian_tree):
    response = client.get(persian_tree.course.url, HTTP_ACCEPT_LANGUAGE="en")

    html = response.content.decode()
    assert '<html lang="fa" dir="rtl">' in html
    assert f'<h1 class="course-hero__title" dir="auto">{PERSIAN_TITLE}</h1>' in html
    assert f'<span class="outline-lesson__title" dir="auto">{PERSIAN_LESSON}</span>' in html
    assert "محتوای دوره" in html  # "Course content", from the courses app's own catalog


def test_persian_lesson_renders_right_to_left_for_its_buyer(
    client, persian_tree, django_user_model
):
    reader = django_user_model.objects.create_user(email="reza@example.com")
    entitlement_grant(user=reader, product=persian_tree.product)
    client.force_login(reader)

    html = client.get(persian_tree.paid_lesson.url).content.decode()

    assert '<html lang="fa" dir="rtl">' in html
    assert f'<h1 class="lesson__title" id="lesson-title" dir="auto">{PERSIAN_LESSON}</h1>' in html


def test_course_without_a_language_follows_the_visitor(client, tree):
    html = client.get(tree.course.url, HTTP_ACCEPT_LANGUAGE="fa").content.decode()

    assert '<html lang="fa" dir="rtl">' in html
    assert 'dir="auto"' in html


def test_progress_rows_follow_their_user_and_lesson(tree, buyer):
    _complete(buyer, tree.paid_lesson)

    buyer.delete()

    assert not LessonProgress.objects.exists()
