"""Per-viewer playlists and signed segments: who gets them, what expires, local and S3."""

import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.storage import storages
from django.template.loader import render_to_string
from django.test import RequestFactory

from media import playlists
from media.access import register_video_access, unregister_video_access
from media.models import Video
from tests.harness.waiting import wait_until
from tests.harness.web import http_get

from .test_video_samples import install_ready_video, transcoded_720p

pytestmark = pytest.mark.django_db

LEARNERS = {"learner@example.com", "classmate@example.com"}


def enrolled_learners(user, video) -> bool:
    # Stands in for the courses app's checker: these two bought the course.
    return user.is_authenticated and user.email in LEARNERS


@pytest.fixture(autouse=True)
def course_access():
    register_video_access(enrolled_learners)
    yield
    unregister_video_access(enrolled_learners)


@pytest.fixture
def local_storage(settings, tmp_path):
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
def lesson_video(local_storage, tmp_path_factory) -> Video:
    return install_ready_video(local_storage, transcoded_720p(tmp_path_factory.getbasetemp()))


@pytest.fixture
def learner(django_user_model):
    return django_user_model.objects.create_user(email="learner@example.com", password="-")


@pytest.fixture
def classmate(django_user_model):
    return django_user_model.objects.create_user(email="classmate@example.com", password="-")


@pytest.fixture
def stranger(django_user_model):
    return django_user_model.objects.create_user(email="stranger@example.com", password="-")


def _master_url(video: Video) -> str:
    return f"/protected/video/{video.uid}/master.m3u8"


def _rendition_url(client, video: Video, name: str = "720p") -> str:
    master = client.get(_master_url(video)).content.decode()
    return next(uri for uri in playlists.parse_media_playlist(master).uris if f"/{name}/" in uri)


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# --- Master playlist --------------------------------------------------------------------------


def test_master_playlist_points_each_rendition_at_a_playlist_signed_for_the_viewer(
    client, learner, lesson_video
):
    # given
    client.force_login(learner)

    # when
    response = client.get(_master_url(lesson_video))

    # then
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.apple.mpegurl"
    assert response["Cache-Control"] == "private, no-store"
    lines = response.content.decode().splitlines()
    assert lines[:3] == ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    stored = [
        line
        for line in lesson_video_stored_master(lesson_video)
        if line.startswith("#EXT-X-STREAM-INF")
    ]
    assert [line for line in lines if line.startswith("#EXT-X-STREAM-INF")] == stored
    uris = playlists.parse_media_playlist(response.content.decode()).uris
    assert [urlsplit(uri).path for uri in uris] == [
        f"/protected/video/{lesson_video.uid}/720p/index.m3u8",
        f"/protected/video/{lesson_video.uid}/360p/index.m3u8",
    ]
    assert all(
        re.fullmatch(r"[0-9a-f]+\.[\w-]{22}", parse_qs(urlsplit(u).query)["t"][0]) for u in uris
    )


def lesson_video_stored_master(video: Video) -> list[str]:
    with storages["protected"].open(f"{video.hls_prefix}/master.m3u8") as handle:
        return handle.read().decode().splitlines()


def test_master_playlist_is_refused_to_someone_without_access(client, stranger, lesson_video):
    # given
    client.force_login(stranger)

    # when
    response = client.get(_master_url(lesson_video))

    # then
    assert response.status_code == 403
    assert response["Cache-Control"] == "private, no-store"


def test_anonymous_visitor_gets_no_playlist_and_no_segment(client, learner, lesson_video):
    # given links a learner was given
    client.force_login(learner)
    rendition = _rendition_url(client, lesson_video)
    segment = playlists.parse_media_playlist(client.get(rendition).content.decode()).uris[1]
    client.logout()

    # when / then
    assert client.get(_master_url(lesson_video)).status_code == 403
    assert client.get(rendition).status_code == 403
    assert client.get(segment).status_code == 403


def test_staff_can_watch_any_video_without_a_checker_saying_so(
    client, django_user_model, lesson_video
):
    # given
    creator = django_user_model.objects.create_user(
        email="creator@example.com", password="-", is_staff=True
    )
    client.force_login(creator)

    # when
    rendition = client.get(_rendition_url(client, lesson_video))

    # then
    assert rendition.status_code == 200


def test_a_video_still_processing_has_no_playlist_but_reports_its_progress(
    client, learner, lesson_video
):
    # given
    Video.objects.filter(pk=lesson_video.pk).update(status=Video.Status.PROCESSING, progress=42)
    client.force_login(learner)

    # when
    master = client.get(_master_url(lesson_video))
    status = client.get(f"/protected/video/{lesson_video.uid}/status.json")

    # then
    assert master.status_code == 404
    assert status.status_code == 200
    assert status["Cache-Control"] == "private, no-store"
    assert status.json() == {
        "status": "processing",
        "status_label": "This video is being prepared — check back in a few minutes.",
        "progress": 42,
        "ready": False,
    }


# --- Rendition playlists and local segments ------------------------------------------------


def test_rendition_playlist_signs_the_init_segment_and_every_segment_for_the_viewer(
    client, learner, lesson_video, local_storage
):
    # given
    client.force_login(learner)
    stored = local_storage.open(f"{lesson_video.hls_prefix}/720p/index.m3u8").read().decode()

    # when
    response = client.get(_rendition_url(client, lesson_video))

    # then
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.apple.mpegurl"
    assert response["Cache-Control"] == "private, no-store"
    playlist = response.content.decode()
    # the same playlist, only the URIs differ
    assert re.sub(r"(URI=\")[^\"]+|^[^#\n].*$", r"\1", playlist, flags=re.M) == re.sub(
        r"(URI=\")[^\"]+|^[^#\n].*$", r"\1", stored, flags=re.M
    )
    signed = playlists.parse_media_playlist(playlist).uris
    assert len(signed) == len(playlists.parse_media_playlist(stored).uris) == 4
    for url, original in zip(signed, playlists.parse_media_playlist(stored).uris, strict=True):
        assert re.fullmatch(r"/protected/video/seg/[\w-]+\.[0-9a-f]+\.[\w-]{22}/", url)
        segment = client.get(url)
        assert segment.status_code == 200
        assert segment["Cache-Control"] == "private, no-store"
        assert segment["Content-Type"] == (
            "video/mp4" if "init" in original else "video/iso.segment"
        )
        expected = local_storage.open(f"{lesson_video.hls_prefix}/720p/{original}").read()
        assert _body(segment) == expected


def test_segment_urls_expire_a_ttl_after_a_viewer_would_reach_them(
    client, learner, lesson_video, settings
):
    # given
    settings.PROTECTED_VIDEO_URL_TTL = 120
    client.force_login(learner)
    issued = int(time.time())

    # when
    playlist = client.get(_rendition_url(client, lesson_video)).content.decode()

    # then init segment: whole video; segments at 0 s, 6 s, 12 s
    expiries = [
        int(url.split(".")[1], 16) - issued for url in playlists.parse_media_playlist(playlist).uris
    ]
    assert [e - expiries[1] for e in expiries] == [13, 0, 6, 12]
    assert 119 <= expiries[1] <= 121


def test_segment_url_with_a_tampered_signature_is_refused(client, learner, lesson_video):
    # given
    client.force_login(learner)
    segment = playlists.parse_media_playlist(
        client.get(_rendition_url(client, lesson_video)).content.decode()
    ).uris[1]
    name, expiry, mac = segment.split("/")[-2].split(".")
    forged_mac = ("A" if mac[0] != "A" else "B") + mac[1:]
    other_name = playlists._b64(b"videos/../../secrets.txt")

    # when
    forged = client.get(segment.replace(mac, forged_mac))
    renamed = client.get(segment.replace(name, other_name))
    extended = client.get(segment.replace(f".{expiry}.", f".{2**40:x}."))

    # then
    assert [forged.status_code, renamed.status_code, extended.status_code] == [403, 403, 403]


def test_segment_url_past_its_expiry_is_refused(client, learner, lesson_video, local_storage):
    # given a playlist issued 10 minutes ago with a 2-minute TTL
    client.force_login(learner)
    rendition = next(r for r in lesson_video.renditions if r["name"] == "720p")
    old = playlists.rendition_for_viewer(
        storage=local_storage,
        video=lesson_video,
        rendition=rendition,
        user_id=learner.pk,
        now=int(time.time()) - 600,
    )
    segment = playlists.parse_media_playlist(old).uris[1]

    # when
    response = client.get(segment)

    # then
    assert response.status_code == 403
    assert b"expired" in response.content


def test_segment_url_issued_to_another_user_is_refused_even_if_they_have_access(
    client, learner, classmate, lesson_video
):
    # given
    client.force_login(learner)
    segment = playlists.parse_media_playlist(
        client.get(_rendition_url(client, lesson_video)).content.decode()
    ).uris[1]
    client.force_login(classmate)

    # when
    response = client.get(segment)

    # then
    assert response.status_code == 403


def test_rendition_url_issued_to_another_user_is_refused(
    client, learner, classmate, stranger, lesson_video
):
    # given
    client.force_login(learner)
    rendition = _rendition_url(client, lesson_video)

    # when
    client.force_login(classmate)
    by_classmate = client.get(rendition)
    client.force_login(stranger)
    by_stranger = client.get(rendition)

    # then
    assert by_classmate.status_code == 403
    assert by_stranger.status_code == 403


def test_rendition_url_with_an_expired_or_forged_token_is_refused(client, learner, lesson_video):
    # given
    client.force_login(learner)
    base = f"/protected/video/{lesson_video.uid}/720p/index.m3u8"
    expired = playlists.rendition_token(
        video_uid=str(lesson_video.uid), user_id=learner.pk, expires=int(time.time()) - 1
    )
    for_another_video = playlists.rendition_token(
        video_uid="00000000-0000-0000-0000-000000000000",
        user_id=learner.pk,
        expires=int(time.time()) + 60,
    )

    # when / then
    assert client.get(f"{base}?t={expired}").status_code == 403
    assert client.get(f"{base}?t={for_another_video}").status_code == 403
    assert client.get(base).status_code == 403


def test_access_is_asked_again_on_every_playlist_request(client, learner, lesson_video):
    # given a learner holding a fresh rendition URL
    client.force_login(learner)
    rendition = _rendition_url(client, lesson_video)

    # when the entitlement ends (the checker no longer says yes)
    unregister_video_access(enrolled_learners)

    # then
    assert client.get(rendition).status_code == 403
    assert client.get(_master_url(lesson_video)).status_code == 403


def test_behind_nginx_segments_are_handed_over_with_x_accel_redirect(
    client, learner, lesson_video, settings
):
    # given
    settings.PROTECTED_SERVE_METHOD = "nginx"
    client.force_login(learner)
    segment = playlists.parse_media_playlist(
        client.get(_rendition_url(client, lesson_video)).content.decode()
    ).uris[1]

    # when
    response = client.get(segment)

    # then
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == (
        f"/_protected/{lesson_video.hls_prefix}/720p/seg_00000.m4s"
    )
    assert response.content == b""
    assert response["Content-Type"] == "video/iso.segment"
    assert response["Cache-Control"] == "private, no-store"


def test_poster_is_served_to_viewers_only(client, learner, stranger, lesson_video, local_storage):
    # given
    url = f"/protected/video/{lesson_video.uid}/poster.jpg"
    client.force_login(learner)

    # when
    shown = client.get(url)
    client.force_login(stranger)
    refused = client.get(url)

    # then
    assert shown.status_code == 200
    assert shown["Content-Type"] == "image/jpeg"
    assert _body(shown) == local_storage.open(lesson_video.poster).read()
    assert refused.status_code == 403


def test_a_rotated_secret_key_keeps_issued_links_working(client, learner, lesson_video, settings):
    # given
    client.force_login(learner)
    segment = playlists.parse_media_playlist(
        client.get(_rendition_url(client, lesson_video)).content.decode()
    ).uris[1]

    # when
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-for-lodestone-tests"

    # then
    assert client.get(segment).status_code == 200


# --- The player include -----------------------------------------------------------------------


def test_player_include_plays_a_ready_video_from_its_master_playlist(lesson_video, learner):
    # given
    request = RequestFactory().get("/")
    request.user = learner

    # when
    html = render_to_string(
        "media/includes/player.html", {"video": lesson_video, "request": request}
    )

    # then
    video_tag = re.search(r"<video[^>]*>", html).group(0)
    assert f'data-video-src="/protected/video/{lesson_video.uid}/master.m3u8"' in video_tag
    assert f'poster="/protected/video/{lesson_video.uid}/poster.jpg"' in video_tag
    for attribute in ("controls", "playsinline", 'preload="metadata"', "data-lesson-progress"):
        assert attribute in video_tag
    assert " hidden" not in video_tag
    assert 'src="/static/js/player.js" defer' in html
    assert 'data-hls-script="/static/vendor/hls.js/hls.min.js"' in html


def test_player_include_shows_status_and_progress_while_processing(lesson_video, learner):
    # given
    Video.objects.filter(pk=lesson_video.pk).update(status=Video.Status.PROCESSING, progress=37)
    lesson_video.refresh_from_db()
    request = RequestFactory().get("/")
    request.user = learner

    # when
    html = render_to_string(
        "media/includes/player.html", {"video": lesson_video, "request": request}
    )

    # then
    assert 'data-status="processing"' in html
    assert '<progress max="100" value="37"' in html
    assert "This video is being prepared — check back in a few minutes." in html
    assert "Processing" not in html  # the machine's state is for staff
    assert re.search(r"<video[^>]*\bhidden\b", html)


# --- S3 (SeaweedFS) -----------------------------------------------------------------------------


@pytest.fixture
def s3_lesson_video(s3_protected_storage, tmp_path_factory) -> Video:
    return install_ready_video(
        s3_protected_storage.storage, transcoded_720p(tmp_path_factory.getbasetemp())
    )


def test_on_s3_segment_urls_are_presigned_and_the_bucket_serves_them(
    client, learner, s3_lesson_video, s3_protected_storage, settings
):
    # given
    settings.PROTECTED_VIDEO_URL_TTL = 90
    client.force_login(learner)

    # when
    playlist = client.get(_rendition_url(client, s3_lesson_video, "360p")).content.decode()

    # then
    urls = playlists.parse_media_playlist(playlist).uris
    assert len(urls) == 4
    storage = s3_protected_storage.storage
    for url in urls:
        assert url.startswith(s3_protected_storage.server.endpoint_url + "/")
        query = parse_qs(urlsplit(url).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        response = http_get(url)
        assert response.status == 200
        name = urlsplit(url).path.split("/protected/", 1)[1]
        assert response.body == storage.open(name).read()
    lifetimes = [int(parse_qs(urlsplit(u).query)["X-Amz-Expires"][0]) for u in urls]
    assert lifetimes == [90 + 13, 90, 90 + 6, 90 + 12]


def test_on_s3_a_tampered_presigned_segment_url_is_refused_by_the_bucket(
    client, learner, s3_lesson_video
):
    # given
    client.force_login(learner)
    url = playlists.parse_media_playlist(
        client.get(_rendition_url(client, s3_lesson_video)).content.decode()
    ).uris[1]
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    forged = ("0" if signature[0] != "0" else "1") + signature[1:]
    other_segment = url.replace("seg_00000.m4s", "seg_00001.m4s")

    # when / then
    assert http_get(url.replace(signature, forged)).status == 403
    assert http_get(other_segment).status == 403


def test_on_s3_a_presigned_segment_url_stops_working_when_it_expires(
    learner, s3_lesson_video, s3_protected_storage, settings
):
    # given a one-second TTL: the first segment's URL lives one second
    settings.PROTECTED_VIDEO_URL_TTL = 1
    rendition = next(r for r in s3_lesson_video.renditions if r["name"] == "360p")
    playlist = playlists.rendition_for_viewer(
        storage=s3_protected_storage.storage,
        video=s3_lesson_video,
        rendition=rendition,
        user_id=learner.pk,
    )
    first_segment = playlists.parse_media_playlist(playlist).uris[1]
    assert parse_qs(urlsplit(first_segment).query)["X-Amz-Expires"] == ["1"]

    # when / then
    wait_until(
        lambda: http_get(first_segment).status == 403,
        timeout=10,
        what="the presigned URL to expire",
        interval=0.25,
    )


def test_fast_presigned_urls_are_the_ones_boto3_makes(s3_protected_storage):
    # given
    storage = s3_protected_storage.storage
    names = [f"videos/x/hls/run/720p/seg_{i:05d}.m4s" for i in range(3)] + ["a b/ü+~.m4s"]

    def same_second():
        presigner = playlists.S3Presigner(storage, names[0], 120)
        ours = [presigner(name, 120 + i) for i, name in enumerate(names)]
        boto3 = [storage.url(name, expire=120 + i) for i, name in enumerate(names)]
        dates = {parse_qs(urlsplit(u).query)["X-Amz-Date"][0] for u in ours + boto3}
        return presigner, ours, boto3, len(dates) == 1

    # when (made again in the rare case the clock ticked over a second in between)
    presigner, ours, boto3, _same = wait_until(
        lambda: (result := same_second()) and result[3] and result, timeout=10, what="one second"
    )

    # then
    assert presigner.fast
    assert ours == boto3


def test_on_s3_the_poster_redirects_to_a_short_presigned_url(
    client, learner, s3_lesson_video, s3_protected_storage
):
    # given
    client.force_login(learner)

    # when
    response = client.get(f"/protected/video/{s3_lesson_video.uid}/poster.jpg")

    # then
    assert response.status_code == 302
    assert response["Cache-Control"] == "private, no-store"
    fetched = http_get(response["Location"])
    assert fetched.status == 200
    assert fetched.body[:3] == b"\xff\xd8\xff"  # JPEG
