import stripe
from django.core.management.base import BaseCommand, CommandError

from payments import services
from payments.models import Offer


class Command(BaseCommand):
    help = "Create or update the Stripe Products and Prices of offers (all, or by slug)."

    def add_arguments(self, parser):
        parser.add_argument("slugs", nargs="*")

    def handle(self, *args, slugs, **options):
        offers = Offer.objects.order_by("pk")
        if slugs:
            offers = offers.filter(slug__in=slugs)
        failures = 0
        for offer in offers:
            try:
                synced = services.offer_sync_to_stripe(offer_id=offer.pk)
            except stripe.StripeError as exc:
                failures += 1
                self.stdout.write(self.style.ERROR(f"{offer.slug}: {exc}"))
                continue
            self.stdout.write(self.style.SUCCESS(f"{offer.slug}: {synced.stripe_product_id}"))
        if failures:
            raise CommandError(f"{failures} offer(s) failed to sync.")
