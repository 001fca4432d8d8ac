"""What the browser tests share: the launch world (a course with a playable lesson, a
landing page whose opt-in starts a drip sequence selling it, a free webinar), and small
helpers for a visitor's browser (the form's bot check, signing in, links in mail).

Everything is built through the models and services, on the committed test database the
gunicorn and Celery processes read (the tests using it are transactional).
"""

import datetime
import functools
import re
import subprocess
import time
import zoneinfo
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

from django.core import signing
from django.core.files.base import ContentFile
from django.utils import timezone

from courses.models import LessonPage
from funnels.forms import MIN_SECONDS_TO_SUBMIT, RENDERED_SALT
from funnels.models import LandingPage, LeadMagnet, Sequence, SequenceStep
from media import transcode
from media.models import Video
from media.stamping.samples import sample_pdf
from tests.courses.conftest import CourseTree, course_tree_install, publish_child
from tests.harness.wagtail_pages import home_page_install
from tests.harness.waiting import wait_until
from tests.media.test_video_samples import install_ready_video
from tests.webinars.conftest import make_webinar, session_at
from webinars.models import WebinarPage

MAGNET_PDF = sample_pdf(2)
CONSENT = "Send me the checklist and weekly tips. I can unsubscribe at any time."
OFFER_SUBJECT = "Doors are open, {{ first_name }}"
LAST_CALL_SUBJECT = "Last call: the course closes tonight"
# Zones a visitor may be in, one or two per hour of offset: one of them always has
# the middle of the day now, far from the 06:00–22:00 send window's edges.
ZONES = (
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Sao_Paulo",
    "Atlantic/South_Georgia",
    "Atlantic/Cape_Verde",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Helsinki",
    "Asia/Dubai",
    "Asia/Karachi",
    "Asia/Kathmandu",
    "Asia/Dhaka",
    "Asia/Bangkok",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Brisbane",
    "Pacific/Noumea",
    "Pacific/Auckland",
)
VIDEO_SECONDS = 6
VIDEO_SEGMENT_SECONDS = 2


def daytime_zone(now: datetime.datetime | None = None) -> str:
    """The zone whose local time is nearest 13:00 now: a subscriber there may be mailed
    at once, and stays inside the send window for hours."""
    now = now or timezone.now()

    def distance_from_noon(name: str) -> float:
        local = now.astimezone(zoneinfo.ZoneInfo(name))
        return abs(local.hour + local.minute / 60 - 13)

    return min(ZONES, key=distance_from_noon)


@dataclass
class LaunchWorld:
    tree: CourseTree
    landing: LandingPage
    magnet: LeadMagnet
    sequence: Sequence
    video: Video
    webinar: WebinarPage


@functools.cache
def short_lesson_video(basetemp: Path) -> transcode.HlsResult:
    """A 6-second 360p video with a tone, transcoded to HLS in 2-second segments (so a
    few seconds of playback cross segment boundaries); made once per session."""
    folder = basetemp / "journey-video"
    folder.mkdir(exist_ok=True)
    source = folder / "lesson.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=640x360:rate=25:duration={VIDEO_SECONDS}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=48000:duration={VIDEO_SECONDS}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(source),
        ],
        check=True,
        timeout=120,
    )
    return transcode.transcode_to_hls(source, folder / "hls", segment_seconds=VIDEO_SEGMENT_SECONDS)


def launch_world_build(*, site_url: str, protected_storage, basetemp: Path) -> LaunchWorld:
    """The creator's launch: a course whose paid lesson plays a video, a landing page
    trading a checklist for an email and starting a two-email sequence that sells the
    course (the offer at once, a last call two days later), and a free webinar.

    ``site_url`` is where the browser reaches the site: the offer email links there."""
    home = home_page_install(title="Northwind Academy")
    tree = course_tree_install(home)
    video = install_ready_video(
        protected_storage, short_lesson_video(basetemp), title=tree.paid_lesson.title
    )
    Video.objects.filter(pk=video.pk).update(width=640, height=360)
    LessonPage.objects.filter(pk=tree.paid_lesson.pk).update(video=video)

    magnet = LeadMagnet(title="The Launch Checklist", download_filename="launch-checklist.pdf")
    magnet.file.save("launch-checklist.pdf", ContentFile(MAGNET_PDF), save=False)
    magnet.save()

    sequence = Sequence.objects.create(name="Launch week")
    sequence.target_products.set([tree.product])
    course_url = f"{site_url}{tree.course.url}"
    SequenceStep.objects.create(
        sequence=sequence,
        sort_order=0,
        kind=SequenceStep.Kind.OFFER,
        delay_days=0,
        delay_hours=0,
        subject=OFFER_SUBJECT,
        body=(
            "Hi {{ first_name }},\n\nThe course that takes you from idea to first sale "
            "is open for enrolment this week."
        ),
        button_label="See the course",
        button_url=course_url,
    )
    SequenceStep.objects.create(
        sequence=sequence,
        sort_order=1,
        kind=SequenceStep.Kind.OFFER,
        delay_days=2,
        subject=LAST_CALL_SUBJECT,
        body="Hi {{ first_name }},\n\nEnrolment closes tonight.",
        button_label="Join now",
        button_url=course_url,
    )

    landing = publish_child(
        home,
        LandingPage(
            title="Launch checklist",
            slug="launch-checklist",
            body=[
                ("hero", {"headline": "Launch your first course without the overwhelm"}),
                (
                    "optin_form",
                    {
                        "heading": "Get your free copy",
                        "magnet": magnet,
                        "ask_name": True,
                        "button_label": "Send me the checklist",
                        "consent_text": CONSENT,
                        "double_opt_in": True,
                        "sequence": sequence,
                    },
                ),
            ],
        ),
    )
    webinar = make_webinar(
        home,
        sessions=[session_at(timezone.now() + timedelta(days=3))],
        join_url=f"{site_url}/healthz?room=launch-qa",
        title="Launch week: live Q&A",
        slug="launch-qa",
    )
    return LaunchWorld(
        tree=tree,
        landing=landing,
        magnet=magnet,
        sequence=sequence,
        video=video,
        webinar=webinar,
    )


# --- The visitor's browser ----------------------------------------------------------------


def bot_check_wait(form) -> None:
    """Wait until the server will take ``form`` (a Playwright locator) from a person.

    Our forms refuse a post sooner than MIN_SECONDS_TO_SUBMIT after the server rendered
    them (signed into the form as whole seconds): wait for that moment on the same clock,
    not for a guessed delay."""
    token = form.locator("input[name=rendered_at]").input_value()
    rendered = signing.loads(token, salt=RENDERED_SALT)
    wait_until(
        lambda: time.time() - rendered >= MIN_SECONDS_TO_SUBMIT + 0.05,
        timeout=MIN_SECONDS_TO_SUBMIT + 5,
        what="the form's bot check to accept a person's post",
    )


def sign_in(page, site_url: str, *, email: str, password: str, then: str = "") -> None:
    page.goto(f"{site_url}/accounts/login/" + (f"?next={then}" if then else ""))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name=re.compile("Sign in", re.I)).click()


def link_in(message: EmailMessage, path_pattern: str) -> str:
    """The first absolute link in the message's plain-text part whose path matches."""
    text = message.get_body(("plain",)).get_content()
    found = re.search(rf"https?://[^\s/]+{path_pattern}\S*", text)
    assert found, f"no link matching {path_pattern!r} in:\n{text}"
    return found.group(0)
