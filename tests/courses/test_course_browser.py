"""A buyer signs in through the real sign-in form in Chromium, opens the course and a lesson,
marks it complete without leaving the page, and finds the progress on the course page.
gunicorn serves the site from the test database, as in production."""

import re
import subprocess

import pytest
from allauth.account.models import EmailAddress
from playwright.sync_api import expect

from accounts.models import User
from courses.models import LessonProgress
from payments.services import entitlement_grant
from tests.harness.wagtail_pages import home_page_install
from tests.harness.waiting import wait_until

from .conftest import course_tree_install

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a long buyer pass phrase"


def test_buyer_marks_a_lesson_complete_and_sees_progress_on_the_course_page(web_server, page):
    # given a course with four lessons, and a buyer with a verified address
    tree = course_tree_install(home_page_install(title="Northwind Academy"))
    buyer = User.objects.create_user("leila@lodestone-buyer.fi", PASSWORD)
    EmailAddress.objects.create(user=buyer, email=buyer.email, verified=True, primary=True)
    entitlement_grant(user=buyer, product=tree.product)

    # when they sign in through the sign-in form
    page.goto(f"{web_server.url}/accounts/login/")
    page.get_by_label("Email").fill(buyer.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Sign in", re.I)).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your account")

    # and open the course, which invites them to start
    page.goto(f"{web_server.url}{tree.course.url}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Launch Your First Course")
    expect(page.locator(".course-progress__percent")).to_have_text("0%")
    page.get_by_role("link", name=re.compile("Start the course")).click()

    # then the first lesson opens
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome")
    lesson_url = page.url

    # when they mark it complete
    page.get_by_role("button", name="Mark as complete").click()

    # then the page says so in place: no reload, the button now offers to undo
    expect(page.locator("[data-complete-status]")).to_have_text("You completed this lesson.")
    expect(page.get_by_role("button", name="Mark as not complete")).to_be_visible()
    expect(page.locator(".lesson-aside .course-progress__percent")).to_have_text("25%")
    expect(page.locator(".lesson-aside [data-outline-lesson].is-complete")).to_have_count(1)
    assert page.url == lesson_url
    expect(page.get_by_text("Lesson marked as complete.")).to_have_count(0)  # no redirect
    assert LessonProgress.objects.get(user=buyer, lesson=tree.free_lesson).completed_at

    # and the course page shows the progress and a tick
    page.get_by_role("navigation", name="Breadcrumb").get_by_role(
        "link", name="Launch Your First Course"
    ).click()
    expect(page.locator(".course-progress__percent")).to_have_text("25%")
    expect(page.get_by_text("1 of 4 lessons completed")).to_be_visible()
    expect(page.locator("progress.course-progress__bar")).to_have_attribute("value", "25")
    done = page.locator(".outline-lesson.is-complete")
    expect(done).to_have_count(1)
    expect(done).to_contain_text("Welcome")
    expect(page.get_by_role("link", name=re.compile("Continue"))).to_have_attribute(
        "href", tree.paid_lesson.url
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    """Twelve seconds of WebM, as the media app's player would be given."""
    path = tmp_path_factory.mktemp("clip") / "clip.webm"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc=size=160x90:rate=10", "-t", "12", "-c:v", "libvpx", "-b:v", "50k", str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


def _serve_ranges(route, body: bytes) -> None:
    """Answer as a media server does (nginx, S3): byte ranges, so the video can seek."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", route.request.headers.get("range", ""))
    if match is None:
        route.fulfill(
            status=200, body=body, headers={"Accept-Ranges": "bytes", "Content-Type": "video/webm"}
        )
        return
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else len(body) - 1
    route.fulfill(
        status=206,
        body=body[start : end + 1],
        headers={
            "Accept-Ranges": "bytes",
            "Content-Range": f"bytes {start}-{end}/{len(body)}",
            "Content-Type": "video/webm",
        },
    )


def _player(page, lesson, position: int) -> None:
    """Put a <video> where the media app's player will be, as it would (after load)."""
    page.evaluate(
        """([url, position]) => {
            const video = document.createElement("video");
            video.muted = true;
            video.setAttribute("data-lesson-progress", url);
            video.setAttribute("data-position", String(position));
            video.src = "/__player-test/clip.webm";
            document.querySelector(".lesson__header").after(video);
        }""",
        [f"/learn/progress/{lesson.pk}/", position],
    )


def test_lesson_js_saves_a_videos_position_and_resumes_there(web_server, page, clip):
    # given a buyer on a lesson whose player is a <video data-lesson-progress>
    tree = course_tree_install(home_page_install(title="Northwind Academy"))
    buyer = User.objects.create_user("reza@lodestone-buyer.fi", PASSWORD)
    EmailAddress.objects.create(user=buyer, email=buyer.email, verified=True, primary=True)
    entitlement_grant(user=buyer, product=tree.product)
    page.route("**/__player-test/clip.webm", lambda route: _serve_ranges(route, clip))
    page.goto(f"{web_server.url}/accounts/login/?next={tree.paid_lesson.url}")
    page.get_by_label("Email").fill(buyer.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Sign in", re.I)).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Write your promise")
    _player(page, tree.paid_lesson, 0)

    # when they watch a few seconds and pause
    page.evaluate(
        "(v => { v.playbackRate = 4; return v.play(); })(document.querySelector('video'))"
    )
    # Functions, not expression strings: the site's CSP forbids eval, which Playwright
    # uses for an expression polled in the page.
    page.wait_for_function("() => document.querySelector('video').currentTime >= 6")
    page.evaluate("document.querySelector('video').pause()")

    # then the position is saved
    saved = wait_until(
        lambda: LessonProgress.objects.filter(user=buyer, position_seconds__gte=6).first(),
        timeout=10,
        what="the paused position to be saved",
    )

    # and when they come back, the player starts where they stopped
    page.reload()
    _player(page, tree.paid_lesson, saved.position_seconds)
    page.wait_for_function(
        "(at) => document.querySelector('video').currentTime >= at", arg=saved.position_seconds
    )

    # and leaving the page reports the position once more (a beacon that outlives the page)
    page.goto("about:blank")
    wait_until(
        lambda: LessonProgress.objects.get(pk=saved.pk).updated_at > saved.updated_at,
        timeout=10,
        what="the position sent on leaving the page",
    )
    assert LessonProgress.objects.get(pk=saved.pk).completed_at is None
