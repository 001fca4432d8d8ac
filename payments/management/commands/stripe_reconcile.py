from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError

from payments import webhooks


def _date(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--since wants a date like 2026-11-01, not {value!r}.") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Fetch Stripe events created since a date and process any that never reached the "
        "webhook. Safe to run again: processed events are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--since",
            type=_date,
            default=None,
            help="ISO date or datetime (UTC unless it says otherwise). Default: 3 days ago.",
        )

    def handle(self, *args, since, **options):
        if isinstance(since, str):  # call_command(..., since="2026-11-01") skips argparse
            since = _date(since)
        since = since or datetime.now(tz=UTC) - timedelta(days=3)
        report = webhooks.stripe_reconcile(since=since)
        self.stdout.write(
            f"Events since {since:%Y-%m-%d %H:%M} UTC: {report.seen} seen, "
            f"{report.processed} processed now, {report.already_done} already done, "
            f"{len(report.failed)} failed."
        )
        for event_id in report.failed:
            self.stdout.write(self.style.ERROR(f"  failed: {event_id} (stripe_replay {event_id})"))
        if report.failed:
            raise CommandError("Some events failed; their errors are stored on the events.")
