"""Drip sequences and broadcasts: what a creator schedules, who is in it, what was sent.

Imported at the end of funnels/models.py (Django looks for an app's models there).

Integrity the sending depends on lives in the database: one open enrolment per subscriber
and sequence, and one delivery row per enrolment and step (or per broadcast and
subscriber) — a second send of the same email cannot be recorded, so it is never made.
"""

import datetime

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from modelcluster.fields import ParentalKey
from modelcluster.models import ClusterableModel
from wagtail.admin.panels import FieldPanel, FieldRowPanel, InlinePanel, MultiFieldPanel
from wagtail.models import Orderable
from wagtail.search import index

from .sequences.widgets import SHORT_SUBJECT, SubjectInput

__all__ = ["Broadcast", "DripDelivery", "Enrolment", "Sequence", "SequenceStep"]

# Never mail anyone between 22:00 and 06:00 their time: windows must sit inside this.
EARLIEST_SEND = datetime.time(6, 0)
LATEST_SEND = datetime.time(22, 0)


def _validate_window(start: datetime.time | None, end: datetime.time | None) -> None:
    if start is None or end is None:
        return
    errors = {}
    if start < EARLIEST_SEND:
        errors["window_start"] = _("Emails never go out before 06:00 in the subscriber's time.")
    if end > LATEST_SEND:
        errors["window_end"] = _("Emails never go out after 22:00 in the subscriber's time.")
    if start >= end:
        errors["window_end"] = _("The window must end after it starts.")
    if errors:
        raise ValidationError(errors)


class Sequence(index.Indexed, ClusterableModel):
    """An ordered series of emails that sells after the opt-in."""

    class Reentry(models.TextChoices):
        ONCE = "once", _("Once ever")
        AFTER_FINISH = "after_finish", _("Again after finishing")

    name = models.CharField(max_length=150)
    description = models.TextField(blank=True, help_text=_("For you; subscribers never see it."))
    window_start = models.TimeField(
        default=datetime.time(6, 0),
        help_text=_("Earliest local time of day an email goes out (not before 06:00)."),
    )
    window_end = models.TimeField(
        default=datetime.time(22, 0),
        help_text=_("Latest local time of day an email goes out (not after 22:00)."),
    )
    weekdays_only = models.BooleanField(
        default=False, help_text=_("Hold emails due on a Saturday or Sunday until Monday.")
    )
    reentry = models.CharField(
        max_length=16,
        choices=Reentry.choices,
        default=Reentry.ONCE,
        help_text=_("Whether someone who went through it can start it again."),
    )
    target_products = models.ManyToManyField(
        "payments.Product",
        blank=True,
        related_name="selling_sequences",
        help_text=_("What this sequence sells: buying one of these ends it for the buyer."),
    )
    enrol_tag = models.CharField(
        max_length=100,
        blank=True,
        help_text=_("Confirmed subscribers who get this tag are enrolled."),
    )
    enrol_products = models.ManyToManyField(
        "payments.Product",
        blank=True,
        related_name="enrolling_sequences",
        help_text=_(
            "Confirmed subscribers who buy, or register for a webinar of, one of these are "
            "enrolled."
        ),
    )
    track_opens = models.BooleanField(
        default=False,
        help_text=_(
            "Add an invisible image that reports opens. Off by default: it tells you when "
            "someone reads, which many readers consider private; and Apple Mail makes the "
            "figure unreliable anyway."
        ),
    )
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    panels = [
        FieldPanel("name"),
        FieldPanel("description"),
        MultiFieldPanel(
            [
                FieldRowPanel([FieldPanel("window_start"), FieldPanel("window_end")]),
                FieldPanel("weekdays_only"),
            ],
            heading=_("Send window (in each subscriber's own time zone)"),
        ),
        MultiFieldPanel(
            [
                FieldPanel("enrol_tag"),
                FieldPanel("enrol_products"),
                FieldPanel("reentry"),
                FieldPanel("target_products"),
            ],
            heading=_("Who enters and who leaves"),
        ),
        FieldPanel("track_opens"),
        InlinePanel("steps", heading=_("Steps"), label=_("Step"), min_num=1),
    ]
    search_fields = [index.SearchField("name"), index.AutocompleteField("name")]

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        super().clean()
        _validate_window(self.window_start, self.window_end)

    @property
    def is_paused(self) -> bool:
        return self.paused_at is not None


class SequenceStep(Orderable):
    """One email of a sequence, sent a delay after enrolment or after the previous step."""

    class Kind(models.TextChoices):
        CONTENT = "content", _("Content (useful on its own)")
        OFFER = "offer", _("Offer (asks for the sale)")

    class DelayFrom(models.TextChoices):
        PREVIOUS = "previous", _("after the previous step")
        ENROLMENT = "enrolment", _("after enrolment")

    wagtail_reference_index_ignore = True

    sequence = ParentalKey(Sequence, on_delete=models.CASCADE, related_name="steps")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CONTENT)
    delay_days = models.PositiveSmallIntegerField(default=1)
    delay_hours = models.PositiveSmallIntegerField(default=0)
    delay_from = models.CharField(
        max_length=16, choices=DelayFrom.choices, default=DelayFrom.PREVIOUS
    )
    subject = models.CharField(
        max_length=200,
        help_text=_(
            "Short subjects open better: aim for %(n)s characters or fewer. "
            "{{ first_name }} is filled in."
        )
        % {"n": SHORT_SUBJECT},
    )
    preheader = models.CharField(
        max_length=200,
        blank=True,
        help_text=_("The grey line inboxes show after the subject."),
    )
    body = models.TextField(
        help_text=_(
            "Plain text; a blank line starts a paragraph. Links: paste the address, or write "
            "[words](https://…). Personalise with {{ first_name }}, "
            '{{ first_name|default:"there" }}, {{ sender_name }}, {{ brand_name }}.'
        )
    )
    button_label = models.CharField(max_length=60, blank=True)
    button_url = models.URLField(max_length=1000, blank=True)
    skip_if_tags = models.CharField(
        max_length=300,
        blank=True,
        help_text=_(
            "Comma-separated; skip this step for subscribers with any of these tags "
            "(purchases add bought:<offer>)."
        ),
    )
    skip_if_owns = models.ForeignKey(
        "payments.Product",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("skip if they own"),
        help_text=_(
            "Skip this step for subscribers who own this product (say, the bump the step "
            "promotes). Owning what the whole sequence sells ends the sequence instead."
        ),
    )
    # The last rendering problem the sender met; shown to the creator, cleared on success.
    render_error = models.TextField(blank=True, editable=False)

    panels = [
        FieldRowPanel([FieldPanel("kind"), FieldPanel("delay_days"), FieldPanel("delay_hours")]),
        FieldPanel("delay_from"),
        FieldPanel("subject", widget=SubjectInput),
        FieldPanel("preheader"),
        FieldPanel("body"),
        FieldRowPanel([FieldPanel("button_label"), FieldPanel("button_url")]),
        FieldRowPanel([FieldPanel("skip_if_tags"), FieldPanel("skip_if_owns")]),
    ]

    class Meta(Orderable.Meta):
        verbose_name = _("step")

    def __str__(self) -> str:
        return self.subject

    @property
    def delay(self) -> datetime.timedelta:
        return datetime.timedelta(days=self.delay_days, hours=self.delay_hours)

    def clean(self):
        super().clean()
        if bool(self.button_label) != bool(self.button_url):
            raise ValidationError(_("A button needs both a label and an address."))
        from .sequences.rendering import template_problems

        problems = template_problems(subject=self.subject, preheader=self.preheader, body=self.body)
        if problems:
            raise ValidationError(problems)


class Enrolment(models.Model):
    """A subscriber's way through one sequence. ``next_send_at`` is the scheduler's index:
    a claim pushes it forward by the claim timeout, so a batch whose worker died comes back
    on its own."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        PAUSED = "paused", _("Paused")
        COMPLETED = "completed", _("Completed")
        EXITED = "exited", _("Exited")

    class Source(models.TextChoices):
        OPTIN = "optin", _("Opt-in form")
        TAG = "tag", _("Tag")
        PURCHASE = "purchase", _("Purchase")
        WEBINAR = "webinar", _("Webinar registration")
        ADMIN = "admin", _("Added by hand")

    class ExitReason(models.TextChoices):
        PURCHASED = "purchased", _("Bought")
        UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
        BOUNCED = "bounced", _("Bounced")
        COMPLAINED = "complained", _("Marked as spam")
        REMOVED = "removed", _("Removed by hand")

    OPEN = (Status.ACTIVE, Status.PAUSED)
    wagtail_reference_index_ignore = True

    # Few indexes on purpose: every claim rewrites the row, and each index costs an entry
    # per rewrite. Open enrolments of a sequence are found through the one-open unique
    # index (it leads with the sequence); the step pointers are only looked up when a step
    # is deleted.
    sequence = models.ForeignKey(
        Sequence, on_delete=models.CASCADE, related_name="enrolments", db_index=False
    )
    subscriber = models.ForeignKey(
        "funnels.Subscriber", on_delete=models.CASCADE, related_name="enrolments"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    source = models.CharField(max_length=16, choices=Source.choices)
    exit_reason = models.CharField(max_length=16, choices=ExitReason.choices, blank=True)
    next_step = models.ForeignKey(
        SequenceStep,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    # Steps done (sent or skipped); points a deleted next step at its successor.
    steps_done = models.PositiveSmallIntegerField(default=0)
    last_step = models.ForeignKey(
        SequenceStep,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    next_send_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    enrolled_at = models.DateTimeField(default=timezone.now)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sequence", "subscriber"],
                condition=Q(status__in=["active", "paused"]),
                name="funnels_enrolment_one_open",
            )
        ]
        indexes = [
            # The scheduler's only scan: due active enrolments, oldest first.
            models.Index(
                fields=["next_send_at"],
                condition=Q(status="active"),
                name="funnels_enrolment_due",
            ),
        ]
        ordering = ["-enrolled_at"]

    def __str__(self) -> str:
        return f"{self.subscriber_id} in {self.sequence_id} ({self.status})"


class Broadcast(models.Model):
    """A one-off email to a segment, sent through the same pipeline, limits and windows."""

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        SCHEDULED = "scheduled", _("Scheduled")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        CANCELLED = "cancelled", _("Cancelled")

    class Bought(models.TextChoices):
        ANY = "", _("Everyone")
        BOUGHT = "bought", _("Only those who bought it")
        NOT_BOUGHT = "not_bought", _("Only those who did not buy it")

    wagtail_reference_index_ignore = True

    name = models.CharField(max_length=150)
    subject = models.CharField(max_length=200)
    preheader = models.CharField(max_length=200, blank=True)
    body = models.TextField(help_text=SequenceStep._meta.get_field("body").help_text)
    button_label = models.CharField(max_length=60, blank=True)
    button_url = models.URLField(max_length=1000, blank=True)
    # The segment. Only confirmed subscribers are ever mailed, whatever else is chosen.
    tags = models.CharField(
        max_length=300, blank=True, help_text=_("Comma-separated; any of these tags.")
    )
    exclude_tags = models.CharField(
        max_length=300, blank=True, help_text=_("Comma-separated; none of these tags.")
    )
    landing_page = models.ForeignKey(
        "funnels.LandingPage",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("Only subscribers who first signed up on this page."),
    )
    utm_source = models.CharField(
        max_length=200, blank=True, help_text=_("Only subscribers whose first utm_source was this.")
    )
    product = models.ForeignKey(
        "payments.Product", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    bought = models.CharField(max_length=16, choices=Bought.choices, blank=True)
    window_start = models.TimeField(default=datetime.time(6, 0))
    window_end = models.TimeField(default=datetime.time(22, 0))
    weekdays_only = models.BooleanField(default=False)
    track_opens = models.BooleanField(default=False)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.DRAFT, editable=False
    )
    send_at = models.DateTimeField(null=True, blank=True, editable=False)
    recipients = models.PositiveIntegerField(default=0, editable=False)
    render_error = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    panels = [
        FieldPanel("name"),
        MultiFieldPanel(
            [
                FieldPanel("subject"),
                FieldPanel("preheader"),
                FieldPanel("body"),
                FieldRowPanel([FieldPanel("button_label"), FieldPanel("button_url")]),
            ],
            heading=_("Email"),
        ),
        MultiFieldPanel(
            [
                FieldRowPanel([FieldPanel("tags"), FieldPanel("exclude_tags")]),
                FieldRowPanel([FieldPanel("landing_page"), FieldPanel("utm_source")]),
                FieldRowPanel([FieldPanel("product"), FieldPanel("bought")]),
            ],
            heading=_("Who gets it (confirmed subscribers only)"),
        ),
        MultiFieldPanel(
            [
                FieldRowPanel([FieldPanel("window_start"), FieldPanel("window_end")]),
                FieldPanel("weekdays_only"),
                FieldPanel("track_opens"),
            ],
            heading=_("Sending"),
        ),
    ]

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        super().clean()
        _validate_window(self.window_start, self.window_end)
        if bool(self.button_label) != bool(self.button_url):
            raise ValidationError(_("A button needs both a label and an address."))
        if self.bought and self.product_id is None:
            raise ValidationError({"product": _("Choose the product the segment is about.")})
        from .sequences.rendering import template_problems

        problems = template_problems(subject=self.subject, preheader=self.preheader, body=self.body)
        if problems:
            raise ValidationError(problems)


class DripDelivery(models.Model):
    """One email of a sequence step or a broadcast to one subscriber: the send ledger.

    The row exists before the email is handed to SMTP and is unique per (enrolment, step)
    and per (broadcast, subscriber): retries, duplicate tasks and racing schedulers all
    meet this row, and only the one that moves it from "queued" to "sending" sends.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        SKIPPED = "skipped", _("Skipped")
        CANCELLED = "cancelled", _("Cancelled")
        FAILED = "failed", _("Failed")

    PENDING = (Status.QUEUED, Status.SENDING)
    wagtail_reference_index_ignore = True

    # Foreign-key indexes left out where a constraint's index already leads with the
    # column: (enrolment, step), (step, status), (broadcast, subscriber).
    enrolment = models.ForeignKey(
        Enrolment,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
    )
    step = models.ForeignKey(
        SequenceStep,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deliveries",
        db_index=False,
    )
    broadcast = models.ForeignKey(
        Broadcast,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
    )
    subscriber = models.ForeignKey(
        "funnels.Subscriber", on_delete=models.CASCADE, related_name="drip_deliveries"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    due_at = models.DateTimeField()
    # Set when a scheduler hands the row to a send task; a claim older than the timeout
    # belongs to a worker that died and is taken over.
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    subject = models.CharField(max_length=998, blank=True)
    message_id = models.CharField(max_length=255, blank=True)
    note = models.TextField(blank=True, help_text=_("Why it was skipped, cancelled or failed."))
    sent_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    clicks = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["enrolment", "step"],
                condition=Q(enrolment__isnull=False, step__isnull=False),
                name="funnels_delivery_once_per_step",
            ),
            models.UniqueConstraint(
                fields=["broadcast", "subscriber"],
                condition=Q(broadcast__isnull=False),
                name="funnels_delivery_once_per_broadcast",
            ),
        ]
        indexes = [
            # Rows waiting for their time (broadcast windows, deferred sends)...
            models.Index(
                fields=["due_at"],
                condition=Q(status="queued", claimed_at__isnull=True),
                name="funnels_delivery_waiting",
            ),
            # ...and claims that may belong to a worker that died.
            models.Index(
                fields=["claimed_at"],
                condition=Q(status__in=["queued", "sending"], claimed_at__isnull=False),
                name="funnels_delivery_claimed",
            ),
            models.Index(
                fields=["message_id"],
                condition=~Q(message_id=""),
                name="funnels_delivery_message_id",
            ),
            models.Index(fields=["step", "status"], name="funnels_delivery_step_status"),
        ]
        ordering = ["-created_at"]
        verbose_name = _("email delivery")
        verbose_name_plural = _("email deliveries")

    def __str__(self) -> str:
        return f"{self.subject or self.pk} → {self.subscriber_id} ({self.status})"
