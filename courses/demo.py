"""Demo course: a catalog under the home page and "Launch Your First Course" — two modules
of two lessons (the first a free preview, the second module dripped a week after
purchase), a worksheet PDF, and the product, offer and price that sell it."""

from pathlib import Path

from django.core.files.base import ContentFile
from django.db import transaction

from core.models import HomePage
from payments.models import Offer, Price, Product

from .models import CourseCatalogPage, CoursePage, LessonDownload, LessonPage, ModulePage

WORKSHEET = Path(__file__).parent / "demo_assets" / "launch-worksheet.pdf"
SLUG = "launch-your-first-course"


def _publish(parent, page):
    parent.add_child(instance=page)
    page.save_revision().publish()
    return page


def _catalog(home: HomePage) -> CourseCatalogPage:
    catalog = CourseCatalogPage.objects.child_of(home).first()
    if catalog is None:
        catalog = _publish(
            home,
            CourseCatalogPage(
                title="Courses",
                slug="courses",
                search_description="Self-paced courses for independent creators.",
                intro=(
                    "<p>Self-paced courses for independent creators. Watch the free preview "
                    "lessons first; buy when you are sure.</p>"
                ),
            ),
        )
    return catalog


def _selling() -> tuple[Product, Offer]:
    product, _ = Product.objects.get_or_create(
        slug=SLUG,
        defaults={
            "kind": Product.Kind.COURSE,
            "title": "Launch Your First Course",
            "description": "The self-paced course: from idea to first sales in four lessons.",
        },
    )
    offer, _ = Offer.objects.get_or_create(
        slug=SLUG,
        defaults={
            "title": "Launch Your First Course",
            "description": "Lifetime access to the course, its worksheets and every update.",
            "is_published": True,
        },
    )
    offer.products.add(product)
    if not offer.prices.exists():
        Price.objects.create(
            offer=offer, kind=Price.Kind.ONE_TIME, amount=14900, currency="eur", is_active=True
        )
    return product, offer


def _lesson(title, slug, *, free=False, body, downloads=()):
    lesson = LessonPage(
        title=title,
        slug=slug,
        is_free_preview=free,
        body=body,
        search_description=f"{title}: a lesson of Launch Your First Course.",
    )
    for sort_order, (download_title, filename, data) in enumerate(downloads):
        download = LessonDownload(title=download_title, kind=LessonDownload.Kind.PDF)
        download.sort_order = sort_order
        download.file.save(filename, ContentFile(data), save=False)
        lesson.downloads.add(download)
    return lesson


def _modules():
    worksheet = ("Worksheet: find your promise", "launch-worksheet.pdf", WORKSHEET.read_bytes())
    return [
        (
            ModulePage(
                title="Find your promise",
                slug="find-your-promise",
                intro="<p>Who the course is for, and the one result it promises.</p>",
                search_description="Who the course is for, and the one result it promises.",
            ),
            [
                _lesson(
                    "Welcome: how this course works",
                    "welcome",
                    free=True,
                    body=[
                        (
                            "text",
                            "<p>Welcome! Over four lessons you will go from an idea to a course "
                            "people can buy. Each lesson ends with one thing to do; do it before "
                            "you move on.</p>",
                        ),
                        (
                            "checklist",
                            {
                                "title": "What you need",
                                "items": [
                                    "An hour a week for four weeks",
                                    "A notebook or the worksheet from lesson 2",
                                    "One person you have helped before",
                                ],
                            },
                        ),
                        (
                            "callout",
                            {
                                "tone": "tip",
                                "title": "",
                                "text": "<p>Mark each lesson as complete when you have done "
                                "its task: your progress shows on the course page.</p>",
                            },
                        ),
                    ],
                ),
                _lesson(
                    "Write your course promise",
                    "write-your-promise",
                    body=[
                        ("heading", "One sentence that sells"),
                        (
                            "text",
                            "<p>A course sells when a specific person can picture a specific "
                            "result. Your promise names <b>who</b> it is for, <b>what</b> they "
                            "will be able to do, and <b>by when</b>.</p>",
                        ),
                        (
                            "quote",
                            {
                                "quote": "After six weeks you will have launched a course to "
                                "your first ten students.",
                                "attribution": "A promise that passes the test",
                            },
                        ),
                        (
                            "callout",
                            {
                                "tone": "warning",
                                "title": "Two courses in one",
                                "text": "<p>If your sentence has two “and”s, you have two "
                                "courses. Pick the one your buyer needs first.</p>",
                            },
                        ),
                        ("text", "<p>Download the worksheet below and fill in page 1.</p>"),
                    ],
                    downloads=[worksheet],
                ),
            ],
        ),
        (
            ModulePage(
                title="Build and launch",
                slug="build-and-launch",
                intro="<p>Outline the course in an afternoon, then open the cart.</p>",
                search_description="Outline the course in an afternoon, then open the cart.",
                release_after_days=7,
            ),
            [
                _lesson(
                    "Outline your modules in an afternoon",
                    "outline-in-an-afternoon",
                    body=[
                        (
                            "text",
                            "<p>Work backwards from the result: what is the last thing a "
                            "student does before they can say “I did it”? That is your final "
                            "lesson. Keep asking what comes just before.</p>",
                        ),
                        (
                            "checklist",
                            {
                                "title": "Your outline is ready when",
                                "items": [
                                    "Every module is named after a result, not a topic",
                                    "Each lesson ends with one task",
                                    "A beginner can do lesson 1 today",
                                ],
                            },
                        ),
                    ],
                ),
                _lesson(
                    "Launch week, day by day",
                    "launch-week",
                    body=[
                        (
                            "text",
                            "<p>Seven days before opening, publish the free lesson and test "
                            "checkout with a real card. Three days before, send the first "
                            "useful email. On launch day, email twice and answer every reply.</p>",
                        ),
                    ],
                ),
            ],
        ),
    ]


@transaction.atomic
def load(*, stdout) -> dict:
    home = HomePage.objects.first()
    if home is None:
        stdout.write("  no home page yet: the core demo creates it first")
        return {}
    catalog = _catalog(home)
    product, offer = _selling()
    course = CoursePage.objects.filter(slug=SLUG).first()
    if course is None:
        course = _publish(
            catalog,
            CoursePage(
                title="Launch Your First Course",
                slug=SLUG,
                subtitle="From an idea in your head to your first ten students, in four lessons.",
                search_description=(
                    "A self-paced course: from an idea in your head to your first ten students."
                ),
                description=(
                    "<p>You know your subject. This course is about the rest: choosing who "
                    "the course is for, promising one clear result, outlining it in an "
                    "afternoon and running a calm launch week.</p>"
                    "<h2>What you get</h2>"
                    "<ul><li>Four short lessons with one task each</li>"
                    "<li>A printable worksheet</li>"
                    "<li>The second module a week later, once you have done the first</li></ul>"
                ),
                product=product,
                offer=offer,
            ),
        )
        for module, lessons in _modules():
            _publish(course, module)
            for lesson in lessons:
                _publish(module, lesson)
    if home.call_to_action_page_id is None:
        home.call_to_action_label = "See the course"
        home.call_to_action_page = course
        home.save_revision().publish()
    stdout.write(f"  course: {course.url} (catalog {catalog.url})")
    return {"course_url": course.url, "catalog_url": catalog.url}
