"""Who was this file delivered to? Reads a leaked file and prints the delivery."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from media.models import DownloadDelivery
from media.stamping.trace import trace_bytes

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".ts", ".m4s", ".avi", ".flv", ".3gp"}


def looks_like_video(path: Path, head: bytes) -> bool:
    """By content first (PDF, EPUB and ZIP are documents whatever their name), then by
    the container signatures of MP4/MOV, Matroska/WebM, MPEG-TS, AVI and FLV, then by
    the file name."""
    if head.startswith((b"%PDF", b"PK\x03\x04", b"PK\x05\x06")) or b"%PDF" in head[:1024]:
        return False
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"styp", b"moof"):
        return True
    if head.startswith((b"\x1a\x45\xdf\xa3", b"FLV")) or head[8:12] == b"AVI ":
        return True
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return True
    return path.suffix.lower() in VIDEO_SUFFIXES


class Command(BaseCommand):
    help = (
        "Find the delivery marker in a leaked PDF, EPUB or ZIP and print who it was "
        "delivered to: buyer, order, date, address. Works on copies whose metadata was "
        "stripped, whose pages were cropped or which were re-saved. Given a video "
        "recording of a lesson with the forensic watermark, reads its A/B pattern and "
        "names the viewer's account, or says it cannot decide."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The leaked file.")

    def handle(self, *args, **options):
        path = Path(options["file"])
        try:
            with path.open("rb") as handle:
                head = handle.read(4096)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from exc
        if looks_like_video(path, head):
            return self._trace_video(path, verbosity=options.get("verbosity", 1))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from exc
        trace = trace_bytes(data)
        self.stdout.write(f"File: {path} ({len(data):,} bytes, sha256 {trace.sha256})")
        if not trace.markers:
            for name, email, order in trace.visible_stamps:
                self.stdout.write(
                    f"Only a visible stamp was left: {name} <{email}>"
                    + (f", order {order}" if order else "")
                    + ". It can be forged; check the ledger by hand."
                )
            raise CommandError(f"No marker found in {path}: it cannot be traced to a delivery.")
        known = DownloadDelivery.objects.in_bulk(list(trace.markers), field_name="marker")
        for marker, places in trace.markers.items():
            self.stdout.write("")
            self.stdout.write(f"Marker {marker}, found in: {', '.join(sorted(places))}")
            delivery = known.get(marker)
            if delivery is None:
                self.stdout.write(
                    "  Not in this site's ledger: made by another Lodestone site, or the "
                    "ledger row was deleted."
                )
                continue
            self._print_delivery(delivery, trace.sha256)
        if not known:
            raise CommandError("Markers were found, but none names a delivery in this ledger.")

    def _print_delivery(self, d: DownloadDelivery, leaked_sha256: str) -> None:
        who = d.recipient_name or (d.user.get_full_name() if d.user else "")
        email = d.subscriber_email or (d.user.email if d.user else "")
        account = f" (account #{d.user_id})" if d.user_id else " (lead-magnet subscriber)"
        lines = [
            f"  Delivered to: {who} <{email}>{account}".replace(" <>", ""),
            f"  Order:        {d.order_reference or '-'}",
            f"  Date:         {d.created_at:%Y-%m-%d %H:%M:%S %Z}",
            f"  From:         {d.ip_address or 'unknown address'}, {d.user_agent or 'unknown browser'}",
            f"  File:         {d.download_filename} = {d.source_name}",
            f"  File version: sha256 {d.source_sha256}",
            f"  Sent:         {d.sent_size or 0:,} bytes, sha256 {d.sent_sha256}"
            + ("" if d.stamped else " (sent unstamped)"),
            "  This copy is "
            + (
                "byte for byte the file that was sent."
                if d.sent_sha256 == leaked_sha256
                else "not byte-identical to what was sent: it was altered after delivery."
            ),
            f"  Ledger row:   {d.uid}",
        ]
        self.stdout.write("\n".join(lines))

    def _trace_video(self, path: Path, *, verbosity: int) -> None:
        from media.watermark.trace import NAMED, trace_video

        self.stdout.write(f"File: {path} ({path.stat().st_size:,} bytes, video)")
        trace = trace_video(path)
        out = self.stdout.write
        if trace.video is not None and trace.alignment is not None:
            out(f"Lesson video: “{trace.video.title}” ({trace.video.uid})")
            out(
                f"  Alignment:  frame correlation {trace.alignment.score:.2f} over "
                f"{trace.alignment.overlap} frames; the recording starts at lesson frame "
                f"{trace.alignment.offset}"
            )
        if trace.reading is not None and trace.params is not None:
            seen = [b for b in trace.reading.betas if b is not None]
            margins = [abs(b - 0.5) for b in seen]
            out(
                f"  Segments:   {len(seen)} of {len(trace.reading.betas)} read "
                f"(contrast gain {trace.reading.gain:.2f}, noise {trace.reading.noise:.2f} "
                f"levels, smallest decision margin {min(margins, default=0):.2f})"
            )
            decoded = trace.decoded
            out(
                f"  Code:       Reed–Solomon ({trace.params.n}, {trace.params.k}) over GF(16); "
                f"{decoded.erased_symbols} symbols erased, {decoded.corrected_symbols} corrected"
                + (f"; id {decoded.message}" if decoded.message is not None else "")
            )
            if verbosity >= 2:
                for index, (beta, frames) in enumerate(
                    zip(trace.reading.betas, trace.reading.frames, strict=True)
                ):
                    reading = "—" if beta is None else f"{beta:+.2f} ({'B' if beta > 0.5 else 'A'})"
                    out(f"    segment {index:3d}: {reading:>12}  {frames} frames")
        if trace.compared:
            out(
                f"  Score:      {trace.agree} of {trace.compared} readable positions agree; "
                f"chance that a viewer unrelated to the recording fits as well: "
                f"{trace.chance:.1e} ({trace.ledger_size} viewers in the ledger)"
            )
        if trace.runner_up is not None:
            other, agree = trace.runner_up
            out(f"  Next best:  {agree} of {trace.compared} (delivery {other.uid})")
        if trace.verdict != NAMED:
            raise CommandError(trace.summary)
        d = trace.delivery
        who = "signed-out viewers of a free preview" if d.anonymous else d.viewer_email
        account = f" (account #{d.user_id})" if d.user_id else ""
        if d.user_id and d.user and d.user.email != d.viewer_email:
            account += f", now {d.user.email}"
        out("")
        out(self.style.SUCCESS(f"Streamed to: {who}{account}"))
        out(f"  First played: {d.created_at:%Y-%m-%d %H:%M:%S %Z}")
        out(
            f"  From:         {d.ip_address or 'unknown address'}, {d.user_agent or 'unknown browser'}"
        )
        out(f"  Ledger row:   {d.uid}")
