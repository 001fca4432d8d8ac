"""The lesson editor and a download's file: one that cannot be stamped for buyers (damaged,
password-protected) is refused on upload with what to do; a good one is prepared in the
background by the worker, and the editor shows where each file stands."""

import io

import pikepdf
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from wagtail.models import Page
from wagtail.test.utils.form_data import inline_formset, nested_form_data, rich_text, streamfield

from courses.models import LessonDownload, LessonPage
from media.downloads import download_status
from media.stamping.prepare import forget_cached, prepared_get, prepared_peek
from media.stamping.samples import sample_pdf
from tests.harness.waiting import wait_until

from .conftest import course_tree_install

pytestmark = pytest.mark.django_db

DAMAGED = b"%PDF-1.7\n" + b"\x00" * 900
PREPARE_TASK = "media.stamping.tasks.download_prepare"


def _locked_pdf() -> bytes:
    locked = io.BytesIO()
    with pikepdf.open(io.BytesIO(sample_pdf(2))) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(owner="owner", user="reader"))
    return locked.getvalue()


@pytest.fixture
def creator(django_user_model):
    return django_user_model.objects.create_superuser(email="maya@example.com", password="-")


@pytest.fixture
def admin_client(client, creator):
    client.force_login(creator)
    return client


@pytest.fixture
def lesson(home, protected_storage) -> LessonPage:
    forget_cached()
    lesson = course_tree_install(home).paid_lesson
    lesson.save_revision().publish()
    yield lesson
    forget_cached()


def _edit_form(lesson: LessonPage, downloads: list[dict]) -> dict:
    return nested_form_data(
        {
            "title": lesson.title,
            "slug": lesson.slug,
            "is_free_preview": "",
            "video": "",
            "body": streamfield([("text", rich_text("<p>Now with a worksheet.</p>"))]),
            "downloads": inline_formset(downloads),
        }
    )


def _edit_url(lesson: LessonPage) -> str:
    return reverse("wagtailadmin_pages:edit", args=(lesson.pk,))


def _stored_files(storage) -> list[str]:
    found = []

    def walk(folder: str) -> None:
        try:
            dirs, files = storage.listdir(folder)
        except FileNotFoundError:
            return
        found.extend(f"{folder}/{name}" for name in files)
        for sub in dirs:
            walk(f"{folder}/{sub}")

    walk("courses")
    return found


# --- A file that cannot be stamped is refused ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_locked_pdf(), "This PDF is password-protected. Export it again without a password"),
        (DAMAGED, "This file cannot be read as a PDF"),
    ],
    ids=["password-protected", "damaged"],
)
def test_a_pdf_that_cannot_be_stamped_is_refused_in_the_lesson_editor_naming_the_file(
    admin_client,
    lesson,
    protected_storage,
    published,
    celery_broker,
    django_capture_on_commit_callbacks,
    data,
    reason,
):
    # given the creator adds a good worksheet and a bad one to the lesson, and publishes
    form = _edit_form(
        lesson,
        [
            {
                "title": "Good worksheet",
                "kind": "pdf",
                "file": SimpleUploadedFile("good.pdf", sample_pdf(2)),
            },
            {
                "title": "Week 1 worksheet",
                "kind": "pdf",
                "file": SimpleUploadedFile("week-1-worksheet.pdf", data),
            },
        ],
    )

    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(_edit_url(lesson), {**form, "action-publish": "publish"})

    # then the editor comes back with the error on that file's row, naming it and the fix
    assert response.status_code == 200
    html = response.content.decode()
    assert "The page could not be saved due to validation errors" in html
    assert "“week-1-worksheet.pdf” cannot be stamped for buyers." in html
    assert reason in html
    assert "good.pdf” cannot" not in html
    download_forms = response.context["form"].formsets["downloads"].forms
    assert not download_forms[0].errors
    assert "week-1-worksheet.pdf" in download_forms[1].errors["file"][0]
    # and nothing was published, stored or queued
    assert LessonDownload.objects.count() == 0
    assert Page.objects.get(pk=lesson.pk).get_latest_revision().content["downloads"] == []
    assert _stored_files(protected_storage) == []
    assert published == []


def test_a_pdf_that_cannot_be_stamped_is_accepted_when_the_site_allows_unstamped_files(
    admin_client, lesson, protected_storage, settings
):
    # given the site lets files that cannot be stamped go out as they are
    settings.DOWNLOAD_ALLOW_UNSTAMPED = True
    form = _edit_form(
        lesson,
        [{"title": "Locked", "kind": "pdf", "file": SimpleUploadedFile("l.pdf", _locked_pdf())}],
    )

    # when
    response = admin_client.post(_edit_url(lesson), {**form, "action-publish": "publish"})

    # then it is published, and the editor says buyers get it unstamped
    assert response.status_code == 302
    download = LessonDownload.objects.get()
    prepared_get(download.file.name)
    html = admin_client.get(_edit_url(lesson)).content.decode()
    assert "Cannot be stamped: This PDF is password-protected." in html
    assert "Buyers get it unstamped, as this site allows." in html


# --- A good file is prepared in the background ---------------------------------------------


def test_a_good_pdf_saved_in_the_editor_queues_its_preparation_once_committed(
    admin_client,
    lesson,
    protected_storage,
    published,
    celery_broker,
    django_capture_on_commit_callbacks,
):
    # given
    form = _edit_form(
        lesson,
        [{"title": "Worksheet", "kind": "pdf", "file": SimpleUploadedFile("w.pdf", sample_pdf(3))}],
    )

    # when the creator saves a draft with the file
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(_edit_url(lesson), form)

    # then the stored file's preparation is queued
    assert response.status_code == 302
    stored = Page.objects.get(pk=lesson.pk).get_latest_revision().content["downloads"][0]["file"]
    assert protected_storage.exists(stored)
    assert published == [(PREPARE_TASK, [stored])]


def test_the_worker_prepares_a_published_pdf_and_the_editor_shows_it_ready(
    transactional_db, celery_worker, server_protected_storage, home, client, creator
):
    # given the store the worker uses (server processes get a local folder from the harness)
    lesson = course_tree_install(home, slug="worker-prepares").paid_lesson
    lesson.save_revision().publish()
    client.force_login(creator)
    form = _edit_form(
        lesson,
        [{"title": "Worksheet", "kind": "pdf", "file": SimpleUploadedFile("w.pdf", sample_pdf(4))}],
    )

    # when the creator publishes the lesson with a new worksheet
    response = client.post(_edit_url(lesson), {**form, "action-publish": "publish"})
    assert response.status_code == 302

    # then the live worker prepares it for stamping, without any download asking for it
    name = LessonDownload.objects.get(lesson=lesson).file.name
    prepared = wait_until(
        lambda: prepared_peek(name, storage=server_protected_storage),
        timeout=60,
        what="the worker to prepare the worksheet",
        interval=0.2,
    )
    assert prepared.stampable
    assert prepared.problem == ""
    # and the editor shows the file ready
    html = client.get(_edit_url(lesson)).content.decode()
    assert "Ready: every download is stamped with its buyer" in html


# --- The status of files already stored -----------------------------------------------------


def test_the_editor_shows_a_stored_file_not_yet_prepared_and_queues_it(
    admin_client,
    home,
    protected_storage,
    published,
    celery_broker,
    django_capture_on_commit_callbacks,
):
    # given a lesson whose worksheet was stored by a script, never prepared
    forget_cached()
    download = course_tree_install(home, with_download=True).paid_lesson.downloads.get()
    assert download_status(download.file.name).state == "preparing"

    # when the creator opens the lesson editor
    with django_capture_on_commit_callbacks(execute=True):
        html = admin_client.get(_edit_url(download.lesson)).content.decode()

    # then they read that it is being prepared, and its preparation is queued
    assert "Being prepared for stamped downloads" in html
    assert published == [(PREPARE_TASK, [download.file.name])]


def test_the_editor_names_the_problem_of_a_stored_file_that_cannot_be_stamped(
    admin_client, home, protected_storage
):
    # given a lesson whose worksheet was replaced by a locked PDF outside the editor
    forget_cached()
    download = course_tree_install(home, with_download=True).paid_lesson.downloads.get()
    download.file.save("worksheet.pdf", ContentFile(_locked_pdf()), save=True)
    prepared_get(download.file.name)

    # when the creator opens the lesson editor
    html = admin_client.get(_edit_url(download.lesson)).content.decode()

    # then the file's row says why buyers cannot have it, and what to do
    assert "Cannot be stamped: This PDF is password-protected. Export it again" in html
    assert "Buyers cannot download it until you upload a copy that can be stamped." in html
    forget_cached()
