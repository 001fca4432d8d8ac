"""A lead magnet's file goes out stamped like a lesson download: the admin refuses one that
cannot be stamped, queues the preparation of a good one and shows its status."""

import io

import pikepdf
import pytest
from django.core.files.storage import storages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from funnels.models import LeadMagnet
from media.downloads import upload_problem
from media.stamping.prepare import forget_cached, prepared_get
from media.stamping.samples import sample_pdf

pytestmark = pytest.mark.django_db

PREPARE_TASK = "media.stamping.tasks.download_prepare"


def _locked_pdf() -> bytes:
    locked = io.BytesIO()
    with pikepdf.open(io.BytesIO(sample_pdf(1))) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(owner="owner", user="reader"))
    return locked.getvalue()


@pytest.fixture
def protected(settings, tmp_path, monkeypatch):
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    # LeadMagnet.file resolved its storage at import; point it at this test's folder.
    monkeypatch.setattr(LeadMagnet._meta.get_field("file"), "storage", storages["protected"])
    forget_cached()
    yield storages["protected"]
    forget_cached()


@pytest.fixture
def creator_client(client, django_user_model):
    client.force_login(
        django_user_model.objects.create_superuser(email="creator@example.com", password="-")
    )
    return client


def _magnet_form(upload) -> dict:
    return {
        "title": "Launch Checklist",
        "file": upload,
        "download_filename": "launch-checklist.pdf",
        "delivery_subject": "Here is your download: {title}",
        "delivery_body": "Hi {first_name}, {download_url}",
    }


def test_a_password_protected_lead_magnet_is_refused_with_what_to_do(
    creator_client, protected, published, celery_broker, django_capture_on_commit_callbacks
):
    # when the creator uploads a password-protected PDF as a lead magnet
    with django_capture_on_commit_callbacks(execute=True):
        response = creator_client.post(
            reverse("wagtailsnippets_funnels_leadmagnet:add"),
            _magnet_form(SimpleUploadedFile("checklist.pdf", _locked_pdf())),
        )

    # then the form comes back naming the file and the fix; nothing is kept or queued
    assert response.status_code == 200
    errors = response.context["form"].errors["file"]
    assert errors[0].startswith("“checklist.pdf” cannot be stamped for buyers.")
    assert "Export it again without a password" in errors[0]
    assert not LeadMagnet.objects.exists()
    assert published == []


def test_a_good_lead_magnet_is_queued_for_preparation_and_shows_its_status(
    creator_client, protected, published, celery_broker, django_capture_on_commit_callbacks
):
    # when the creator uploads a good PDF
    with django_capture_on_commit_callbacks(execute=True):
        response = creator_client.post(
            reverse("wagtailsnippets_funnels_leadmagnet:add"),
            _magnet_form(SimpleUploadedFile("checklist.pdf", sample_pdf(2))),
        )

    # then it is stored and its preparation queued
    assert response.status_code == 302
    magnet = LeadMagnet.objects.get()
    assert published == [(PREPARE_TASK, [magnet.file.name])]

    # and once prepared, its edit form says it is ready
    prepared_get(magnet.file.name)
    html = creator_client.get(
        reverse("wagtailsnippets_funnels_leadmagnet:edit", args=[magnet.pk])
    ).content.decode()
    assert "Ready: every download is stamped with its buyer" in html


def test_upload_problem_passes_files_that_carry_no_stamp_and_names_a_damaged_zip():
    # an audio file is sent as it is: nothing to check
    assert upload_problem(SimpleUploadedFile("talk.mp3", b"ID3" + bytes(200))) == ""
    # a ZIP whose central directory is missing cannot carry the buyer's licence
    problem = upload_problem(SimpleUploadedFile("pack.zip", b"PK\x03\x04" + bytes(300)))
    assert "not a valid ZIP archive" in problem
