"""The demo course: loads on a fresh site, loads again without duplicating anything."""

import io

import pytest

from courses import demo
from courses.models import CourseCatalogPage, CoursePage, LessonDownload, LessonPage, ModulePage
from payments.models import Offer, Price, Product

pytestmark = pytest.mark.django_db


def test_demo_course_loads_once_and_again_without_duplicates(client, home, protected_storage):
    facts = demo.load(stdout=io.StringIO())
    again = demo.load(stdout=io.StringIO())

    assert facts == again
    course = CoursePage.objects.get()
    assert facts["course_url"] == course.url
    assert CourseCatalogPage.objects.count() == 1
    assert ModulePage.objects.child_of(course).count() == 2
    lessons = LessonPage.objects.descendant_of(course)
    assert lessons.count() == 4
    assert list(lessons.filter(is_free_preview=True).values_list("title", flat=True)) == [
        "Welcome: how this course works"
    ]
    assert ModulePage.objects.get(slug="build-and-launch").release_after_days == 7

    # what sells it
    assert course.product == Product.objects.get()
    assert course.offer == Offer.objects.get(is_published=True)
    price = Price.objects.get()
    assert (price.kind, price.amount, price.currency) == ("one_time", 14900, "eur")
    assert list(course.offer.products.all()) == [course.product]

    # a real worksheet, privately stored
    download = LessonDownload.objects.get()
    with protected_storage.open(download.file.name) as stored:
        pdf = stored.read()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 10_000
    assert download.filename == "worksheet-find-your-promise.pdf"

    # and a visitor sees it for sale
    html = client.get(facts["course_url"]).content.decode()
    assert "€149.00" in html
    assert "Watch the free preview" in html
