"""The player in headless Chromium: a creator previews a video in the admin, served by
gunicorn through per-viewer playlists and signed segment URLs.

Debian's Chromium plays H.264/AAC through Media Source Extensions (checked below, not
assumed), so the test waits for real playback, not only for fragments to load.
"""

import re
from pathlib import Path

import pytest
from django.test import Client

from media.models import Video

from .test_video_samples import install_ready_video, transcoded_720p

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SEGMENT_URL = re.compile(r"/protected/video/seg/[\w-]+\.[0-9a-f]+\.[\w-]{22}/$")


@pytest.fixture
def creator_page(page, browser_context, web_server, django_user_model):
    """The page, signed in as a creator (staff may preview every video)."""
    creator = django_user_model.objects.create_superuser(email="creator@example.com", password="-")
    # Loopback only: the admin would otherwise ask gravatar.com for the creator's avatar.
    browser_context.route(
        re.compile(r"^(?!https?://(127\.0\.0\.1|localhost)[:/]).*"), lambda route: route.abort()
    )
    client = Client()
    client.force_login(creator)
    browser_context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": web_server.url}]
    )
    return page


def _responses(page) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    page.on("response", lambda response: seen.append((response.url, response.status)))
    return seen


def _inspect_url(web_server, video: Video) -> str:
    return f"{web_server.url}/admin/snippets/lodestone_media/video/inspect/{video.pk}/"


def test_chromium_here_can_decode_the_h264_and_aac_we_encode(page):
    # given the codecs named in our master playlists
    page.set_content("<video></video>")

    # when
    supported = page.evaluate(
        """() => ["avc1.64001e,mp4a.40.2", "avc1.64001f,mp4a.40.2", "avc1.640028"].map(
            (c) => MediaSource.isTypeSupported(`video/mp4; codecs="${c}"`))"""
    )

    # then
    assert supported == [True, True, True]


def test_a_creator_previews_a_video_in_the_admin_and_it_plays_from_signed_segments(
    creator_page, web_server, server_protected_storage, tmp_path_factory
):
    # given
    video = install_ready_video(
        server_protected_storage, transcoded_720p(tmp_path_factory.getbasetemp())
    )
    responses = _responses(creator_page)

    # when
    creator_page.goto(_inspect_url(web_server, video))
    creator_page.wait_for_function(
        "() => document.querySelector('[data-video-player]')?.dataset.fragmentsLoaded >= 2"
    )
    creator_page.evaluate(
        "() => { const v = document.querySelector('video'); v.muted = true; return v.play(); }"
    )
    creator_page.wait_for_function("() => document.querySelector('video').currentTime > 0.5")

    # then it played through hls.js, and every request it made was answered
    player = creator_page.locator("[data-video-player]")
    assert player.get_attribute("data-engine") == "hls.js"
    assert creator_page.evaluate("() => document.querySelector('video').error") is None
    assert player.locator("[data-video-message]").is_hidden()
    paths = [(re.sub(r"^https?://[^/]+", "", url), status) for url, status in responses]
    assert (f"/protected/video/{video.uid}/master.m3u8", 200) in paths
    assert any(
        re.fullmatch(rf"/protected/video/{video.uid}/(720p|360p)/index\.m3u8\?t=[\w.-]+", p)
        and s == 200
        for p, s in paths
    )
    segments = [(p, s) for p, s in paths if SEGMENT_URL.search(p)]
    assert len(segments) >= 2  # the init segment and at least one media segment
    assert all(status == 200 for _path, status in segments)
    assert (f"/protected/video/{video.uid}/poster.jpg", 200) in paths


def test_the_player_fetches_fresh_urls_for_segments_whose_urls_have_expired(
    creator_page, web_server, server_protected_storage, tmp_path_factory
):
    # given a creator watching, whose playlists were signed ten minutes "ago"
    video = install_ready_video(
        server_protected_storage, transcoded_720p(tmp_path_factory.getbasetemp())
    )
    responses = _responses(creator_page)
    creator_page.clock.install()
    creator_page.goto(_inspect_url(web_server, video))
    creator_page.wait_for_function(
        "() => document.querySelector('[data-video-player]')?.dataset.fragmentsLoaded >= 2"
    )
    masters_before = sum("master.m3u8" in url for url, _status in responses)
    segments_before = {url for url, _status in responses if SEGMENT_URL.search(url)}
    creator_page.clock.fast_forward("10:00")

    # when it switches to the other rendition (new segments to load, URLs now expired)
    loaded = creator_page.evaluate(
        """() => { const player = document.querySelector('[data-video-player]');
                   const hls = player.lodestoneHls;
                   hls.currentLevel = hls.currentLevel === 0 ? 1 : 0;
                   return +player.dataset.fragmentsLoaded; }"""
    )
    creator_page.wait_for_function(
        """(loaded) => { const player = document.querySelector('[data-video-player]');
                         return +player.dataset.urlRefreshes >= 1
                             && +player.dataset.fragmentsLoaded >= loaded + 2; }""",
        arg=loaded,
    )

    # then the playlists were fetched again and the new segments loaded with fresh URLs
    assert sum("master.m3u8" in url for url, _status in responses) > masters_before
    fresh = [(u, s) for u, s in responses if SEGMENT_URL.search(u) and u not in segments_before]
    assert len(fresh) >= 2
    assert all(status == 200 for _url, status in fresh)
    assert creator_page.evaluate("() => document.querySelector('video').error") is None


def test_a_video_still_processing_shows_its_status_and_progress(
    creator_page, web_server, server_protected_storage, tmp_path_factory
):
    # given
    video = install_ready_video(
        server_protected_storage, transcoded_720p(tmp_path_factory.getbasetemp())
    )
    Video.objects.filter(pk=video.pk).update(status=Video.Status.PROCESSING, progress=40)

    # when
    creator_page.goto(_inspect_url(web_server, video))
    Video.objects.filter(pk=video.pk).update(progress=80)

    # then the page follows the progress, and starts the player once it is ready
    bar = creator_page.locator("[data-video-player] progress")
    assert bar.get_attribute("value") == "40"
    creator_page.wait_for_function(
        "() => document.querySelector('[data-video-player] progress').value === 80"
    )
    assert "Processing" in creator_page.locator("[data-video-player]").inner_text()
    Video.objects.filter(pk=video.pk).update(status=Video.Status.READY, progress=100)
    creator_page.wait_for_function(
        "() => document.querySelector('[data-video-player]')?.dataset.fragmentsLoaded >= 1",
        timeout=20_000,
    )
    assert creator_page.locator("video").is_visible()


def test_vendored_hls_js_is_the_version_package_json_pins():
    # given
    root = Path(__file__).resolve().parents[2]
    pinned = re.search(r'"hls.js": "([^"]+)"', (root / "package.json").read_text()).group(1)

    # when
    vendored = (root / "site/static/vendor/hls.js/VERSION").read_text()
    lock = (root / "package-lock.json").read_text()

    # then
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)  # exact, no range
    assert vendored.startswith(f"hls.js {pinned} ")
    assert f'"version": "{pinned}"' in lock
    assert (root / "site/static/vendor/hls.js/LICENSE").exists()
