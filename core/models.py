import zoneinfo

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _
from wagtail.admin.panels import FieldPanel, MultiFieldPanel
from wagtail.contrib.settings.models import BaseSiteSetting, register_setting
from wagtail.fields import RichTextField
from wagtail.models import Page

TIME_ZONE_CHOICES = sorted((tz, tz.replace("_", " ")) for tz in zoneinfo.available_timezones())


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(_("%(value)s is not a known time zone."), params={"value": value})


class HomePage(Page):
    """The site's front page: what the creator offers, in their words."""

    tagline = models.CharField(max_length=255, blank=True)
    intro = RichTextField(blank=True, features=["bold", "italic", "link", "ol", "ul"])
    call_to_action_label = models.CharField(max_length=80, blank=True)
    call_to_action_page = models.ForeignKey(
        "wagtailcore.Page",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    content_panels = [
        *Page.content_panels,
        FieldPanel("tagline"),
        FieldPanel("intro"),
        MultiFieldPanel(
            [FieldPanel("call_to_action_label"), FieldPanel("call_to_action_page")],
            heading=_("Call to action"),
        ),
    ]
    max_count = 1
    parent_page_types = ["wagtailcore.Page"]

    class Meta:
        verbose_name = _("home page")


@register_setting(icon="site")
class BrandSettings(BaseSiteSetting):
    """Who the site speaks as: shown in the header and in every email footer."""

    brand_name = models.CharField(max_length=100, default="Lodestone")
    logo = models.ForeignKey(
        "wagtailimages.Image",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    sender_name = models.CharField(
        max_length=100, blank=True, help_text=_("Shown as the sender of every email.")
    )
    sender_email = models.EmailField(
        blank=True, help_text=_("The From address of every email. Use your own domain.")
    )
    postal_address = models.TextField(
        blank=True,
        help_text=_("Printed in every email footer; anti-spam laws require a real address."),
    )
    default_time_zone = models.CharField(
        max_length=64,
        default="UTC",
        choices=TIME_ZONE_CHOICES,
        validators=[validate_time_zone],
        help_text=_("Used for subscribers whose browser did not tell us theirs."),
    )

    panels = [
        MultiFieldPanel([FieldPanel("brand_name"), FieldPanel("logo")], heading=_("Brand")),
        MultiFieldPanel(
            [FieldPanel("sender_name"), FieldPanel("sender_email"), FieldPanel("postal_address")],
            heading=_("Email sender"),
        ),
        FieldPanel("default_time_zone"),
    ]

    class Meta:
        verbose_name = _("brand and sender")

    @property
    def from_email(self) -> str | None:
        from email.headerregistry import Address

        if not self.sender_email:
            return None
        local, _sep, domain = self.sender_email.rpartition("@")
        return str(
            Address(display_name=self.sender_name or self.brand_name, username=local, domain=domain)
        )


class OutboundEmail(models.Model):
    """Every email the site sends is stored here first, then sent by a task.

    The row is the outbox: a request never waits on SMTP, a failure is retried with
    backoff and stays visible, and a periodic sweep re-queues rows that were committed
    but never handed to the broker.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")

    wagtail_reference_index_ignore = True

    kind = models.CharField(max_length=64, db_index=True)
    to = models.EmailField(max_length=254)
    from_email = models.CharField(max_length=320, blank=True)
    subject = models.CharField(max_length=998)
    text_body = models.TextField()
    html_body = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    # [{"filename", "content_type", "content" (text) or "content_base64"}], stored with the
    # row so every retry sends the same files; kept small (core.services caps the size).
    attachments = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    message_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When a worker last claimed the row ("sending"): the claim is a lease, and a row
    # whose lease ran out belongs to a worker that died mid-send.
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "created_at"])]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.subject} → {self.to} ({self.status})"
