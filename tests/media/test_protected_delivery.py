"""Signed links to protected files kept on local disk (the demo and nginx deployments)."""

import time

import pytest
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from media.delivery import SALT, protected_url

pytestmark = pytest.mark.django_db

WORKBOOK = b"%PDF-1.7 week one workbook"


@pytest.fixture
def protected_storage(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    settings.PROTECTED_SERVE_METHOD = "django"
    return storages["protected"]


@pytest.fixture
def buyer(django_user_model):
    return django_user_model.objects.create_user(email="buyer@example.com", password="-")


@pytest.fixture
def workbook(protected_storage) -> str:
    return protected_storage.save("courses/binding/week-1.pdf", ContentFile(WORKBOOK))


def _token(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


class _SignerAnHourAgo(signing.TimestampSigner):
    def timestamp(self) -> str:
        return signing.b62_encode(int(time.time()) - 3600)


def test_signed_link_serves_the_file_as_a_private_attachment(client, buyer, workbook):
    # given
    client.force_login(buyer)
    url = protected_url(name=workbook, user_id=buyer.pk, filename="Week 1 – workbook.pdf")

    # when
    response = client.get(url)

    # then
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == WORKBOOK
    assert response["Content-Disposition"] == (
        "attachment; filename*=UTF-8''Week%201%20%E2%80%93%20workbook.pdf"
    )
    assert response["Cache-Control"] == "private, no-store"
    assert response["Content-Type"] == "application/pdf"


def test_link_with_a_tampered_token_is_refused(client, buyer, workbook):
    # given
    client.force_login(buyer)
    url = protected_url(name=workbook, user_id=buyer.pk)
    token = _token(url)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")

    # when
    response = client.get(url.replace(token, tampered))

    # then
    assert response.status_code == 403
    assert WORKBOOK not in response.content


def test_link_issued_longer_ago_than_its_lifetime_is_refused(client, buyer, workbook, settings):
    # given the same link as issued an hour ago, with a lifetime of five minutes
    settings.PROTECTED_URL_MAX_AGE = 300
    client.force_login(buyer)
    url = protected_url(name=workbook, user_id=buyer.pk)
    payload = signing.loads(_token(url), salt=SALT)
    old_token = _SignerAnHourAgo(salt=SALT).sign_object(payload, compress=True)

    # when
    response = client.get(url.replace(_token(url), old_token))

    # then
    assert response.status_code == 403
    assert b"expired" in response.content


def test_link_issued_for_one_user_is_refused_to_another(client, buyer, workbook, django_user_model):
    # given
    url = protected_url(name=workbook, user_id=buyer.pk)
    someone_else = django_user_model.objects.create_user(email="other@example.com", password="-")
    client.force_login(someone_else)

    # when
    response = client.get(url)

    # then
    assert response.status_code == 403
    assert WORKBOOK not in response.content


def test_behind_nginx_the_file_is_handed_over_with_x_accel_redirect(
    client, buyer, workbook, settings
):
    # given
    settings.PROTECTED_SERVE_METHOD = "nginx"
    client.force_login(buyer)
    url = protected_url(name=workbook, user_id=buyer.pk)

    # when
    response = client.get(url)

    # then
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == "/_protected/courses/binding/week-1.pdf"
    assert response.content == b""
    assert response["Content-Disposition"] == "attachment; filename*=UTF-8''week-1.pdf"
    assert response["Cache-Control"] == "private, no-store"
