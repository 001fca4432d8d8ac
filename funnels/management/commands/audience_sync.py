"""Bulk-sync existing subscribers to the Mailchimp audience, one batch operation per chunk.

For the first connection of an audience, or after Mailchimp was switched off for a while:
day-to-day changes go one by one from funnels.tasks. Every operation is an upsert of the
current state, so running the command twice, or after a failure, is safe.
"""

import argparse
from collections.abc import Sequence

from django.core.management.base import BaseCommand, CommandError

from funnels import audience
from funnels.models import Subscriber
from funnels.tasks import audience_sync_batch

# Pending subscribers are left out: upserted as "pending", Mailchimp would send its own
# confirmation email on top of ours.
SYNCABLE_STATUSES = [s for s in Subscriber.Status.values if s != Subscriber.Status.PENDING]
# Mailchimp advises keeping a batch to a few thousand operations; each subscriber is one
# or two (the upsert, then its tags).
MAX_BATCH_SIZE = 5000


def batch_size(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a whole number from 1 to {MAX_BATCH_SIZE}"
        )
    return int(value)


class ProgressLine:
    """A one-line progress bar redrawn with a carriage return on a terminal; elsewhere (cron,
    CI logs) one plain line per step, since a carriage return would only add clutter."""

    WIDTH = 30

    def __init__(self, stream, total: int, label: str):
        self.stream = stream
        self.total = total
        self.label = label
        self.tty = stream.isatty()

    def update(self, done: int) -> None:
        share = done / self.total if self.total else 1
        count = f"{done}/{self.total} ({share:.0%})"
        if self.tty:
            filled = round(self.WIDTH * share)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(f"\r{self.label} [{bar}] {count}", style_func=str, ending="")
            self.stream.flush()
        else:
            self.stream.write(f"{self.label}: {count}", style_func=str)

    def close(self) -> None:
        if self.tty:
            self.stream.write("", style_func=str)


def chunked(items: Sequence[int], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Command(BaseCommand):
    help = (
        "Send existing subscribers to the Mailchimp audience through batch operations, "
        "one batch per chunk."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--status",
            choices=SYNCABLE_STATUSES,
            default=Subscriber.Status.CONFIRMED,
            help="Which subscribers to send (default: confirmed). Pending ones are never sent.",
        )
        parser.add_argument(
            "--batch-size",
            type=batch_size,
            default=500,
            help=f"Subscribers per Mailchimp batch, 1 to {MAX_BATCH_SIZE} (default: 500).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count the subscribers and batches; send nothing.",
        )
        parser.add_argument(
            "--queue",
            action="store_true",
            help="Queue one Celery task per batch (retried with backoff) instead of sending "
            "from this process.",
        )

    def handle(self, *args, status: str, batch_size: int, dry_run: bool, queue: bool, **options):
        if not dry_run and not audience.enabled():
            raise CommandError(
                "Mailchimp is not configured: set MAILCHIMP_API_KEY and MAILCHIMP_AUDIENCE_ID "
                "(and MAILCHIMP_SERVER_PREFIX if the key has no '-us1'-style suffix)."
            )
        ids = list(
            Subscriber.objects.filter(status=status).order_by("pk").values_list("pk", flat=True)
        )
        chunks = list(chunked(ids, batch_size))
        if dry_run:
            self.stdout.write(
                f"Dry run: {len(ids)} {status} subscriber(s) would go to Mailchimp in "
                f"{len(chunks)} batch(es) of up to {batch_size}. Nothing was sent."
                + ("" if audience.enabled() else " (Mailchimp is not configured yet.)")
            )
            return
        if not ids:
            self.stdout.write(f"No {status} subscribers to send.")
            return

        progress = ProgressLine(
            self.stderr, len(ids), "Queueing" if queue else "Sending to Mailchimp"
        )
        progress.update(0)
        sent = 0
        batch_ids: list[str] = []
        for chunk in chunks:
            if queue:
                audience_sync_batch.delay(list(chunk))
            else:
                try:
                    batch_ids.append(self.send(chunk))
                except audience.AudienceError as exc:
                    progress.close()
                    raise CommandError(
                        f"Stopped after {sent} of {len(ids)} subscriber(s) "
                        f"({len(batch_ids)} batch(es)): {exc}\n"
                        + (
                            "The error is temporary; run the command again (what was sent "
                            "is simply sent again), or use --queue to retry with backoff."
                            if exc.retryable
                            else "Check the Mailchimp settings and the audience, then run "
                            "the command again."
                        )
                    ) from exc
            sent += len(chunk)
            progress.update(sent)
        progress.close()

        if queue:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Queued {sent} {status} subscriber(s) in {len(chunks)} batch task(s)."
                )
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Sent {sent} {status} subscriber(s) to Mailchimp in {len(batch_ids)} batch(es)."
            )
        )
        self.stdout.write("Mailchimp batch ids (its API shows each batch's per-member results):")
        for batch_id in batch_ids:
            self.stdout.write(f"  {batch_id}")

    def send(self, chunk: Sequence[int]) -> str:
        subscribers = list(
            Subscriber.objects.filter(pk__in=chunk).prefetch_related("tagged_items__tag")
        )
        try:
            batch_id = audience.members_batch(subscribers)
        except audience.AudienceError as exc:
            Subscriber.objects.filter(pk__in=chunk).update(audience_sync_error=str(exc)[:2000])
            raise
        # As the sync tasks record it: the tags sent become the remembered set (removals
        # are sent inactive next time), and a row edited meanwhile stays due.
        audience.subscribers_mark_synced(
            subscribers=subscribers,
            tags_sent={s.pk: audience.subscriber_tag_names(s) for s in subscribers},
        )
        return batch_id
