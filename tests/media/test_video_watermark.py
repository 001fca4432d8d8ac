"""Forensic A/B watermark: a leaked re-encode of one buyer's stream names that buyer.

The acceptance test runs the real pipeline on a short clip: the transcode task (1 s
segments, so 44 s carry 44 segments: enough for a Reed–Solomon (11, 5) codeword over
GF(16) — the code needs 36; production lessons use 6 s segments and need 3.6 min), the
B-variant task, per-buyer playlists from the views, a pirate who downloads their
segments through the signed URLs, concatenates and re-encodes them smaller, and
`manage.py trace_leak` on the result. The other tests cover the parts without ffmpeg.
"""

import random
import subprocess
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.template.loader import render_to_string
from django.test import RequestFactory

from media import playlists
from media.access import register_video_access, unregister_video_access
from media.models import Video, VideoDelivery, WatermarkStatus
from media.tasks import video_transcode, video_watermark
from media.watermark import code
from media.watermark.services import video_delivery_ensure, video_watermark_switch

pytestmark = pytest.mark.django_db

BUYERS = ("ana@example.com", "bo@example.com", "chen@example.com")
CLIP_SECONDS = 44


def buyers_only(user, video) -> bool:
    return user.is_authenticated and user.email in BUYERS


@pytest.fixture(autouse=True)
def course_access():
    register_video_access(buyers_only)
    yield
    unregister_video_access(buyers_only)


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


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        timeout=300,
    )


def _clip(path: Path) -> Path:
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={CLIP_SECONDS}",
        "-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=48000:duration={CLIP_SECONDS}",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    return path


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _stream_uris(client, video: Video) -> list[str]:
    """What a player gets: master playlist, then the (only) rendition's playlist."""
    master = client.get(f"/protected/video/{video.uid}/master.m3u8")
    assert master.status_code == 200
    rendition = client.get(playlists.parse_media_playlist(master.content.decode()).uris[0])
    assert rendition.status_code == 200
    return playlists.parse_media_playlist(rendition.content.decode()).uris


def _trace(path: Path) -> tuple[str, str]:
    """(output, error) of manage.py trace_leak; error is "" when it named someone."""
    from io import StringIO

    out = StringIO()
    try:
        call_command("trace_leak", str(path), stdout=out)
    except CommandError as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), ""


def test_a_pirated_re_encode_of_one_buyers_stream_names_that_buyer_and_no_one_else(
    settings,
    local_storage,
    client,
    django_user_model,
    published,
    celery_broker,
    django_capture_on_commit_callbacks,
    tmp_path,
):
    # given a lesson video with the forensic watermark on, transcoded with 1 s segments
    settings.VIDEO_SEGMENT_SECONDS = 1
    buyers = [django_user_model.objects.create_user(email=e, password="-") for e in BUYERS]
    video = Video(title="Lesson 3: Pricing", forensic_watermark=True)
    video.source.save(
        "lesson.mp4", ContentFile(_clip(tmp_path / "clip.mp4").read_bytes()), save=False
    )
    video.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert video_transcode.apply(args=[video.pk]).get() == "ready"
    video.refresh_from_db()
    assert published == [("media.tasks.video_watermark", [video.pk])]
    # while the B variant is being made, nobody gets a stream (never an unmarked one)
    client.force_login(buyers[0])
    assert client.get(f"/protected/video/{video.uid}/master.m3u8").status_code == 404
    status = client.get(f"/protected/video/{video.uid}/status.json").json()
    assert (status["status"], status["ready"]) == ("watermarking", False)

    # when the B variant is made
    assert video_watermark.apply(args=[video.pk]).get() == "ready"
    video.refresh_from_db()
    assert (video.watermark_status, video.watermark_progress) == (WatermarkStatus.READY, 100)
    assert video.watermark["code"] == {"n": 11, "k": 5}

    # and three buyers stream it
    streams = {}
    for buyer in buyers:
        client.force_login(buyer)
        streams[buyer.email] = _stream_uris(client, video)

    # then each got their own A/B sequence, sharing the init segment, recorded in the ledger
    deliveries = {d.user.email: d for d in VideoDelivery.objects.filter(video=video)}
    assert set(deliveries) == set(BUYERS)
    assert len({d.codeword for d in deliveries.values()}) == 3
    inits = {uris[0] for uris in streams.values()}
    assert len(inits) == 3  # signed per viewer ...
    names = {
        email: [playlists._unb64(u.split("/seg/")[1].split(".")[0]).decode() for u in uris]
        for email, uris in streams.items()
    }
    assert len({n[0] for n in names.values()}) == 1  # ... for the same init segment
    for email, stream in names.items():
        played_b = "".join("1" if "/mark-" in name else "0" for name in stream[1:])
        assert played_b == code.segment_variants(deliveries[email].codeword, CLIP_SECONDS)

    # when one buyer's stream is rebuilt by a pirate: segments fetched through their
    # signed URLs, concatenated, cut 1.5 s at each end and re-encoded at 180p, CRF 30
    pirate = buyers[1]
    client.force_login(pirate)
    rebuilt = tmp_path / "rebuilt.mp4"
    with rebuilt.open("wb") as out:
        for uri in streams[pirate.email]:
            response = client.get(uri)
            assert response.status_code == 200
            out.write(_body(response))
    leak = tmp_path / "leak.mp4"
    _ffmpeg(
        "-ss", "1.5", "-i", str(rebuilt), "-t", str(CLIP_SECONDS - 3),
        "-vf", "scale=-2:180", "-c:v", "libx264", "-preset", "veryfast", "-crf", "30",
        "-c:a", "aac", "-b:a", "64k", str(leak),
    )  # fmt: skip
    output, error = _trace(leak)

    # then trace_leak names the pirate, and only the pirate
    assert error == "", output + error
    assert f"Streamed to: {pirate.email} (account #{pirate.pk})" in output
    for other in BUYERS:
        if other != pirate.email:
            assert other not in output

    # and a re-encode of the unmarked original names nobody
    unmarked = tmp_path / "unmarked.mp4"
    _ffmpeg(
        "-ss", "2", "-i", str(tmp_path / "clip.mp4"), "-t", "38", "-vf", "scale=-2:240",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "30", str(unmarked),
    )  # fmt: skip
    output, error = _trace(unmarked)
    assert "unmarked copy" in error
    assert not any(email in output for email in BUYERS)


# --- Without ffmpeg: the code, the verdicts, playlists, the switch, the overlay -------------

PARAMS = code.CodeParams(n=12)


def _ledger(size: int, rng: random.Random) -> list[tuple[int, int, str]]:
    messages = set()
    while len(messages) < size:
        messages.add(rng.randrange(1, PARAMS.id_space))
    return [(i, m, code.encode(m, PARAMS)) for i, m in enumerate(sorted(messages))]


def _readings(variants: str, rng: random.Random, *, errors: float, erasures: float):
    betas = []
    for bit in variants:
        draw = rng.random()
        if draw < erasures:
            betas.append(None)
        elif draw < erasures + errors:
            betas.append(1.0 - int(bit))
        else:
            betas.append(float(bit))
    return code.positions_from_segments(betas, [1] * len(betas), PARAMS)


def _verdict(positions, ledger):
    from media.watermark.trace import judge

    return judge(positions, PARAMS, code.decode(positions, PARAMS), ledger)


def test_a_codeword_survives_two_misread_symbols_or_four_unreadable_ones():
    # given
    word = code.encode(0xBEEF5, PARAMS)
    flipped = [float(b) for b in word]
    for position in (1, 13):  # two symbols, one bit each
        flipped[position] = 1 - flipped[position]
    unread = [float(b) for b in word]
    for position in (0, 4, 8, 12):  # four symbols
        unread[position] = None

    # when / then
    assert code.decode(flipped, PARAMS).message == 0xBEEF5
    assert code.decode(unread, PARAMS).message == 0xBEEF5
    assert code.decode(flipped, PARAMS).corrected_symbols == 2


def test_never_issued_codewords_and_random_readings_accuse_nobody():
    # given a ledger of 300 viewers, and readings with 3 % misread and 10 % unread segments
    rng = random.Random(9)
    ledger = _ledger(300, rng)
    issued = {m for _k, m, _w in ledger}
    verdicts = []

    for _ in range(1000):
        # when a recording carries a codeword never issued, or no codeword at all
        message = rng.randrange(1, PARAMS.id_space)
        if message in issued:
            continue
        stranger = code.segment_variants(code.encode(message, PARAMS), 50)
        noise = "".join(rng.choice("01") for _ in range(50))
        for variants in (stranger, noise):
            verdicts.append(_verdict(_readings(variants, rng, errors=0.03, erasures=0.1), ledger))

    # then
    assert [v for v in verdicts if v.verdict == "named"] == []


def test_two_colluders_mixing_their_segments_never_get_an_innocent_named():
    # given
    rng = random.Random(11)
    ledger = _ledger(300, rng)
    outcomes = {"colluder": 0, "innocent": 0, "undecided": 0}

    for _ in range(1000):
        # when two buyers mix their streams segment by segment
        (k1, _m1, w1), (k2, _m2, w2) = rng.sample(ledger, 2)
        v1, v2 = code.segment_variants(w1, 50), code.segment_variants(w2, 50)
        mixed = "".join(rng.choice(pair) for pair in zip(v1, v2, strict=True))
        verdict = _verdict(_readings(mixed, rng, errors=0.01, erasures=0.05), ledger)
        if verdict.verdict != "named":
            outcomes["undecided"] += 1
        else:
            outcomes["colluder" if verdict.named in (k1, k2) else "innocent"] += 1

    # then
    assert outcomes["innocent"] == 0


def test_one_buyers_noisy_stream_is_named():
    # given
    rng = random.Random(5)
    ledger = _ledger(300, rng)
    key, _message, word = ledger[42]

    # when
    positions = _readings(code.segment_variants(word, 50), rng, errors=0.02, erasures=0.06)

    # then
    verdict = _verdict(positions, ledger)
    assert (verdict.verdict, verdict.named) == ("named", key)


def _marked_video(storage, segments: int = 48) -> Video:
    """A READY, marked video whose stored playlist has `segments` segments (no media)."""
    video = Video(title="Marked", forensic_watermark=True)
    video.source.save("lesson.mp4", ContentFile(b"-"), save=False)
    video.save()
    prefix = f"videos/{video.uid}/hls/run1"
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        "#EXT-X-TARGETDURATION:6",
        '#EXT-X-MAP:URI="init_0.mp4"',
    ]
    for i in range(segments):
        lines += ["#EXTINF:6.000000,", f"seg_{i:05d}.m4s"]
    lines.append("#EXT-X-ENDLIST")
    storage.save(f"{prefix}/360p/index.m3u8", ContentFile("\n".join(lines) + "\n"))
    rendition = {
        "name": "360p", "width": 640, "height": 360, "playlist": "360p/index.m3u8",
        "bandwidth": 800_000, "average_bandwidth": 700_000, "codecs": "avc1.64001e",
        "frame_rate": 30.0,
    }  # fmt: skip
    Video.objects.filter(pk=video.pk).update(
        status=Video.Status.READY,
        hls_prefix=prefix,
        renditions=[rendition],
        duration_seconds=segments * 6.0,
        watermark_status=WatermarkStatus.READY,
        watermark={
            "hls_prefix": prefix, "prefix": f"{prefix}/mark-1", "cell": [2, 2], "strength": 2,
            "segments": segments, "segment_seconds": 6, "code": PARAMS.as_json(),
            "reference": f"{prefix}/mark-1/reference.npz",
        },
    )  # fmt: skip
    video.refresh_from_db()
    return video


def test_each_viewer_gets_one_delivery_and_the_same_variants_on_every_request(
    local_storage, client, django_user_model
):
    # given
    video = _marked_video(local_storage)
    buyer = django_user_model.objects.create_user(email=BUYERS[0], password="-")
    client.force_login(buyer)

    # when the player asks twice (two tabs)
    first = _stream_uris(client, video)
    second = _stream_uris(client, video)

    # then one ledger row, and the same segment files both times
    delivery = VideoDelivery.objects.get(video=video)
    assert delivery.user == buyer and delivery.viewer_email == BUYERS[0]
    assert len(delivery.codeword) == PARAMS.bits

    def files(uris):
        return [playlists._unb64(u.split("/seg/")[1].split(".")[0]).decode() for u in uris]

    assert files(first) == files(second)
    assert [("/mark-1/" in name) for name in files(first)[1:]] == [
        bit == "1" for bit in code.segment_variants(delivery.codeword, 48)
    ]
    assert video_delivery_ensure(video=video, user=buyer) == delivery


def test_a_watermarked_video_is_not_streamed_until_its_b_variant_is_ready(
    local_storage, client, django_user_model, published, celery_broker,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    # given a ready video that was streamed unmarked so far
    video = _marked_video(local_storage)
    Video.objects.filter(pk=video.pk).update(
        forensic_watermark=False, watermark_status=WatermarkStatus.OFF, watermark={}
    )
    video.refresh_from_db()
    client.force_login(django_user_model.objects.create_user(email=BUYERS[0], password="-"))
    assert client.get(f"/protected/video/{video.uid}/master.m3u8").status_code == 200

    # when the creator switches the watermark on
    with django_capture_on_commit_callbacks(execute=True):
        video = video_watermark_switch(video=video, enabled=True)

    # then its B variant is queued, and until it is ready there is no stream at all
    assert published == [("media.tasks.video_watermark", [video.pk])]
    assert video.watermark_status == WatermarkStatus.WAITING
    assert client.get(f"/protected/video/{video.uid}/master.m3u8").status_code == 404
    assert client.get(f"/protected/video/{video.uid}/status.json").json()["status"] == (
        "watermarking"
    )
    assert not VideoDelivery.objects.exists()


def test_the_player_shows_the_viewers_email_escaped_over_a_watermarked_video(
    local_storage, django_user_model
):
    # given
    video = _marked_video(local_storage)
    viewer = django_user_model.objects.create_user(email='x"<i>@example.com', password="-")
    request = RequestFactory().get("/")
    request.user = viewer

    # when
    html = render_to_string("media/includes/player.html", {"video": video, "request": request})

    # then
    assert "data-video-viewer" in html
    assert "<bdi>x&quot;&lt;i&gt;@example.com</bdi>" in html
    assert 'data-status="ready"' in html


def test_trace_leak_tells_videos_from_documents_by_their_content(tmp_path):
    from media.management.commands.trace_leak import looks_like_video

    mp4 = b"\x00\x00\x00\x20ftypisom" + bytes(20)
    assert looks_like_video(tmp_path / "leak.bin", mp4)
    assert looks_like_video(tmp_path / "leak.bin", b"\x1a\x45\xdf\xa3" + bytes(20))
    assert not looks_like_video(tmp_path / "book.mp4", b"%PDF-1.7\n")
    assert not looks_like_video(tmp_path / "course.mkv", b"PK\x03\x04" + bytes(20))
