"""Webinars: a page with live sessions (or an evergreen schedule), registrations with
capped seats, personal join links, reminders and a gated replay.

Two layers, on purpose:

- ``WebinarPage`` with its inline ``WebinarSession`` rows and ``EvergreenRule`` rows is
  what the creator edits. Wagtail rewrites those rows from the page revision on every
  publish, so they hold nothing the site changes by itself.
- ``Occasion`` is one sitting people register for: a published live session (keyed by the
  session's ``uid``) or an evergreen slot someone picked. Registrations, seats, reminders,
  the calendar UID and SEQUENCE hang on it. ``services.webinar_sessions_sync`` brings
  occasions in line with the page each time it is published (a moved session reschedules
  its reminders, a removed or cancelled one is cancelled for its registrants).
"""

import secrets
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower, Upper
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from modelcluster.fields import ParentalKey
from wagtail.admin.forms import WagtailAdminPageForm
from wagtail.admin.panels import FieldPanel, FieldRowPanel, InlinePanel, MultiFieldPanel
from wagtail.fields import RichTextField
from wagtail.models import Orderable, Page
from wagtail.search import index

from core.models import TIME_ZONE_CHOICES, validate_time_zone

DESCRIPTION_FEATURES = ["h2", "h3", "bold", "italic", "link", "ol", "ul"]
DEFAULT_CONSENT = (
    "Send me the webinar details, reminders and the replay. I can unsubscribe at any time."
)


def new_key() -> str:
    return secrets.token_urlsafe(18)


class WebinarPageForm(WagtailAdminPageForm):
    def clean(self):
        cleaned_data = super().clean()
        if self.instance.product_id and not cleaned_data.get("product"):
            # As for courses: emptying the field would lock ticket holders out.
            cleaned_data["product"] = self.instance.product
        return cleaned_data


class WebinarPage(Page):
    host_name = models.CharField(max_length=200, blank=True, verbose_name=_("host"))
    host_bio = models.TextField(blank=True, verbose_name=_("about the host"))
    description = RichTextField(blank=True, features=DESCRIPTION_FEATURES)
    # Never rendered on a public page: registrants reach it through their personal join
    # link, during the session only.
    join_url = models.URLField(
        max_length=1000,
        blank=True,
        verbose_name=_("live room URL"),
        help_text=_(
            "Zoom, YouTube Live, Jitsi… any link. Never shown publicly: registrants are "
            "sent there by their personal join link once the session opens."
        ),
    )
    join_early_minutes = models.PositiveSmallIntegerField(
        default=10,
        verbose_name=_("doors open (minutes before start)"),
        help_text=_("Before this, a join link shows a countdown instead of the room."),
    )
    consent_text = models.CharField(
        max_length=500,
        default=DEFAULT_CONSENT,
        help_text=_("The box registrants tick. It is stored with each registration."),
    )
    # The webinar as payments knows it: sequences enrol its registrants, and a paid
    # webinar's ticket offer grants it. Created on first save, like a course's product.
    product = models.OneToOneField(
        "payments.Product",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="webinar_page",
        limit_choices_to={"kind": "webinar"},
        help_text=_("Leave empty to create one for this webinar when you save it."),
    )
    ticket_offer = models.ForeignKey(
        "payments.Offer",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_(
            "Set it to sell tickets (the offer must include this webinar's product). "
            "Empty: registration is free."
        ),
    )
    follow_up_offer = models.ForeignKey(
        "payments.Offer",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("What the webinar sells; its purchases by registrants count as conversions."),
    )
    replay_video = models.ForeignKey(
        "lodestone_media.Video",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("The recording. For an evergreen webinar, the video that plays in each slot."),
    )
    replay_days = models.PositiveSmallIntegerField(
        default=7,
        help_text=_(
            "Free registrants may watch the replay this many days after their session "
            "ends. Ticket holders keep it for good."
        ),
    )
    is_evergreen = models.BooleanField(
        default=False,
        verbose_name=_("evergreen"),
        help_text=_("Runs the recording on a schedule; registrants pick a slot."),
    )
    evergreen_duration_minutes = models.PositiveSmallIntegerField(
        default=60, validators=[MinValueValidator(1)], verbose_name=_("slot length (minutes)")
    )
    evergreen_capacity = models.PositiveIntegerField(
        default=0, verbose_name=_("seats per slot"), help_text=_("0: no limit.")
    )
    evergreen_days_ahead = models.PositiveSmallIntegerField(
        default=7,
        validators=[MinValueValidator(1)],
        verbose_name=_("slots offered (days ahead)"),
    )

    content_panels = [
        *Page.content_panels,
        FieldPanel("description"),
        MultiFieldPanel([FieldPanel("host_name"), FieldPanel("host_bio")], heading=_("Host")),
        MultiFieldPanel(
            [FieldPanel("join_url"), FieldPanel("join_early_minutes")],
            heading=_("Live room"),
        ),
        InlinePanel("sessions", heading=_("Live sessions"), label=_("Session")),
        MultiFieldPanel(
            [
                FieldPanel("is_evergreen"),
                FieldRowPanel(
                    [
                        FieldPanel("evergreen_duration_minutes"),
                        FieldPanel("evergreen_capacity"),
                        FieldPanel("evergreen_days_ahead"),
                    ]
                ),
                InlinePanel("evergreen_rules", label=_("Schedule rule")),
            ],
            heading=_("Evergreen schedule"),
        ),
        MultiFieldPanel(
            [FieldPanel("replay_video"), FieldPanel("replay_days")], heading=_("Replay")
        ),
        FieldPanel("consent_text"),
    ]
    settings_panels = [
        MultiFieldPanel(
            [FieldPanel("product"), FieldPanel("ticket_offer"), FieldPanel("follow_up_offer")],
            heading=_("Selling this webinar"),
        ),
        *Page.settings_panels,
    ]
    search_fields = [
        *Page.search_fields,
        index.SearchField("description"),
        index.SearchField("host_name"),
    ]
    base_form_class = WebinarPageForm
    # A copy is a new webinar: its own product, no sessions or rules shared with the
    # original (session uids name calendar events).
    exclude_fields_in_copy = ["product", "sessions"]
    template = "webinars/webinar_page.html"

    class Meta:
        verbose_name = _("webinar")

    @property
    def is_paid(self) -> bool:
        return self.ticket_offer_id is not None

    def get_context(self, request, *args, **kwargs):
        from .selectors import webinar_page_view

        context = super().get_context(request, *args, **kwargs)
        context.update(webinar_page_view(page=self, request=request))
        return context

    def serve(self, request, *args, **kwargs):
        from .views import webinar_page_serve

        return webinar_page_serve(request, self, *args, **kwargs)


class WebinarSession(Orderable):
    """A live session as the creator schedules it: a wall-clock start in a named zone."""

    page = ParentalKey(WebinarPage, on_delete=models.CASCADE, related_name="sessions")
    # Names the session's Occasion and its calendar events; kept across edits.
    uid = models.UUIDField(default=uuid.uuid4, editable=False)
    start_date = models.DateField()
    start_time = models.TimeField()
    time_zone = models.CharField(
        max_length=64, choices=TIME_ZONE_CHOICES, default="UTC", validators=[validate_time_zone]
    )
    duration_minutes = models.PositiveSmallIntegerField(
        default=60, validators=[MinValueValidator(1)]
    )
    capacity = models.PositiveIntegerField(
        default=100, validators=[MinValueValidator(1)], verbose_name=_("seats")
    )
    join_url = models.URLField(
        max_length=1000,
        blank=True,
        verbose_name=_("live room URL for this session"),
        help_text=_("Empty: the webinar's live room."),
    )
    is_cancelled = models.BooleanField(
        default=False,
        verbose_name=_("cancelled"),
        help_text=_("Registrants get a cancellation and their calendars drop the event."),
    )

    panels = [
        FieldRowPanel(
            [FieldPanel("start_date"), FieldPanel("start_time"), FieldPanel("time_zone")]
        ),
        FieldRowPanel([FieldPanel("duration_minutes"), FieldPanel("capacity")]),
        FieldPanel("join_url"),
        FieldPanel("is_cancelled"),
    ]

    class Meta(Orderable.Meta):
        verbose_name = _("webinar session")

    def __str__(self) -> str:
        return f"{self.start_date} {self.start_time} {self.time_zone}"

    @property
    def starts_at(self) -> datetime:
        """The start as an instant (UTC). A wall time that a DST change skips is read as
        the same time after the change (zoneinfo's fold=0)."""
        zone = zoneinfo.ZoneInfo(self.time_zone)
        local = datetime.combine(self.start_date, self.start_time, tzinfo=zone)
        return local.astimezone(UTC)


class EvergreenRule(Orderable):
    """ "Every day at 19:00 in the viewer's time zone", "Tue and Thu 12:00 UTC"."""

    page = ParentalKey(WebinarPage, on_delete=models.CASCADE, related_name="evergreen_rules")
    at = models.TimeField(verbose_name=_("time"))
    time_zone = models.CharField(
        max_length=64,
        blank=True,
        choices=TIME_ZONE_CHOICES,
        validators=[validate_time_zone],
        help_text=_("Empty: the viewer's own time zone."),
    )
    monday = models.BooleanField(default=True)
    tuesday = models.BooleanField(default=True)
    wednesday = models.BooleanField(default=True)
    thursday = models.BooleanField(default=True)
    friday = models.BooleanField(default=True)
    saturday = models.BooleanField(default=True)
    sunday = models.BooleanField(default=True)

    DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

    panels = [
        FieldRowPanel([FieldPanel("at"), FieldPanel("time_zone")]),
        FieldRowPanel([FieldPanel(day) for day in DAYS]),
    ]

    class Meta(Orderable.Meta):
        verbose_name = _("evergreen schedule rule")

    def __str__(self) -> str:
        days = ", ".join(d[:3].title() for d in self.DAYS if getattr(self, d))
        return f"{days} {self.at:%H:%M} {self.time_zone or 'viewer'}"

    def clean(self):
        super().clean()
        if not any(getattr(self, day) for day in self.DAYS):
            raise ValidationError(_("Tick at least one day."))

    @property
    def weekdays(self) -> set[int]:
        return {number for number, day in enumerate(self.DAYS) if getattr(self, day)}


class Occasion(models.Model):
    """One sitting of a webinar that people register for (see the module docstring)."""

    wagtail_reference_index_ignore = True

    class Kind(models.TextChoices):
        LIVE = "live", _("Live session")
        EVERGREEN = "evergreen", _("Evergreen slot")

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")
        CANCELLED = "cancelled", _("Cancelled")

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    page = models.ForeignKey(WebinarPage, on_delete=models.CASCADE, related_name="occasions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    starts_at = models.DateTimeField(db_index=True)
    # The zone the creator scheduled it in (live), or the registrant's own (evergreen slot
    # of a "viewer's time zone" rule): calendar events carry it as their TZID.
    time_zone = models.CharField(max_length=64, default="UTC")
    duration_minutes = models.PositiveSmallIntegerField(default=60)
    capacity = models.PositiveIntegerField(default=0, help_text=_("0: no limit."))
    join_url = models.URLField(max_length=1000, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    # iCalendar SEQUENCE: one more each time the time changes or it is cancelled.
    sequence = models.PositiveIntegerField(default=0)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["starts_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["page", "starts_at"],
                condition=Q(kind="evergreen"),
                name="webinars_evergreen_slot_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.page_id} {self.kind} {self.starts_at:%Y-%m-%d %H:%M} UTC"

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + timedelta(minutes=self.duration_minutes)

    @property
    def is_cancelled(self) -> bool:
        return self.status == self.Status.CANCELLED

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        try:
            return zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return zoneinfo.ZoneInfo("UTC")


class Registration(models.Model):
    """One person's seat for one webinar: one row per webinar and address (a database
    constraint), pointing at the occasion they picked. Switching sessions moves the row."""

    wagtail_reference_index_ignore = True

    class Status(models.TextChoices):
        REGISTERED = "registered", _("Registered")
        WAITLISTED = "waitlisted", _("On the waiting list")
        CANCELLED = "cancelled", _("Cancelled")

    class Source(models.TextChoices):
        FREE = "free", _("Free registration")
        TICKET = "ticket", _("Ticket")

    page = models.ForeignKey(WebinarPage, on_delete=models.CASCADE, related_name="registrations")
    occasion = models.ForeignKey(Occasion, on_delete=models.PROTECT, related_name="registrations")
    email = models.EmailField(max_length=254)
    name = models.CharField(max_length=150, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="webinar_registrations",
    )
    subscriber = models.ForeignKey(
        "funnels.Subscriber",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.FREE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REGISTERED)
    # The secret inside join links: a new one makes every earlier link stop working.
    key = models.CharField(max_length=32, default=new_key)
    consent_text = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                "page", Lower("email"), name="webinars_registration_page_email_unique"
            )
        ]
        indexes = [
            models.Index(fields=["occasion", "status"]),
            # A person's registrations across webinars (their account page, erasure) are
            # found by email__iexact: UPPER(email) on PostgreSQL.
            models.Index(Upper("email"), name="webinars_registration_email_up"),
        ]

    def __str__(self) -> str:
        return f"{self.email} → {self.occasion_id} ({self.status})"

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        try:
            return zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return zoneinfo.ZoneInfo("UTC")


class Reminder(models.Model):
    """A reminder email of one registration: one row per registration and kind, so each
    goes out once. ``due_at`` follows the occasion's start (a move reschedules it)."""

    wagtail_reference_index_ignore = True

    class Kind(models.TextChoices):
        DAY_BEFORE = "24h", _("24 hours before")
        HOUR_BEFORE = "1h", _("1 hour before")
        AT_START = "start", _("At the start")

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting")
        SENT = "sent", _("Sent")
        SKIPPED = "skipped", _("Not sent (too late)")
        CANCELLED = "cancelled", _("Cancelled")

    OFFSETS = {
        Kind.DAY_BEFORE: timedelta(hours=24),
        Kind.HOUR_BEFORE: timedelta(hours=1),
        Kind.AT_START: timedelta(0),
    }
    # A reminder found later than this after its moment (worker down) is not sent: a
    # "starts in an hour" email that arrives after the start helps nobody.
    LATE_AFTER = {
        Kind.DAY_BEFORE: timedelta(hours=6),
        Kind.HOUR_BEFORE: timedelta(minutes=30),
        Kind.AT_START: timedelta(minutes=15),
    }

    registration = models.ForeignKey(
        Registration, on_delete=models.CASCADE, related_name="reminders"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    due_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    sent_at = models.DateTimeField(null=True, blank=True)
    email = models.ForeignKey(
        "core.OutboundEmail", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["due_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["registration", "kind"], name="webinars_reminder_once_per_kind"
            )
        ]
        indexes = [models.Index(fields=["status", "due_at"])]

    def __str__(self) -> str:
        return f"{self.kind} for {self.registration_id} at {self.due_at:%Y-%m-%d %H:%M} ({self.status})"


class JoinOpen(models.Model):
    """A join link opened: attendance when it let them in, a look at the countdown when
    it did not."""

    wagtail_reference_index_ignore = True

    class Outcome(models.TextChoices):
        ADMITTED = "admitted", _("Let in")
        EARLY = "early", _("Too early (countdown)")
        ENDED = "ended", _("After the end")

    registration = models.ForeignKey(
        Registration, on_delete=models.CASCADE, related_name="join_opens"
    )
    occasion = models.ForeignKey(Occasion, on_delete=models.CASCADE, related_name="join_opens")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.registration_id} {self.outcome} at {self.created_at:%Y-%m-%d %H:%M}"


class ReplayView(models.Model):
    """The replay page shown with its video to someone allowed to watch it."""

    wagtail_reference_index_ignore = True

    registration = models.ForeignKey(
        Registration, null=True, blank=True, on_delete=models.CASCADE, related_name="replay_views"
    )
    page = models.ForeignKey(WebinarPage, on_delete=models.CASCADE, related_name="replay_views")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"replay of {self.page_id} by {self.registration_id or self.user_id}"
