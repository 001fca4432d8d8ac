"""Protected delivery, as a buyer lives it, in Chromium: sign in through the form, open the
course, play the lesson's video from per-viewer playlists and signed segment URLs, mark
the lesson complete, download the worksheet stamped for them, and trace that file back
to them with `manage.py trace_leak`. Then another signed-in user asks for the same
playlist, segment and download URLs and is refused each one.

gunicorn serves the site from the test database; protected files (the HLS output and the
worksheet) are in the server's local protected folder, handed out by our signed views.
"""

import re
import subprocess
import sys

import pytest
from allauth.account.models import EmailAddress
from playwright.sync_api import expect

from accounts.models import User
from courses.models import LessonPage, LessonProgress
from media.models import DownloadDelivery
from payments.services import entitlement_grant
from tests.courses.conftest import WORKSHEET, course_tree_install
from tests.harness.processes import PROJECT_ROOT
from tests.harness.wagtail_pages import home_page_install
from tests.media.test_video_samples import install_ready_video, transcoded_720p

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a long buyer pass phrase"
# Our signed segment URL: /protected/video/seg/<name>.<expiry, hex>.<signature>/
SEGMENT_URL = re.compile(r"/protected/video/seg/[\w-]+\.[0-9a-f]+\.[\w-]{22}/$")
PLAYER = "document.querySelector('[data-video-player]')"


def _person(email: str, **names) -> User:
    user = User.objects.create_user(email, PASSWORD, **names)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


def _sign_in(page, web_server, user: User, *, then: str = "") -> None:
    page.goto(f"{web_server.url}/accounts/login/" + (f"?next={then}" if then else ""))
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Sign in", re.I)).click()


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def test_a_buyer_watches_completes_and_downloads_a_traceable_copy_that_no_one_else_gets(
    web_server,
    page,
    browser,
    server_protected_storage,
    django_server_env,
    tmp_path,
    tmp_path_factory,
):
    page = page
    # given a course whose second lesson has a transcoded video and a worksheet PDF
    tree = course_tree_install(home_page_install(title="Northwind Academy"), with_download=True)
    lesson = tree.paid_lesson
    video = install_ready_video(
        server_protected_storage,
        transcoded_720p(tmp_path_factory.getbasetemp()),
        title=lesson.title,
    )
    LessonPage.objects.filter(pk=lesson.pk).update(video=video)
    download = lesson.downloads.get()
    # and a buyer with access to it
    buyer = _person("leila@lodestone-buyer.fi", first_name="Leila", last_name="Ahmadi")
    entitlement_grant(user=buyer, product=tree.product)
    responses: list[tuple[str, int]] = []
    page.on("response", lambda r: responses.append((_path(r.url), r.status)))

    # when they sign in through the sign-in form, on their way to the course
    _sign_in(page, web_server, buyer, then=tree.course.url)

    # then the course opens
    expect(page.get_by_role("heading", level=1)).to_have_text("Launch Your First Course")

    # when they open the lesson from the course outline
    page.locator("a.outline-lesson__title", has_text=lesson.title).first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(lesson.title)

    # and press play once the player has loaded
    page.wait_for_function(f"() => {PLAYER}?.dataset.fragmentsLoaded >= 2")
    page.evaluate(
        """() => { const v = document.querySelector('[data-video-player] video');
                   v.addEventListener('playing', () => { v.dataset.sawPlaying = '1'; });
                   v.muted = true; return v.play(); }"""
    )

    # then the player reaches the playing state and the picture moves
    page.wait_for_function(
        """() => { const v = document.querySelector('[data-video-player] video');
                   return v.dataset.sawPlaying === '1' && !v.paused && v.currentTime > 0.5
                       && v.readyState >= 3; }"""
    )
    player = page.locator("[data-video-player]")
    assert player.get_attribute("data-engine") == "hls.js"
    assert page.evaluate("() => document.querySelector('[data-video-player] video').error") is None
    expect(player.locator("[data-video-message]")).to_be_hidden()
    # through a playlist written for them, and segments fetched through signed URLs only
    master_path = f"/protected/video/{video.uid}/master.m3u8"
    assert (master_path, 200) in responses
    renditions = [
        p
        for p, s in responses
        if re.fullmatch(rf"/protected/video/{video.uid}/(360p|720p)/index\.m3u8\?t=[\w.:-]+", p)
        and s == 200
    ]
    assert renditions
    segments = [(p, s) for p, s in responses if p.startswith("/protected/video/seg/")]
    assert len(segments) >= 2  # an init segment and at least one media segment
    assert all(SEGMENT_URL.search(p) and s == 200 for p, s in segments), segments
    assert not [p for p, _s in responses if p.endswith((".m4s", ".mp4"))]  # no raw file names

    # when they mark the lesson complete
    page.get_by_role("button", name="Mark as complete").click()

    # then it is recorded
    expect(page.locator("[data-complete-status]")).to_have_text("You completed this lesson.")
    assert LessonProgress.objects.get(user=buyer, lesson=lesson).completed_at is not None

    # when they download the worksheet through the lesson's link
    with page.expect_download() as downloading:
        page.get_by_role("link", name=re.compile(download.title)).click()
    received = tmp_path / downloading.value.suggested_filename
    downloading.value.save_as(received)

    # then they have the PDF, with their email on every page
    assert received.name == "week-1-worksheet.pdf"
    data = received.read_bytes()
    assert data.startswith(b"%PDF-") and data != WORKSHEET
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(received), "-"], capture_output=True, check=True
    ).stdout.decode()
    pages = text.split("\f")[:-1]
    assert len(pages) == 2
    assert all(buyer.email in page_text for page_text in pages), pages

    # and trace_leak, given that file, names them
    traced = subprocess.run(
        [sys.executable, "manage.py", "trace_leak", str(received)],
        cwd=PROJECT_ROOT,
        env=django_server_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert traced.returncode == 0, traced.stderr
    assert f"Delivered to: Leila Ahmadi <{buyer.email}> (account #{buyer.pk})" in traced.stdout
    assert "byte for byte the file that was sent" in traced.stdout
    delivery = DownloadDelivery.objects.get(user=buyer)
    assert delivery.marker in traced.stdout

    # when another signed-in user asks for the same URLs
    stranger = _person("someone@lodestone-buyer.fi")
    other = browser.new_context(locale="en-US")
    try:
        other.set_default_timeout(15_000)
        other_page = other.new_page()
        _sign_in(other_page, web_server, stranger)
        expect(other_page.get_by_role("heading", level=1)).to_have_text("Your account")

        def status(path: str) -> int:
            return other.request.get(web_server.url + path, max_redirects=0).status

        # then each one is refused
        asked = {
            "lesson": lesson.url,
            "master playlist": master_path,
            "rendition playlist": renditions[0],
            "init segment": segments[0][0],
            "media segment": segments[-1][0],
            "poster": f"/protected/video/{video.uid}/poster.jpg",
            "download": f"/learn/download/{download.uuid}/",
        }
        answers = {what: status(path) for what, path in asked.items()}
    finally:
        other.close()
    assert answers == dict.fromkeys(asked, 403)
    assert list(DownloadDelivery.objects.values_list("user", flat=True)) == [buyer.pk]
