"""Demo course: a catalog under the home page and "Launch Your First Course" — two modules
of two lessons (the first a free preview, the second module dripped a week after
purchase), a worksheet PDF, and the product, offer and price that sell it.

The free preview lesson has a short video, made here with ffmpeg (a test card, a tone and
the lesson's title: no video file is kept in the repository) and queued for the demo's
Celery worker to transcode, so the admin shows its progress. Without ffmpeg the lesson
gets a video marked as failed, with the reason, and the next load makes it for real.
The worksheet is prepared for per-buyer stamping here, so the first download is quick.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

from django.core.files import File
from django.core.files.base import ContentFile
from django.db import transaction

from core.models import HomePage
from media import services as media_services
from media.downloads import source_problem
from media.exceptions import DeliveryError
from media.models import Video
from payments.models import Offer, Price, Product

from .models import CourseCatalogPage, CoursePage, LessonDownload, LessonPage, ModulePage

WORKSHEET = Path(__file__).parent / "demo_assets" / "launch-worksheet.pdf"
SLUG = "launch-your-first-course"
VIDEO_LESSON_SLUG = "welcome"
FFMPEG = "ffmpeg"
VIDEO_SECONDS = 24
VIDEO_SIZE = "1280x720"
FFMPEG_MISSING = (
    "ffmpeg is not installed on this machine, so the demo could not make this video. "
    "Install it (Debian and Ubuntu: apt-get install ffmpeg) and run make run again."
)


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
    _lesson_video(course, stdout=stdout)
    _downloads_prepare(course, stdout=stdout)
    if home.call_to_action_page_id is None:
        home.call_to_action_label = "See the course"
        home.call_to_action_page = course
        home.save_revision().publish()
    stdout.write(f"  course: {course.url} (catalog {catalog.url})")
    return {"course_url": course.url, "catalog_url": catalog.url}


# --- The lesson video -------------------------------------------------------------------


class VideoNotMade(Exception):
    """The demo video could not be generated; the message says why, for the creator."""


class FfmpegMissing(VideoNotMade):
    pass


def _ffmpeg(arguments: list[str], *, cwd: Path) -> None:
    try:
        subprocess.run(  # noqa: S603 - a fixed program and our own arguments
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *arguments],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
    except FileNotFoundError as exc:
        raise FfmpegMissing(FFMPEG_MISSING) from exc
    except subprocess.CalledProcessError as exc:
        lines = [line for line in exc.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {exc.returncode}"
        raise VideoNotMade(f"ffmpeg could not make the demo video: {detail}") from exc
    except subprocess.TimeoutExpired as exc:
        raise VideoNotMade("ffmpeg took too long to make the demo video.") from exc


def video_source_make(title: str, folder: Path, *, with_title: bool = True) -> Path:
    """A short 720p MP4 in `folder`: a moving test card, `title` drawn on it, and a tone.

    The title comes from a file with expansion off, so nothing in it is ffmpeg syntax.
    """
    if shutil.which(FFMPEG) is None:
        raise FfmpegMissing(FFMPEG_MISSING)
    (folder / "title.txt").write_text(title, encoding="utf-8")
    inputs = [
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={VIDEO_SIZE}:rate=30:duration={VIDEO_SECONDS}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=48000:duration={VIDEO_SECONDS}",
    ]
    encode = [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "30",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-shortest",
        "-movflags",
        "+faststart",
        "welcome.mp4",
    ]
    title_card = (
        "drawtext=textfile=title.txt:expansion=none:fontsize=56:fontcolor=white"
        ":box=1:boxcolor=black@0.6:boxborderw=24:x=(w-text_w)/2:y=h*0.72"
    )
    _ffmpeg([*inputs, *(["-vf", title_card] if with_title else []), *encode], cwd=folder)
    return folder / "welcome.mp4"


def _video_source(title: str, folder: Path) -> Path:
    try:
        return video_source_make(title, folder)
    except FfmpegMissing:
        raise
    except VideoNotMade:
        # drawtext needs a font; a machine without one gets the video without the title.
        return video_source_make(title, folder, with_title=False)


def _lesson_video(course: CoursePage, *, stdout) -> None:
    """Give the free preview lesson its video, once; make it for real once ffmpeg is there."""
    lesson = LessonPage.objects.descendant_of(course).filter(slug=VIDEO_LESSON_SLUG).first()
    if lesson is None:
        return
    video = lesson.video
    if video is not None and (video.source or video.status != Video.Status.FAILED):
        # It has its video: waiting, processing, ready, or failed on its own file.
        stdout.write(f"  video: {video.get_status_display().lower()}")
        return
    with tempfile.TemporaryDirectory(prefix="lodestone-demo-video-") as folder:
        try:
            path = _video_source(lesson.title, Path(folder))
        except VideoNotMade as exc:
            if video is None:
                video = Video.objects.create(
                    title=lesson.title, status=Video.Status.FAILED, error=str(exc)
                )
                _attach(lesson, video)
            stdout.write(f"  video: not made. {exc}")
            return
        if video is None:
            video = Video(title=lesson.title)
        with path.open("rb") as handle:
            video.source.save("welcome.mp4", File(handle), save=False)
        video.save()
    if lesson.video_id != video.pk:
        _attach(lesson, video)
    # Queued when this load commits; the demo's worker transcodes it when it starts.
    media_services.video_upload_received(video=video)
    stdout.write(
        f"  video: {VIDEO_SECONDS} s for “{lesson.title}”, queued for transcoding "
        "(progress in the admin under Snippets → Videos)"
    )


def _attach(lesson: LessonPage, video: Video) -> None:
    lesson.video = video
    lesson.save_revision().publish()


# --- Downloads ----------------------------------------------------------------------------


def _downloads_prepare(course: CoursePage, *, stdout) -> None:
    """Prepare the course's files for stamped delivery now rather than on the first
    download; a file that cannot be stamped is reported (and refused to buyers)."""
    lessons = LessonPage.objects.descendant_of(course)
    for download in LessonDownload.objects.filter(lesson__in=lessons).order_by("pk"):
        try:
            problem = source_problem(download.file.name)
        except DeliveryError as exc:
            problem = str(exc)
        if problem:
            stdout.write(f"  download “{download.title}” cannot be stamped: {problem}")
        else:
            stdout.write(f"  download “{download.title}”: ready, stamped for each buyer")
