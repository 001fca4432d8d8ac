from django.apps import AppConfig


class FunnelsConfig(AppConfig):
    name = "funnels"

    def ready(self):
        # Purchases, subscriber tags and the email provider's events reach the sequence
        # services through these receivers, in web and worker processes alike.
        from .sequences import receivers

        receivers.connect()
