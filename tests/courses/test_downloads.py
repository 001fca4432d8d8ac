"""Lesson downloads: named by uuid, handed out by short-lived links to whoever may see the
lesson, and refused to everyone else."""

import pytest
from django.core.files.base import ContentFile

from courses.models import LessonDownload
from payments import services as payment_services
from tests.harness.web import http_get

from .conftest import WORKSHEET, course_tree_install

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree(home, protected_storage):
    return course_tree_install(home, with_download=True)


@pytest.fixture
def download(tree) -> LessonDownload:
    return tree.paid_lesson.downloads.get()


def _url(download: LessonDownload) -> str:
    return f"/learn/download/{download.uuid}/"


def test_buyer_is_redirected_to_a_protected_link_that_serves_the_file(client, buyer, download):
    client.force_login(buyer)

    response = client.get(_url(download))

    assert response.status_code == 302
    assert response["Location"].startswith("/protected/")
    assert "no-store" in response["Cache-Control"]
    served = client.get(response["Location"])
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == WORKSHEET
    assert served["Content-Disposition"] == "attachment; filename*=UTF-8''week-1-worksheet.pdf"


def test_the_lesson_page_links_its_downloads_by_uuid(client, buyer, tree, download):
    client.force_login(buyer)

    html = client.get(tree.paid_lesson.url).content.decode()

    assert f'href="{_url(download)}"' in html
    assert f"/learn/download/{download.pk}/" not in html
    assert "Week 1 worksheet" in html


def test_another_signed_in_user_is_refused_the_same_url(client, stranger, download):
    client.force_login(stranger)

    response = client.get(_url(download))

    assert response.status_code == 403
    assert "Location" not in response
    assert "Buy the course" in response.content.decode()


def test_a_buyers_link_does_not_work_for_another_user(client, buyer, stranger, download):
    client.force_login(buyer)
    protected_link = client.get(_url(download))["Location"]

    client.force_login(stranger)
    response = client.get(protected_link)

    assert response.status_code == 403


def test_anonymous_visitor_is_sent_to_sign_in_not_to_the_file(client, download):
    response = client.get(_url(download))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/learn/download/")


def test_download_in_a_module_not_yet_released_is_refused(client, buyer, tree, protected_storage):
    lesson = tree.dripped_lesson
    row = LessonDownload(lesson=lesson, title="Launch plan", kind=LessonDownload.Kind.PDF)
    row.file.save("plan.pdf", ContentFile(b"%PDF-1.7 plan"), save=False)
    row.save()
    client.force_login(buyer)

    response = client.get(_url(row))

    assert response.status_code == 403
    assert "opens with its lesson" in response.content.decode()


def test_refunded_buyer_can_no_longer_download(client, buyer, tree, download):
    payment_services.entitlement_revoke(user=buyer, product=tree.product, reason="refund")
    client.force_login(buyer)

    assert client.get(_url(download)).status_code == 403


def test_unknown_uuid_and_integer_ids_are_not_found(client, buyer, download):
    client.force_login(buyer)

    assert client.get("/learn/download/7b0c3c8e-2f0a-4d43-9a55-1f4b0d3a9c11/").status_code == 404
    assert client.get(f"/learn/download/{download.pk}/").status_code == 404


def test_download_of_an_unpublished_lesson_is_not_found(client, buyer, tree, download):
    tree.paid_lesson.unpublish()
    client.force_login(buyer)

    assert client.get(_url(download)).status_code == 404


def test_buyer_gets_a_presigned_s3_link_that_serves_the_file(
    client, home, s3_protected_storage, django_user_model
):
    # given a course whose worksheet is stored in a private bucket
    tree = course_tree_install(home, slug="s3-course", with_download=True)
    download = tree.paid_lesson.downloads.get()
    buyer = django_user_model.objects.create_user(email="s3@example.com", password="-")
    payment_services.entitlement_grant(user=buyer, product=tree.product)
    client.force_login(buyer)

    # when the buyer follows the download link
    response = client.get(_url(download))

    # then they are sent to a signed bucket URL that serves exactly that file
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(s3_protected_storage.server.endpoint_url)
    assert "X-Amz-Signature=" in location
    served = http_get(location)
    assert served.status == 200
    assert served.body == WORKSHEET
    # and the unsigned object URL is refused
    assert http_get(location.split("?", 1)[0]).status == 403
