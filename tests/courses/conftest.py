"""Courses fixtures: a published course tree under a home page, what sells it, and people
(a buyer, a signed-in stranger, staff)."""

from dataclasses import dataclass

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from courses.models import CourseCatalogPage, CoursePage, LessonDownload, LessonPage, ModulePage
from media.stamping.samples import sample_pdf
from payments import services as payment_services
from payments.models import Offer, Price, Product
from tests.harness.wagtail_pages import home_page_install

# A real two-page PDF: downloads are stamped for their buyer, which needs pages.
WORKSHEET = sample_pdf(2)
PAID_LESSON_TEXT = "Write the one sentence your course promises."


@dataclass
class CourseTree:
    catalog: CourseCatalogPage
    course: CoursePage
    modules: list[ModulePage]
    lessons: list[LessonPage]
    product: Product
    offer: Offer

    @property
    def free_lesson(self) -> LessonPage:
        return self.lessons[0]

    @property
    def paid_lesson(self) -> LessonPage:
        return self.lessons[1]

    @property
    def dripped_lesson(self) -> LessonPage:
        return self.lessons[2]


def publish_child(parent, page):
    """Add ``page`` under ``parent``, live. No revision: serving needs none, and a course
    tree of ten pages is built for almost every test."""
    parent.add_child(instance=page)
    return page.__class__.objects.get(pk=page.pk)


@pytest.fixture
def protected_storage(settings, tmp_path):
    """Protected files in a folder of this test, served by our own signed-link view."""
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
def home(db):
    return home_page_install(title="Northwind Academy")


def make_offer(product: Product, *, slug: str, amount: int = 14900) -> Offer:
    offer = Offer.objects.create(slug=slug, title=product.title, is_published=True)
    offer.products.add(product)
    Price.objects.create(offer=offer, kind=Price.Kind.ONE_TIME, amount=amount, currency="eur")
    return offer


def course_tree_install(
    home,
    *,
    slug: str = "launch",
    title: str = "Launch Your First Course",
    language: str = "",
    drip_days: int | None = 7,
    lesson_titles: tuple[str, ...] = (
        "Welcome",
        "Write your promise",
        "Outline in an afternoon",
        "Launch week",
    ),
    with_download: bool = False,
) -> CourseTree:
    """Catalog → course → 2 modules × 2 lessons. The first lesson is a free preview; the
    second module opens ``drip_days`` after purchase."""
    catalog = CourseCatalogPage.objects.child_of(home).first() or publish_child(
        home, CourseCatalogPage(title="Courses", slug="courses")
    )
    product = Product.objects.create(kind=Product.Kind.COURSE, slug=f"course-{slug}", title=title)
    offer = make_offer(product, slug=slug)
    course = publish_child(
        catalog,
        CoursePage(
            title=title,
            slug=slug,
            subtitle="From idea to first students.",
            description="<p>Everything about launching.</p>",
            language=language,
            product=product,
            offer=offer,
        ),
    )
    modules = [
        publish_child(course, ModulePage(title="Find your promise", slug="promise")),
        publish_child(
            course, ModulePage(title="Build and launch", slug="build", release_after_days=drip_days)
        ),
    ]
    lessons = []
    for number, lesson_title in enumerate(lesson_titles):
        module = modules[0] if number < 2 else modules[1]
        lesson = LessonPage(
            title=lesson_title,
            slug=f"lesson-{number + 1}",
            is_free_preview=number == 0,
            body=[("text", f"<p>{PAID_LESSON_TEXT if number == 1 else lesson_title} body.</p>")],
        )
        if with_download and number == 1:
            download = LessonDownload(title="Week 1 worksheet", kind=LessonDownload.Kind.PDF)
            download.file.save("worksheet.pdf", ContentFile(WORKSHEET), save=False)
            lesson.downloads.add(download)
        lessons.append(publish_child(module, lesson))
    return CourseTree(
        catalog=catalog,
        course=course,
        modules=modules,
        lessons=lessons,
        product=product,
        offer=offer,
    )


@pytest.fixture
def tree(home) -> CourseTree:
    return course_tree_install(home)


@pytest.fixture
def buyer(django_user_model, tree):
    user = django_user_model.objects.create_user(email="leila@example.com", password="-")
    payment_services.entitlement_grant(user=user, product=tree.product)
    return user


@pytest.fixture
def stranger(django_user_model):
    return django_user_model.objects.create_user(email="someone@example.com", password="-")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        email="maya@example.com", password="-", is_staff=True
    )
