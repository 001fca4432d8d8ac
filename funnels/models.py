"""Subscribers, consent, lead magnets and landing pages.

Integrity that the business depends on is enforced by the database: one subscriber per
address whatever its case, one confirmation token per hash, consent rows never updated.
"""

import uuid

from django.db import models
from django.db.models.functions import Lower, Upper
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from taggit.managers import TaggableManager
from taggit.models import TaggedItemBase
from wagtail.admin.panels import FieldPanel, MultiFieldPanel
from wagtail.contrib.routable_page.models import RoutablePageMixin, path
from wagtail.fields import RichTextField, StreamField
from wagtail.models import Page
from wagtail.search import index

from core.models import validate_time_zone
from media.storage import protected_field_storage

from .blocks import LandingPageBlocks


class LeadMagnet(index.Indexed, models.Model):
    """A free thing traded for an email address: a file, sent by a delivery email."""

    title = models.CharField(max_length=200)
    description = RichTextField(blank=True, features=["bold", "italic", "link", "ul", "ol"])
    cover = models.ForeignKey(
        "wagtailimages.Image", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    file = models.FileField(
        storage=protected_field_storage,
        upload_to="lead-magnets/%Y/%m/",
        help_text=_("PDF, EPUB, audio or zip. Stored privately; sent by expiring links only."),
    )
    download_filename = models.CharField(
        max_length=200,
        blank=True,
        help_text=_("File name the subscriber sees, e.g. launch-checklist.pdf."),
    )
    delivery_subject = models.CharField(
        max_length=150,
        default="Here is your download: {title}",
        help_text=_("{title} and {first_name} are filled in."),
    )
    delivery_body = models.TextField(
        default=(
            "Hi {first_name},\n\nThank you for confirming. Your copy of {title} is ready:\n\n"
            "{download_url}\n\nThe link stays valid for 30 days.\n"
        ),
        help_text=_("Plain text. {first_name}, {title} and {download_url} are filled in."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    panels = [
        FieldPanel("title"),
        FieldPanel("description"),
        FieldPanel("cover"),
        MultiFieldPanel(
            [FieldPanel("file"), FieldPanel("download_filename")], heading=_("Deliverable")
        ),
        MultiFieldPanel(
            [FieldPanel("delivery_subject"), FieldPanel("delivery_body")],
            heading=_("Delivery email"),
        ),
    ]
    search_fields = [index.SearchField("title"), index.AutocompleteField("title")]

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    @property
    def filename(self) -> str:
        return self.download_filename or self.file.name.rsplit("/", 1)[-1]


class SubscriberTag(TaggedItemBase):
    content_object = models.ForeignKey(
        "funnels.Subscriber", related_name="tagged_items", on_delete=models.CASCADE
    )
    # Plain data rows: Wagtail's reference index has nothing to learn from them.
    wagtail_reference_index_ignore = True


class Subscriber(models.Model):
    wagtail_reference_index_ignore = True

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending confirmation")
        CONFIRMED = "confirmed", _("Confirmed")
        UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
        BOUNCED = "bounced", _("Bounced")
        COMPLAINED = "complained", _("Complained")

    # Stored as typed but for case (local part and domain lower-cased, Unicode NFC);
    # unique case-insensitively by the index below.
    email = models.EmailField(max_length=254)
    name = models.CharField(max_length=150, blank=True)
    time_zone = models.CharField(max_length=64, validators=[validate_time_zone])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    tags = TaggableManager(through=SubscriberTag, blank=True)
    first_touch = models.ForeignKey(
        "funnels.Touch", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_touch = models.ForeignKey(
        "funnels.Touch", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    # Mailchimp audience sync: when it last succeeded, and the last error the creator sees.
    audience_synced_at = models.DateTimeField(null=True, blank=True)
    audience_sync_error = models.TextField(blank=True)
    # The outbox mark of an edit Mailchimp has not received yet (name, tags: an admin edit),
    # set in the edit's own transaction. Only the sync that sent the row as it stood with
    # this very mark clears it (funnels.audience.subscribers_mark_synced), so an edit
    # committed while a sync was on its way stays due.
    audience_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The tag names Lodestone last sent as active, recorded by the sync that sent them
    # (funnels.audience.subscribers_mark_synced). A name here but no longer on the
    # subscriber goes to Mailchimp as inactive; tags a creator set in Mailchimp itself
    # were never here, so they are left alone.
    audience_tags_sent = models.JSONField(default=list, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("email"), name="funnels_subscriber_email_ci_unique"),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            # The beat sweep reads the marked rows (funnels.audience.subscribers_sync_due):
            # a handful among every subscriber there is.
            models.Index(
                fields=["audience_changed_at"],
                condition=models.Q(audience_changed_at__isnull=False),
                name="funnels_subscriber_mc_due",
            ),
            # Lookups by address use email__iexact, which PostgreSQL runs as UPPER(email) =
            # UPPER(%s): the unique index on LOWER(email) cannot answer it, this one does.
            models.Index(Upper("email"), name="funnels_subscriber_email_up"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.email

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.strip() else ""


class Touch(models.Model):
    """One arrival through a form: where from. Append-only; first and last touch point here."""

    wagtail_reference_index_ignore = True

    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="touches")
    landing_page = models.ForeignKey(
        "funnels.LandingPage", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    form_id = models.CharField(max_length=64, blank=True)
    utm_source = models.CharField(max_length=200, blank=True, db_index=True)
    utm_medium = models.CharField(max_length=200, blank=True)
    utm_campaign = models.CharField(max_length=200, blank=True)
    utm_term = models.CharField(max_length=200, blank=True)
    utm_content = models.CharField(max_length=200, blank=True)
    referrer = models.URLField(max_length=1000, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.landing_page_id or '-'} / {self.utm_source or 'direct'}"


class ConsentRecord(models.Model):
    """The consent ledger: proof of what each subscriber agreed to, when and where.

    Append-only: on PostgreSQL a trigger (migration 0002) refuses UPDATE; rows are
    deleted only by an erasure request, which leaves a Suppression behind.
    """

    wagtail_reference_index_ignore = True

    class Action(models.TextChoices):
        GRANTED = "granted", _("Consent given")
        CONFIRMED = "confirmed", _("Address confirmed")
        WITHDRAWN = "withdrawn", _("Consent withdrawn")

    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="consents")
    action = models.CharField(max_length=16, choices=Action.choices)
    email = models.EmailField(max_length=254)
    consent_text = models.TextField(blank=True)
    # Plain values, not a foreign key: the proof must outlive the page, and the ledger is
    # never updated (a SET NULL on page deletion would be an update).
    landing_page_id = models.PositiveIntegerField(null=True, blank=True, db_index=True)
    page_url = models.CharField(max_length=500, blank=True)
    form_id = models.CharField(max_length=64, blank=True)
    form_version = models.CharField(max_length=64, blank=True, help_text=_("Page revision id."))
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.email} {self.action} {self.created_at:%Y-%m-%d %H:%M}"


class SubscriberToken(models.Model):
    """A single-use, expiring secret bound to one subscriber and one purpose.

    Only a SHA-256 of the secret is stored; the secret itself travels in the email.
    """

    wagtail_reference_index_ignore = True

    class Purpose(models.TextChoices):
        CONFIRM = "confirm", _("Confirm subscription")

    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="tokens")
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    landing_page = models.ForeignKey(
        "funnels.LandingPage", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    magnet = models.ForeignKey(LeadMagnet, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.purpose} for {self.subscriber_id}"


class SignUp(models.Model):
    """One opt-in form submission, exactly as received.

    The request stores this row in a single INSERT and answers; a Celery task
    (funnels.tasks_signups) turns it into subscriber, touch, consent, tags, token and email.
    So the lead is on disk before anything downstream can fail, and a launch-day burst costs
    the web tier one insert per sign-up. Values are plain copies, not foreign keys: the
    proof of what was shown must outlive the page, the form and the magnet.
    """

    wagtail_reference_index_ignore = True

    class Status(models.TextChoices):
        RECEIVED = "received", _("Waiting to be processed")
        PROCESSED = "processed", _("Processed")
        FAILED = "failed", _("Failed")

    email = models.EmailField(max_length=254, help_text=_("Normalised (lower case, NFC)."))
    name = models.CharField(max_length=150, blank=True)
    time_zone = models.CharField(max_length=64, blank=True)
    landing_page_id = models.PositiveIntegerField(db_index=True)
    form_id = models.CharField(max_length=64)
    form_version = models.CharField(max_length=64, blank=True, help_text=_("Page revision id."))
    page_url = models.CharField(max_length=500, blank=True)
    magnet_id = models.PositiveIntegerField(null=True, blank=True)
    consent_text = models.TextField(blank=True)
    double_opt_in = models.BooleanField(default=True)
    tags = models.CharField(max_length=500, blank=True)
    utm_source = models.CharField(max_length=200, blank=True)
    utm_medium = models.CharField(max_length=200, blank=True)
    utm_campaign = models.CharField(max_length=200, blank=True)
    utm_term = models.CharField(max_length=200, blank=True)
    utm_content = models.CharField(max_length=200, blank=True)
    referrer = models.CharField(max_length=1000, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    # The same submission posted twice (a double click, a browser retry) has the same key:
    # the second INSERT is refused by the database and answered like the first.
    dedupe_key = models.CharField(max_length=64, unique=True, null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    outcome = models.CharField(max_length=32, blank=True)
    subscriber = models.ForeignKey(
        Subscriber, null=True, blank=True, on_delete=models.SET_NULL, related_name="signups"
    )
    created_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("sign-up")
        indexes = [
            models.Index(fields=["status", "created_at"]),
            # The drain reads the waiting ones in id order (funnels.services.signups_waiting).
            models.Index(
                fields=["id"],
                condition=models.Q(status="received"),
                name="funnels_signup_waiting",
            ),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} ({self.get_status_display()})"


class MagnetDelivery(models.Model):
    """Every lead-magnet download handed out: who, which file, when, from where."""

    wagtail_reference_index_ignore = True

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="deliveries")
    magnet = models.ForeignKey(LeadMagnet, on_delete=models.CASCADE, related_name="deliveries")
    file_name = models.CharField(max_length=500)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.magnet_id} to {self.subscriber_id} at {self.created_at:%Y-%m-%d %H:%M}"


class Suppression(models.Model):
    """An erased or blocked address, kept only as a keyed hash so it is never mailed again."""

    wagtail_reference_index_ignore = True

    email_hash = models.CharField(max_length=64, unique=True)
    reason = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"suppressed ({self.reason})"


class PageVisitDay(models.Model):
    """Landing-page visits per day, counted by a beacon so cached pages count too."""

    wagtail_reference_index_ignore = True

    landing_page = models.ForeignKey(
        "funnels.LandingPage", on_delete=models.CASCADE, related_name="+"
    )
    day = models.DateField()
    visits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["landing_page", "day"], name="funnels_visit_day_unique")
        ]

    def __str__(self) -> str:
        return f"{self.landing_page_id} {self.day}: {self.visits}"


class LandingPage(RoutablePageMixin, Page):
    """A page a creator assembles from blocks; its opt-in forms trade an email for a magnet."""

    body = StreamField(LandingPageBlocks(), use_json_field=True, blank=True)
    share_image = models.ForeignKey(
        "wagtailimages.Image",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("Shown when the page is shared on social networks (1200×630)."),
    )

    content_panels = [*Page.content_panels, FieldPanel("body")]
    promote_panels = [*Page.promote_panels, FieldPanel("share_image")]
    search_fields = [*Page.search_fields, index.SearchField("body")]

    class Meta:
        verbose_name = _("landing page")

    def optin_forms(self) -> dict:
        return {block.id: block.value for block in self.body if block.block_type == "optin_form"}

    def get_context(self, request, *args, **kwargs):
        from .forms import rendered_at_token

        context = super().get_context(request, *args, **kwargs)
        # Views re-rendering a failed submission override the last three.
        context.update(
            optin_rendered_at=rendered_at_token(),
            optin_errors={},
            optin_bound_id=None,
            optin_bound_form=None,
        )
        return context

    @path("thanks/", name="optin_thanks")
    def optin_thanks(self, request):
        return self.render(request, template="funnels/optin_thanks.html")


from .models_sequences import *  # noqa: E402,F403
