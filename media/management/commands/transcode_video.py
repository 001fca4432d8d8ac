"""Transcode a video here and now, with a progress bar: for creators' scripts and the demo.

manage.py transcode_video <video uid>          # an uploaded video (again: --again)
manage.py transcode_video path/to/lecture.mp4  # add it as a new video, then transcode
"""

import sys
import uuid
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from media import services
from media.models import Video


class Command(BaseCommand):
    help = "Transcode a video to HLS in this process (a video uid, or a file to add first)."

    def add_arguments(self, parser):
        parser.add_argument("video", help="A video's uid, or the path of a video file to add.")
        parser.add_argument("--title", default="", help="Title for a video added from a file.")
        parser.add_argument(
            "--again", action="store_true", help="Transcode even if it is ready or failed."
        )

    def handle(self, *args, video, title, again, **options):
        target = self._video(video, title)
        if again or target.status == Video.Status.UPLOADED:
            services.video_transcode_reset(video=target)
        elif target.status != Video.Status.PROCESSING:
            raise CommandError(f"{target} is {target.get_status_display().lower()}; use --again.")
        self.stdout.write(f"Transcoding “{target.title}” ({target.uid})")
        bar = _ProgressBar(self.stdout)
        try:
            outcome = services.video_transcode_run(video_id=target.pk, echo_progress=bar)
        except services.VideoBusy as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        target.refresh_from_db()
        if target.status == Video.Status.READY:
            names = ", ".join(r["name"] for r in target.renditions)
            self.stdout.write(
                self.style.SUCCESS(
                    f"Ready: {names}, {target.duration_seconds:.1f} s; stored under "
                    f"{target.hls_prefix}/"
                )
            )
        elif target.status == Video.Status.FAILED:
            raise CommandError(target.error)
        else:
            raise CommandError(f"Not transcoded: {outcome}.")

    def _video(self, reference: str, title: str) -> Video:
        try:
            return Video.objects.get(uid=uuid.UUID(reference))
        except ValueError:
            pass
        except Video.DoesNotExist as exc:
            raise CommandError(f"No video has the uid {reference}.") from exc
        path = Path(reference)
        if not path.is_file():
            raise CommandError(f"{reference} is neither a video uid nor a file.")
        video = Video(title=title or path.stem.replace("_", " ").replace("-", " "))
        with path.open("rb") as handle:
            video.source.save(path.name, File(handle), save=False)
        video.save()
        self.stdout.write(f"Added {path.name} as video {video.uid}")
        return video


class _ProgressBar:
    WIDTH = 40

    def __init__(self, stdout) -> None:
        self.stdout = stdout
        self.tty = getattr(sys.stdout, "isatty", lambda: False)()
        self.shown = -1

    def __call__(self, percent: int) -> None:
        if percent == self.shown or (not self.tty and percent < self.shown + 10 and percent != 100):
            return
        self.shown = percent
        filled = self.WIDTH * percent // 100
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {percent:3d}%"
        if self.tty:
            self.stdout.write("\r" + line, ending="")
            self.stdout.flush()
        else:
            self.stdout.write(line)

    def close(self) -> None:
        if self.tty and self.shown >= 0:
            self.stdout.write("")
