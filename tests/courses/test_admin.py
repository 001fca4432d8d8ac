"""The creator's side in the Wagtail admin: a product for every course, uploads that
survive a draft, and the Students view."""

from datetime import date

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from wagtail.models import Page
from wagtail.test.utils.form_data import inline_formset, nested_form_data, rich_text, streamfield

from courses.models import CoursePage, LessonDownload, LessonPage
from courses.services import course_product_ensure, lesson_completion_set
from media.stamping.samples import sample_pdf
from payments.models import Product

from .conftest import course_tree_install

pytestmark = pytest.mark.django_db

# A real PDF: the lesson editor refuses one that cannot be stamped for buyers.
PROMISE_PDF = sample_pdf(1, seed=7)


@pytest.fixture
def creator(django_user_model):
    return django_user_model.objects.create_superuser(email="maya@example.com", password="-")


@pytest.fixture
def admin_client(client, creator):
    client.force_login(creator)
    return client


def _course_form(title: str, slug: str, **extra) -> dict:
    return nested_form_data(
        {
            "title": title,
            "slug": slug,
            "subtitle": "",
            "description": rich_text("<p>All about it.</p>"),
            "language": "",
            "product": "",
            "offer": "",
            **extra,
        }
    )


def test_a_course_created_in_the_admin_gets_a_product_of_its_own(admin_client, tree):
    response = admin_client.post(
        reverse("wagtailadmin_pages:add", args=("courses", "coursepage", tree.catalog.pk)),
        {**_course_form("Pricing Workshop", "pricing-workshop"), "action-publish": "publish"},
    )

    assert response.status_code == 302
    course = CoursePage.objects.get(slug="pricing-workshop")
    assert course.live
    assert course.product is not None
    assert (course.product.kind, course.product.title, course.product.slug) == (
        "course",
        "Pricing Workshop",
        "course-pricing-workshop",
    )
    # The latest revision carries it too: the editor's next publish keeps it.
    assert course.get_latest_revision().content["product"] == course.product.pk


def test_a_course_saved_as_a_draft_also_gets_its_product(admin_client, tree):
    admin_client.post(
        reverse("wagtailadmin_pages:add", args=("courses", "coursepage", tree.catalog.pk)),
        _course_form("Draft Course", "draft-course"),
    )

    course = CoursePage.objects.get(slug="draft-course")
    assert not course.live
    assert course.product_id is not None


def test_editing_a_course_with_the_product_field_emptied_keeps_its_product(admin_client, tree):
    product = tree.product

    response = admin_client.post(
        reverse("wagtailadmin_pages:edit", args=(tree.course.pk,)),
        {**_course_form(tree.course.title, tree.course.slug), "action-publish": "publish"},
    )

    assert response.status_code == 302
    assert CoursePage.objects.get(pk=tree.course.pk).product == product
    assert Product.objects.count() == 1


def test_product_ensure_is_idempotent_and_slugs_never_collide(home, tree):
    Product.objects.create(kind="course", slug="course-second", title="Someone else's")
    course = CoursePage(title="Second", slug="second")
    tree.catalog.add_child(instance=course)

    first = course_product_ensure(course=course)
    again = course_product_ensure(course=CoursePage.objects.get(pk=course.pk))

    assert first == again
    assert first.slug == "course-second-2"
    assert CoursePage.objects.get(pk=course.pk).product == first


def test_copying_a_course_gives_the_copy_its_own_product(admin_client, tree):
    response = admin_client.post(
        reverse("wagtailadmin_pages:copy", args=(tree.course.pk,)),
        {
            "new_title": "Launch, second edition",
            "new_slug": "launch-2",
            "new_parent_page": tree.catalog.pk,
            "copy_subpages": "on",
            "publish_copies": "on",
        },
    )

    assert response.status_code == 302
    copy = CoursePage.objects.get(slug="launch-2")
    assert copy.product is not None
    assert copy.product != tree.product
    assert LessonPage.objects.descendant_of(copy).count() == 4


def test_copying_a_lesson_leaves_its_downloads_behind(admin_client, home, protected_storage):
    tree = course_tree_install(home, with_download=True)

    response = admin_client.post(
        reverse("wagtailadmin_pages:copy", args=(tree.paid_lesson.pk,)),
        {
            "new_title": "Promise, again",
            "new_slug": "promise-again",
            "new_parent_page": tree.modules[0].pk,
        },
    )

    assert response.status_code == 302
    assert LessonPage.objects.get(slug="promise-again").downloads.count() == 0
    assert LessonDownload.objects.count() == 1


def test_a_download_uploaded_in_a_draft_is_stored_and_published_with_the_lesson(
    admin_client, home, protected_storage
):
    tree = course_tree_install(home)
    lesson = tree.paid_lesson
    lesson.save_revision().publish()
    form = nested_form_data(
        {
            "title": lesson.title,
            "slug": lesson.slug,
            "is_free_preview": "",
            "video": "",
            "body": streamfield([("text", rich_text("<p>Now with a worksheet.</p>"))]),
            "downloads": inline_formset(
                [
                    {
                        "title": "Promise worksheet",
                        "kind": "pdf",
                        "file": SimpleUploadedFile("promise.pdf", PROMISE_PDF),
                    }
                ]
            ),
        }
    )

    # when the creator saves a draft with a new file
    response = admin_client.post(reverse("wagtailadmin_pages:edit", args=(lesson.pk,)), form)

    # then the file is in the protected store, named as the draft names it
    assert response.status_code == 302
    draft = Page.objects.get(pk=lesson.pk).get_latest_revision()
    stored_name = draft.content["downloads"][0]["file"]
    assert stored_name.startswith("courses/downloads/")
    assert protected_storage.exists(stored_name)
    assert LessonDownload.objects.count() == 0  # not live until published

    # and publishing the draft makes it downloadable
    draft.publish()
    download = LessonDownload.objects.get()
    assert download.file.name == stored_name
    assert protected_storage.open(stored_name).read() == PROMISE_PDF


def test_students_view_lists_buyers_with_their_progress(admin_client, tree, buyer):
    lesson_completion_set(user=buyer, lesson=tree.free_lesson)

    response = admin_client.get(reverse("courses_students", args=(tree.course.pk,)))

    html = response.content.decode()
    assert response.status_code == 200
    assert "leila@example.com" in html
    assert "1/4 (25%)" in html


def test_students_view_is_offered_on_courses_only(admin_client, tree):
    course_html = admin_client.get(
        reverse("wagtailadmin_pages:edit", args=(tree.course.pk,))
    ).content.decode()
    module_html = admin_client.get(
        reverse("wagtailadmin_pages:edit", args=(tree.modules[0].pk,))
    ).content.decode()

    assert reverse("courses_students", args=(tree.course.pk,)) in course_html
    assert "/students/" not in module_html


def test_students_view_is_refused_to_people_who_cannot_edit_the_course(client, tree, staff):
    client.force_login(staff)

    response = client.get(reverse("courses_students", args=(tree.course.pk,)))

    assert response.status_code in (302, 403)
    assert "leila@example.com" not in response.content.decode()


def test_creator_previews_a_new_course_and_a_new_lesson(admin_client, tree):
    course_url = reverse(
        "wagtailadmin_pages:preview_on_add", args=("courses", "coursepage", tree.catalog.pk)
    )
    lesson_url = reverse(
        "wagtailadmin_pages:preview_on_add", args=("courses", "lessonpage", tree.modules[0].pk)
    )
    lesson_form = nested_form_data(
        {
            "title": "A lesson in the making",
            "slug": "in-the-making",
            "is_free_preview": "",
            "video": "",
            "body": streamfield([("text", rich_text("<p>Draft words.</p>"))]),
            "downloads": inline_formset([]),
        }
    )

    assert admin_client.post(course_url, _course_form("Brand new", "brand-new")).json()["is_valid"]
    course_html = admin_client.get(course_url).content.decode()
    assert admin_client.post(lesson_url, lesson_form).json()["is_valid"]
    lesson_html = admin_client.get(lesson_url).content.decode()

    assert "Brand new" in course_html
    assert "Draft words." in lesson_html


def test_creator_previews_an_existing_lesson_with_its_outline(admin_client, tree):
    url = reverse("wagtailadmin_pages:preview_on_edit", args=(tree.paid_lesson.pk,))
    form = nested_form_data(
        {
            "title": "Write your promise, revised",
            "slug": tree.paid_lesson.slug,
            "is_free_preview": "",
            "video": "",
            "body": streamfield([("text", rich_text("<p>Revised words.</p>"))]),
            "downloads": inline_formset([]),
        }
    )

    assert admin_client.post(url, form).json()["is_valid"]
    html = admin_client.get(url).content.decode()

    assert "Revised words." in html
    assert "Course content" in html
    assert "Lesson 2 of 4" in html


def test_every_course_page_type_opens_in_the_editor(admin_client, tree):
    pages = [tree.catalog, tree.course, tree.modules[1], tree.paid_lesson]
    for page in pages:
        response = admin_client.get(reverse("wagtailadmin_pages:edit", args=(page.pk,)))
        assert response.status_code == 200, page.title
    lesson_editor = admin_client.get(
        reverse("wagtailadmin_pages:edit", args=(tree.paid_lesson.pk,))
    ).content.decode()
    assert 'name="downloads-TOTAL_FORMS"' in lesson_editor
    assert 'name="video"' in lesson_editor
    module_editor = admin_client.get(
        reverse("wagtailadmin_pages:edit", args=(tree.modules[1].pk,))
    ).content.decode()
    assert 'name="release_after_days"' in module_editor


def test_a_module_cannot_drip_by_days_and_by_date_at_once(tree):
    module = tree.modules[1]
    module.release_on = date(2030, 1, 1)

    with pytest.raises(ValidationError, match="not both"):
        module.full_clean()
