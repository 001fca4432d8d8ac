"""Who was this file delivered to? Reads a leaked file and prints the delivery."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from media.models import DownloadDelivery
from media.stamping.trace import trace_bytes


class Command(BaseCommand):
    help = (
        "Find the delivery marker in a leaked PDF, EPUB or ZIP and print who it was "
        "delivered to: buyer, order, date, address. Works on copies whose metadata was "
        "stripped, whose pages were cropped or which were re-saved."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The leaked file.")

    def handle(self, *args, **options):
        path = Path(options["file"])
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
