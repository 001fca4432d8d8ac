from django.core.management.base import BaseCommand, CommandError

from payments import exceptions, webhooks
from payments.models import StripeEvent


class Command(BaseCommand):
    help = "Process a Stripe event again (one that failed, or --force a processed one)."

    def add_arguments(self, parser):
        parser.add_argument("event_ids", nargs="*", metavar="EVT_ID")
        parser.add_argument(
            "--failed", action="store_true", help="Replay every stored event that failed."
        )
        parser.add_argument(
            "--force", action="store_true", help="Also re-run events already processed."
        )

    def handle(self, *args, event_ids, failed, force, **options):
        if failed:
            event_ids = [
                *event_ids,
                *StripeEvent.objects.filter(processed_at__isnull=True)
                .exclude(last_error="")
                .order_by("received_at")
                .values_list("stripe_id", flat=True),
            ]
        if not event_ids:
            raise CommandError("Name at least one event id, or use --failed.")
        problems = 0
        for event_id in event_ids:
            try:
                result = webhooks.stripe_event_replay(stripe_id=event_id, force=force)
            except exceptions.EventProcessingFailed as exc:
                problems += 1
                self.stdout.write(self.style.ERROR(f"{event_id}: failed again: {exc}"))
                continue
            if result.processed_now:
                self.stdout.write(self.style.SUCCESS(f"{event_id}: processed"))
            else:
                self.stdout.write(f"{event_id}: already processed (use --force to run again)")
        if problems:
            raise CommandError(f"{problems} event(s) failed; see last_error on each.")
