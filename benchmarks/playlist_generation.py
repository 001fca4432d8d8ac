"""Per-viewer HLS playlists per second on one core: local HMAC signing and S3 presigning,
next to serving the stored (unmarked) playlist, measured in the same run; and the same
with a forensic A/B watermark (each viewer's codeword picks A or B per segment).

    .venv/bin/python benchmarks/playlist_generation.py [--seconds 1.5] [--segments 150,600,1200]

Two levels, both single-threaded (one core):
- generation: media.playlists building the text from a parsed, cached stored playlist;
  the baseline returns the stored text unchanged. "S3 via boto3" is what
  storage.url() per segment would cost (one reused client), for comparison.
- view: the real views (media.views_video) called with a signed-in user, including the
  video lookup and access check on PostgreSQL; the baseline is a view doing the same
  lookup and check and returning the stored playlist unchanged.

S3 presigning is local computation (no request to S3), so no S3 server is needed.
Needs PostgreSQL on 127.0.0.1 (it creates and drops its own database).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/lodestone_bench_playlist"


def stored_playlist_text(segments: int) -> str:
    """A rendition playlist as ffmpeg writes it: `segments` of 6 s, the last one 3.5 s."""
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        "#EXT-X-TARGETDURATION:6",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        '#EXT-X-MAP:URI="init_720p.mp4"',
    ]
    for i in range(segments):
        lines += [f"#EXTINF:{6.0 if i < segments - 1 else 3.5:.6f},", f"seg_{i:05d}.m4s"]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def rate(fn, seconds: float) -> tuple[float, float]:
    """(calls per second, median ms per call) over about `seconds`, after a warm-up."""
    for _ in range(3):
        fn()
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return len(samples) / sum(samples), statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--segments", default="150,600,1200")
    args = parser.parse_args()
    sizes = [int(n) for n in args.segments.split(",")]

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run(settings, sizes, args.seconds)
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)


def run(settings, sizes: list[int], seconds: float) -> None:
    from django.core.files.base import ContentFile
    from django.core.files.storage import storages
    from django.http import HttpResponse
    from django.shortcuts import get_object_or_404
    from django.test import RequestFactory, override_settings

    from accounts.models import User
    from media import playlists, views_video
    from media.access import can_view_video
    from media.models import Video, WatermarkStatus
    from media.watermark import code

    workdir = Path(tempfile.mkdtemp(prefix="lodestone-bench-playlists-"))
    local_options = {"location": str(workdir), "base_url": None}
    s3_options = {
        "bucket_name": "lodestone-protected",
        "access_key": "AKBENCHMARK0000000",
        "secret_key": "bench" * 8,
        "endpoint_url": "https://s3.example.test",
        "region_name": "eu-north-1",
        "signature_version": "s3v4",
        "addressing_style": "path",
        "location": "protected",
        "querystring_auth": True,
    }

    def use_storage(kind: str):
        """Make `kind` the protected storage (as settings would) and return it."""
        backend = (
            {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": local_options}
            if kind == "local"
            else {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": s3_options}
        )
        override_settings(STORAGES={**settings.STORAGES, "protected": backend}).enable()
        return storages["protected"]

    user = User.objects.create_user(email="learner@example.com", password="-", is_staff=True)
    factory = RequestFactory()

    def stored_view(request, uid, rendition):
        # The baseline: same lookup and access check, the stored playlist unchanged.
        video = get_object_or_404(Video, uid=uid)
        if not can_view_video(request.user, video):
            return HttpResponse(status=403)
        found = next(r for r in video.renditions if r["name"] == rendition)
        stored = playlists.stored_playlist(
            views_video.protected_storage(), f"{video.hls_prefix}/{found['playlist']}"
        )
        text = stored.parts[0] + "".join(
            u + p for u, p in zip(stored.uris, stored.parts[1:], strict=True)
        )
        return HttpResponse(text, content_type=views_video.PLAYLIST_TYPE)

    def measure(segments: int):
        local = use_storage("local")
        video = Video(title=f"{segments} segments")
        video.source.save("bench.mp4", ContentFile(b"-"), save=False)
        video.save()
        prefix = f"videos/{video.uid}/hls/bench0001"
        local.save(f"{prefix}/720p/index.m3u8", ContentFile(stored_playlist_text(segments)))
        rendition = {
            "name": "720p",
            "width": 1280,
            "height": 720,
            "playlist": "720p/index.m3u8",
            "bandwidth": 2_800_000,
            "average_bandwidth": 2_400_000,
            "codecs": "avc1.64001f,mp4a.40.2",
            "frame_rate": 30.0,
        }
        Video.objects.filter(pk=video.pk).update(
            status=Video.Status.READY,
            hls_prefix=prefix,
            renditions=[rendition, {**rendition, "name": "360p", "playlist": "360p/index.m3u8"}],
            duration_seconds=segments * 6.0,
        )
        video.refresh_from_db()
        # Warm the per-process cache of parsed stored playlists (steady state).
        stored = playlists.stored_playlist(local, f"{prefix}/720p/index.m3u8")
        uris = len(stored.uris)

        def generate(storage, user_id=user.pk):
            return playlists.rendition_for_viewer(
                storage=storage, video=video, rendition=rendition, user_id=user_id
            )

        s3 = use_storage("s3")
        names = [f"{prefix}/720p/{u}" for u in stored.uris]

        def boto3_each():
            return [s3.url(n, expire=120) for n in names]

        def unmarked():
            return stored.parts[0] + "".join(
                u + p for u, p in zip(stored.uris, stored.parts[1:], strict=True)
            )

        # Forensic watermark: the same video with a B variant; each viewer's codeword
        # picks A or B per segment (media/watermark/).
        params = code.CodeParams.for_segments(segments)
        codeword = code.encode(code.random_message(params), params)
        video.watermark = {"prefix": f"{prefix}/mark-bench", "code": params.as_json()}

        def generate_marked(storage):
            return playlists.rendition_for_viewer(
                storage=storage, video=video, rendition=rendition, user_id=user.pk,
                codeword=codeword,
            )  # fmt: skip

        generation = {
            "stored (unmarked)": rate(unmarked, seconds),
            "local HMAC": rate(lambda: generate(local), seconds),
            "local HMAC, A/B marked": rate(lambda: generate_marked(local), seconds),
            "S3 presigned": rate(lambda: generate(s3), seconds),
            "S3 presigned, A/B marked": rate(lambda: generate_marked(s3), seconds),
            "S3 via boto3 per URL": rate(boto3_each, min(seconds, 1.0)),
        }

        def view_call(fn, path_kwargs):
            request = factory.get(f"/protected/video/{video.uid}/720p/index.m3u8?t=x")
            request.user = user
            response = fn(request, **path_kwargs)
            assert response.status_code == 200, response.status_code
            return response

        token = playlists.rendition_token(
            video_uid=str(video.uid), user_id=user.pk, expires=int(time.time()) + 3600
        )

        def rendition_view():
            request = factory.get(f"/protected/video/{video.uid}/720p/index.m3u8", {"t": token})
            request.user = user
            response = views_video.video_rendition(request, uid=video.uid, rendition="720p")
            assert response.status_code == 200, response.status_code
            return response

        use_storage("local")
        views = {
            "stored (unmarked)": rate(
                lambda: view_call(stored_view, {"uid": video.uid, "rendition": "720p"}), seconds
            )
        }
        views["local HMAC"] = rate(rendition_view, seconds)
        use_storage("s3")
        views["S3 presigned"] = rate(rendition_view, seconds)
        use_storage("local")
        views["master playlist"] = rate(
            lambda: view_call(views_video.video_master, {"uid": video.uid}), seconds
        )
        # The marked view: the viewer's delivery (codeword) is looked up per request.
        Video.objects.filter(pk=video.pk).update(
            forensic_watermark=True,
            watermark_status=WatermarkStatus.READY,
            watermark={**video.watermark, "hls_prefix": prefix},
        )
        video.refresh_from_db()
        views["local HMAC, A/B marked"] = rate(rendition_view, seconds)
        use_storage("s3")
        views["S3 presigned, A/B marked"] = rate(rendition_view, seconds)
        use_storage("local")
        return segments, uris, generation, views

    rows = [measure(segments) for segments in sizes]

    print()
    print(
        "| segments (6 s) | mode | generation: playlists/s | ms each | µs per URL "
        "| view: playlists/s | ms each | view ÷ unmarked |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for segments, uris, generation, views in rows:
        base_view = views["stored (unmarked)"][0]
        for mode in (
            "stored (unmarked)",
            "local HMAC",
            "local HMAC, A/B marked",
            "S3 presigned",
            "S3 presigned, A/B marked",
            "S3 via boto3 per URL",
        ):
            per_s, ms = generation[mode]
            per_url = "" if mode == "stored (unmarked)" else f"{ms * 1000 / uris:.1f}"
            view = views.get(mode)
            view_cells = (
                f"{view[0]:.0f} | {view[1]:.2f} | {view[0] / base_view:.2f}"
                if view
                else "— | — | —"
            )
            print(f"| {segments} | {mode} | {per_s:.0f} | {ms:.3f} | {per_url} | {view_cells} |")
    print("\nA/B marked ÷ unmarked signing (same mode), per-viewer playlists per second:")
    for segments, _uris, generation, views in rows:
        for mode in ("local HMAC", "S3 presigned"):
            marked = f"{mode}, A/B marked"
            print(
                f"  {segments} segments, {mode}: generation "
                f"{generation[marked][0] / generation[mode][0]:.2f}, view "
                f"{views[marked][0] / views[mode][0]:.2f}"
            )
    master = rows[0][3]["master playlist"]
    print(
        f"\nMaster playlist view (2 renditions, any length): {master[0]:.0f}/s, "
        f"{master[1]:.2f} ms each."
    )
    print(f"Python {sys.version.split()[0]}, one thread; {os.cpu_count()} CPUs on the machine.")


if __name__ == "__main__":
    main()
