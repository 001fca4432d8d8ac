from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WebinarsConfig(AppConfig):
    name = "webinars"
    verbose_name = _("Webinars")

    def ready(self):
        from wagtail.signals import page_published

        from media.access import register_video_access
        from payments.signals import access_revoked, purchase_completed

        from . import receivers
        from .selectors import replay_video_access

        # The media player asks this on every playlist request: a webinar's replay plays
        # for its registrants within their replay window, and for ticket holders for good.
        register_video_access(replay_video_access)
        page_published.connect(receivers.webinar_published, dispatch_uid="webinars-published")
        purchase_completed.connect(receivers.ticket_bought, dispatch_uid="webinars-ticket")
        access_revoked.connect(receivers.ticket_revoked, dispatch_uid="webinars-ticket-revoked")
