"""Lesson downloads: named by uuid, streamed stamped to whoever may see the lesson, and
refused to everyone else."""

import hashlib
import subprocess

import pytest
from django.core.files.base import ContentFile

from courses.models import LessonDownload
from media.models import DownloadDelivery
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


def _text_of(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "received.pdf"
    path.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout


def test_buyer_receives_the_file_stamped_with_their_email_and_recorded(
    client, buyer, download, tmp_path
):
    client.force_login(buyer)

    response = client.get(_url(download))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert response["Content-Disposition"] == "attachment; filename*=UTF-8''week-1-worksheet.pdf"
    received = b"".join(response.streaming_content)
    assert received != WORKSHEET
    assert "leila@example.com" in _text_of(received, tmp_path)
    delivery = DownloadDelivery.objects.get(user=buyer)
    assert delivery.sent_sha256 == hashlib.sha256(received).hexdigest()
    assert delivery.order_reference == ""  # granted by hand in this test, not by an order


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
    assert client.get(_url(download)).status_code == 200

    client.force_login(stranger)
    response = client.get(_url(download))

    assert response.status_code == 403
    assert list(DownloadDelivery.objects.values_list("user", flat=True)) == [buyer.pk]


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


def test_buyer_gets_the_stamped_file_from_a_private_bucket(
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

    # then the file is read from the bucket and streamed to them stamped
    assert response.status_code == 200
    received = b"".join(response.streaming_content)
    assert received.startswith(b"%PDF") and received != WORKSHEET
    assert b"s3@example.com" in received
    # and the object itself stays private
    unsigned = f"{s3_protected_storage.server.endpoint_url}/{s3_protected_storage.server.bucket}/protected/{download.file.name}"
    assert http_get(unsigned).status == 403
