"""Progress: the video position and "Mark as complete", stored once per learner and lesson,
only for those who may see the lesson, and only with a CSRF token."""

import json

import pytest
from django.test import Client

from courses.models import LessonProgress

pytestmark = pytest.mark.django_db


def _post_json(client, url, data):
    return client.post(
        url, data=json.dumps(data), content_type="application/json", HTTP_ACCEPT="application/json"
    )


def test_position_is_stored_and_saving_it_again_changes_nothing(client, tree, buyer):
    client.force_login(buyer)
    url = f"/learn/progress/{tree.paid_lesson.pk}/"

    first = _post_json(client, url, {"position": 42.7})
    second = _post_json(client, url, {"position": 42.7})

    assert first.status_code == second.status_code == 200
    assert second.json() == {"ok": True, "position": 42, "completed": False}
    row = LessonProgress.objects.get()
    assert (row.user, row.lesson_id, row.position_seconds) == (buyer, tree.paid_lesson.pk, 42)


def test_position_sent_as_a_form_beacon_is_stored(client, tree, buyer):
    client.force_login(buyer)

    response = client.post(f"/learn/progress/{tree.paid_lesson.pk}/", {"position": "95"})

    assert response.status_code == 200
    assert LessonProgress.objects.get().position_seconds == 95


@pytest.mark.parametrize("position", ["soon", -3, "nan", "inf", None, [1]])
def test_a_position_that_is_not_a_number_of_seconds_is_refused(client, tree, buyer, position):
    client.force_login(buyer)

    response = _post_json(client, f"/learn/progress/{tree.paid_lesson.pk}/", {"position": position})

    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert not LessonProgress.objects.exists()


def test_completing_twice_keeps_the_first_completion_time(client, tree, buyer):
    client.force_login(buyer)
    url = f"/learn/complete/{tree.paid_lesson.pk}/"

    first = _post_json(client, url, {})
    completed_at = LessonProgress.objects.get().completed_at
    second = _post_json(client, url, {})

    assert first.status_code == second.status_code == 200
    assert second.json()["completed"] is True
    assert second.json()["completed_at"] == completed_at.isoformat()
    assert LessonProgress.objects.count() == 1
    assert LessonProgress.objects.get().completed_at == completed_at


def test_saving_the_position_keeps_a_lesson_complete(client, tree, buyer):
    client.force_login(buyer)
    _post_json(client, f"/learn/complete/{tree.paid_lesson.pk}/", {})

    response = _post_json(client, f"/learn/progress/{tree.paid_lesson.pk}/", {"position": 12})

    assert response.json() == {"ok": True, "position": 12, "completed": True}


def test_completion_can_be_undone(client, tree, buyer):
    client.force_login(buyer)
    url = f"/learn/complete/{tree.paid_lesson.pk}/"
    _post_json(client, url, {})

    response = _post_json(client, url, {"completed": False})

    assert response.json()["completed"] is False
    assert LessonProgress.objects.get().completed_at is None


def test_complete_answer_carries_the_course_progress(client, tree, buyer):
    client.force_login(buyer)

    data = _post_json(client, f"/learn/complete/{tree.paid_lesson.pk}/", {}).json()

    assert data["course"] == {"completed": 1, "total": 4, "percent": 25}


def test_complete_form_without_javascript_returns_to_the_lesson(client, tree, buyer):
    client.force_login(buyer)
    lesson_url = tree.paid_lesson.url

    response = client.post(
        f"/learn/complete/{tree.paid_lesson.pk}/", {"completed": "1", "next": lesson_url}
    )

    assert response.status_code == 303
    assert response["Location"] == lesson_url
    page = client.get(lesson_url).content.decode()
    assert "Lesson marked as complete." in page
    assert "Mark as not complete" in page


def test_complete_form_never_redirects_off_site(client, tree, buyer):
    client.force_login(buyer)

    response = client.post(
        f"/learn/complete/{tree.paid_lesson.pk}/", {"next": "https://evil.example/"}
    )

    assert response["Location"] == tree.paid_lesson.url


def test_non_buyer_can_store_neither_position_nor_completion(client, tree, stranger):
    client.force_login(stranger)

    position = _post_json(client, f"/learn/progress/{tree.paid_lesson.pk}/", {"position": 30})
    complete = _post_json(client, f"/learn/complete/{tree.paid_lesson.pk}/", {})
    form = client.post(f"/learn/complete/{tree.paid_lesson.pk}/")

    assert position.status_code == complete.status_code == form.status_code == 403
    assert complete.json()["ok"] is False
    assert not LessonProgress.objects.exists()


def test_anonymous_visitor_stores_nothing_even_on_a_free_lesson(client, tree):
    response = _post_json(client, f"/learn/progress/{tree.free_lesson.pk}/", {"position": 30})
    form = client.post(f"/learn/complete/{tree.free_lesson.pk}/")

    assert response.status_code == 403
    assert form.status_code == 302
    assert form["Location"].startswith("/accounts/login/")
    assert not LessonProgress.objects.exists()


def test_progress_in_a_module_not_yet_released_is_refused(client, tree, buyer):
    client.force_login(buyer)

    response = _post_json(client, f"/learn/complete/{tree.dripped_lesson.pk}/", {})

    assert response.status_code == 403
    assert not LessonProgress.objects.exists()


def test_progress_for_a_page_that_is_not_a_live_lesson_is_not_found(client, tree, buyer):
    client.force_login(buyer)

    assert _post_json(client, f"/learn/complete/{tree.course.pk}/", {}).status_code == 404
    tree.paid_lesson.unpublish()
    assert _post_json(client, f"/learn/complete/{tree.paid_lesson.pk}/", {}).status_code == 404


def test_progress_endpoints_only_accept_posts(client, tree, buyer):
    client.force_login(buyer)

    assert client.get(f"/learn/progress/{tree.paid_lesson.pk}/").status_code == 405
    assert client.get(f"/learn/complete/{tree.paid_lesson.pk}/").status_code == 405


def test_progress_posts_without_the_csrf_token_are_refused(tree, buyer):
    client = Client(enforce_csrf_checks=True)
    client.force_login(buyer)

    position = _post_json(client, f"/learn/progress/{tree.paid_lesson.pk}/", {"position": 5})
    complete = client.post(f"/learn/complete/{tree.paid_lesson.pk}/", {"completed": "1"})

    assert position.status_code == complete.status_code == 403
    assert not LessonProgress.objects.exists()


def test_progress_posts_with_the_pages_csrf_token_are_accepted(tree, buyer):
    client = Client(enforce_csrf_checks=True)
    client.force_login(buyer)
    client.get(tree.paid_lesson.url)  # sets the CSRF cookie, as a browser's visit does
    token = client.cookies["csrftoken"].value

    position = client.post(
        f"/learn/progress/{tree.paid_lesson.pk}/",
        data=json.dumps({"position": 5}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    complete = client.post(
        f"/learn/complete/{tree.paid_lesson.pk}/",
        {"completed": "1", "csrfmiddlewaretoken": token},
    )

    assert position.status_code == 200
    assert complete.status_code == 303
    assert LessonProgress.objects.get().completed_at is not None


def test_an_oversized_progress_body_is_refused(client, tree, buyer):
    client.force_login(buyer)

    response = client.post(
        f"/learn/progress/{tree.paid_lesson.pk}/",
        data=json.dumps({"position": 1, "padding": "x" * 10_000}),
        content_type="application/json",
    )

    assert response.status_code == 400
    assert not LessonProgress.objects.exists()
