"""Reads: seats, slots, who may join or watch, and the creator's numbers."""

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from payments.selectors import has_access

from .models import EvergreenRule, JoinOpen, Occasion, Registration, ReplayView, WebinarPage

# Slots closer than this are not offered: there would be no time to get the link.
EVERGREEN_MIN_LEAD = timedelta(minutes=5)
MAX_EVERGREEN_SLOTS = 60


def site_zone_name() -> str:
    from core.services import brand_settings

    return brand_settings().default_time_zone or settings.TIME_ZONE


def zone_named(name: str | None, *, fallback: str | None = None) -> zoneinfo.ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if candidate and candidate in zoneinfo.available_timezones():
            return zoneinfo.ZoneInfo(candidate)
    return zoneinfo.ZoneInfo("UTC")


# Browsers report time zones through ICU, which still uses some pre-2000s names (Chromium
# says "Asia/Katmandu" and "Asia/Calcutta"). They are valid links in tzdata; we store the
# current name so emails and the creator's lists read as people expect.
LEGACY_ZONE_NAMES = {
    "Asia/Calcutta": "Asia/Kolkata",
    "Asia/Katmandu": "Asia/Kathmandu",
    "Asia/Saigon": "Asia/Ho_Chi_Minh",
    "Asia/Rangoon": "Asia/Yangon",
    "Asia/Dacca": "Asia/Dhaka",
    "Asia/Thimbu": "Asia/Thimphu",
    "Asia/Ulan_Bator": "Asia/Ulaanbaatar",
    "Europe/Kiev": "Europe/Kyiv",
    "Atlantic/Faeroe": "Atlantic/Faroe",
    "America/Godthab": "America/Nuuk",
    "Pacific/Truk": "Pacific/Chuuk",
    "Pacific/Ponape": "Pacific/Pohnpei",
    "America/Buenos_Aires": "America/Argentina/Buenos_Aires",
    "America/Indianapolis": "America/Indiana/Indianapolis",
}


def clean_zone_name(name: str | None) -> str:
    """A known IANA zone (its current name), else the site's zone."""
    name = (name or "").strip()
    name = LEGACY_ZONE_NAMES.get(name, name)
    return name if name in zoneinfo.available_timezones() else site_zone_name()


# --- Seats ---------------------------------------------------------------------------------


def seats_taken(occasion: Occasion) -> int:
    return occasion.registrations.filter(status=Registration.Status.REGISTERED).count()


def seats_left(occasion: Occasion) -> int | None:
    """None: no limit."""
    if not occasion.capacity:
        return None
    return max(0, occasion.capacity - seats_taken(occasion))


def open_occasions(page: WebinarPage, *, now: datetime | None = None):
    """Live sessions one may still register for: scheduled and not over."""
    now = now or timezone.now()
    return [
        occasion
        for occasion in page.occasions.filter(
            kind=Occasion.Kind.LIVE, status=Occasion.Status.SCHEDULED
        ).order_by("starts_at")
        if occasion.ends_at > now
    ]


def next_with_seats(
    page: WebinarPage, *, after: Occasion | None = None, now: datetime | None = None
) -> Occasion | None:
    """The earliest open live session with a free seat (other than ``after``)."""
    occasions = open_occasions(page, now=now)
    taken = dict(
        Registration.objects.filter(occasion__in=occasions, status=Registration.Status.REGISTERED)
        .values_list("occasion")
        .annotate(n=Count("pk"))
    )
    for occasion in occasions:
        if after is not None and occasion.pk == after.pk:
            continue
        if not occasion.capacity or taken.get(occasion.pk, 0) < occasion.capacity:
            return occasion
    return None


# --- Evergreen slots -------------------------------------------------------------------------


def _rule_slots(
    rule: EvergreenRule, *, viewer_zone: zoneinfo.ZoneInfo, start: datetime, until: datetime
):
    zone = zone_named(rule.time_zone) if rule.time_zone else viewer_zone
    day: date = start.astimezone(zone).date() - timedelta(days=1)
    last = until.astimezone(zone).date() + timedelta(days=1)
    weekdays = rule.weekdays
    while day <= last:
        if day.weekday() in weekdays:
            # A wall time a DST change skips reads as the time after it (fold=0), and the
            # round trip through UTC settles on one real instant.
            moment = datetime.combine(day, rule.at, tzinfo=zone).astimezone(UTC)
            if start <= moment <= until:
                yield moment
        day += timedelta(days=1)


def evergreen_slots(
    page: WebinarPage, *, viewer_time_zone: str, now: datetime | None = None
) -> list[datetime]:
    """The slots a viewer in ``viewer_time_zone`` may pick, as UTC instants, soonest first."""
    if not page.is_evergreen:
        return []
    now = now or timezone.now()
    start = now + EVERGREEN_MIN_LEAD
    until = now + timedelta(days=page.evergreen_days_ahead)
    viewer_zone = zone_named(viewer_time_zone, fallback=site_zone_name())
    moments = set()
    for rule in page.evergreen_rules.all():
        moments.update(_rule_slots(rule, viewer_zone=viewer_zone, start=start, until=until))
    return sorted(moments)[:MAX_EVERGREEN_SLOTS]


def evergreen_slot_zone(page: WebinarPage, *, moment: datetime, viewer_time_zone: str) -> str:
    """The zone the slot was defined in: the rule's own, or the viewer's."""
    viewer_zone = zone_named(viewer_time_zone, fallback=site_zone_name())
    for rule in page.evergreen_rules.all():
        if rule.time_zone:
            zone = zone_named(rule.time_zone)
            local = moment.astimezone(zone)
            if local.timetz().replace(tzinfo=None) == rule.at and local.weekday() in rule.weekdays:
                return rule.time_zone
    return str(viewer_zone)


# --- Registrations -----------------------------------------------------------------------


def is_registrant(user, registration: Registration) -> bool:
    if user is None or not user.is_authenticated:
        return False
    if registration.user_id is not None:
        return registration.user_id == user.pk
    return (user.email or "").lower() == registration.email.lower()


def registration_for_user(page: WebinarPage, user) -> Registration | None:
    if user is None or not user.is_authenticated:
        return None
    return (
        Registration.objects.filter(page=page)
        .filter(Q(user=user) | Q(user__isnull=True, email__iexact=user.email))
        .exclude(status=Registration.Status.CANCELLED)
        .select_related("occasion")
        .first()
    )


def holds_ticket(user, page: WebinarPage) -> bool:
    return bool(page.product_id) and has_access(user, page.product_id)


@dataclass(frozen=True)
class ReplayWindow:
    opens_at: datetime
    closes_at: datetime | None  # None: for good


def replay_window(registration: Registration, *, ticket: bool | None = None) -> ReplayWindow:
    """From the start of their session; for ``replay_days`` after its end, or for good
    with a ticket. An evergreen slot is gated the same way: it plays from the slot's
    start."""
    occasion = registration.occasion
    page = registration.page
    if ticket is None:
        ticket = registration.source == Registration.Source.TICKET or (
            registration.user is not None and holds_ticket(registration.user, page)
        )
    closes = None if ticket else occasion.ends_at + timedelta(days=page.replay_days)
    return ReplayWindow(opens_at=occasion.starts_at, closes_at=closes)


def replay_open_for(registration: Registration, *, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    if registration.status != Registration.Status.REGISTERED:
        return False
    if registration.occasion.is_cancelled or not registration.page.replay_video_id:
        return False
    window = replay_window(registration)
    return window.opens_at <= now and (window.closes_at is None or now < window.closes_at)


def replay_video_access(user, video) -> bool:
    """media's question "may this user watch this video?", for webinar replays: a live
    webinar page has it as its replay, and the user holds a registration whose replay
    window is open. Registered with media.access in WebinarsConfig.ready()."""
    if user is None or not user.is_authenticated:
        return False
    pages = WebinarPage.objects.live().filter(replay_video_id=video.pk)
    now = timezone.now()
    for page in pages:
        registration = registration_for_user(page, user)
        if registration is not None and replay_open_for(registration, now=now):
            return True
        # A ticket holder who never picked a session keeps the replay of any that began.
        if (
            registration is None
            and holds_ticket(user, page)
            and page.occasions.filter(
                kind=Occasion.Kind.LIVE, status=Occasion.Status.SCHEDULED, starts_at__lte=now
            ).exists()
        ):
            return True
    return False


# --- The public page -------------------------------------------------------------------------


@dataclass(frozen=True)
class OccasionEntry:
    occasion: Occasion
    seats_left: int | None

    @property
    def full(self) -> bool:
        return self.seats_left == 0


def occasion_entries(page: WebinarPage, *, now: datetime | None = None) -> list[OccasionEntry]:
    occasions = open_occasions(page, now=now)
    taken = dict(
        Registration.objects.filter(occasion__in=occasions, status=Registration.Status.REGISTERED)
        .values_list("occasion")
        .annotate(n=Count("pk"))
    )
    return [
        OccasionEntry(
            occasion=o,
            seats_left=max(0, o.capacity - taken.get(o.pk, 0)) if o.capacity else None,
        )
        for o in occasions
    ]


def webinar_page_view(*, page: WebinarPage, request) -> dict:
    from funnels.forms import rendered_at_token

    user = request.user
    viewer_zone = clean_zone_name(request.GET.get("tz", ""))
    registration = registration_for_user(page, user)
    return {
        "webinar": page,
        "entries": occasion_entries(page),
        "slots": evergreen_slots(page, viewer_time_zone=viewer_zone),
        "viewer_zone": viewer_zone,
        "viewer_zone_given": bool(request.GET.get("tz")),
        "site_zone": site_zone_name(),
        "registration": registration,
        "has_ticket": holds_ticket(user, page) if page.is_paid else False,
        "rendered_at": rendered_at_token(),
    }


# --- Creator numbers ---------------------------------------------------------------------


@dataclass
class OccasionStats:
    occasion: Occasion
    registered: int
    waitlisted: int
    cancelled: int
    attended: int
    replay_viewers: int


@dataclass
class WebinarStats:
    occasions: list[OccasionStats]
    registered: int
    attended: int
    replay_viewers: int
    converted: int


def webinar_stats(page: WebinarPage) -> WebinarStats:
    """Registrations, attendance (join links that let someone in), replay viewers and
    registrants who bought the follow-up offer after registering."""
    by_status = {
        (row["occasion"], row["status"]): row["n"]
        for row in Registration.objects.filter(page=page)
        .values("occasion", "status")
        .annotate(n=Count("pk"))
    }
    attended = dict(
        JoinOpen.objects.filter(registration__page=page, outcome=JoinOpen.Outcome.ADMITTED)
        .values_list("occasion")
        .annotate(n=Count("registration", distinct=True))
    )
    viewers = dict(
        ReplayView.objects.filter(page=page, registration__isnull=False)
        .values_list("registration__occasion")
        .annotate(n=Count("registration", distinct=True))
    )
    rows = []
    for occasion in page.occasions.order_by("starts_at"):
        rows.append(
            OccasionStats(
                occasion=occasion,
                registered=by_status.get((occasion.pk, Registration.Status.REGISTERED), 0),
                waitlisted=by_status.get((occasion.pk, Registration.Status.WAITLISTED), 0),
                cancelled=by_status.get((occasion.pk, Registration.Status.CANCELLED), 0),
                attended=attended.get(occasion.pk, 0),
                replay_viewers=viewers.get(occasion.pk, 0),
            )
        )
    return WebinarStats(
        occasions=rows,
        registered=sum(r.registered for r in rows),
        attended=len(
            set(
                JoinOpen.objects.filter(
                    registration__page=page, outcome=JoinOpen.Outcome.ADMITTED
                ).values_list("registration", flat=True)
            )
        ),
        replay_viewers=len(
            set(
                ReplayView.objects.filter(page=page, registration__isnull=False).values_list(
                    "registration", flat=True
                )
            )
        ),
        converted=len(converted_registration_ids(page)),
    )


def converted_registration_ids(page: WebinarPage) -> set[int]:
    from payments.models import Order

    if page.follow_up_offer_id is None:
        return set()
    paid = {}
    for email, paid_at in Order.objects.filter(
        offer_id=page.follow_up_offer_id,
        status=Order.Status.PAID,
    ).values_list("email", "paid_at"):
        email = (email or "").lower()
        if paid_at and (email not in paid or paid_at < paid[email]):
            paid[email] = paid_at
    result = set()
    for pk, email, created in Registration.objects.filter(page=page).values_list(
        "pk", "email", "created_at"
    ):
        bought = paid.get(email.lower())
        if bought is not None and bought >= created:
            result.add(pk)
    return result


def registrations_table(page: WebinarPage) -> list[dict]:
    attended = set(
        JoinOpen.objects.filter(
            registration__page=page, outcome=JoinOpen.Outcome.ADMITTED
        ).values_list("registration", flat=True)
    )
    watched = set(
        ReplayView.objects.filter(page=page, registration__isnull=False).values_list(
            "registration", flat=True
        )
    )
    converted = converted_registration_ids(page)
    return [
        {
            "registration": r,
            "attended": r.pk in attended,
            "watched": r.pk in watched,
            "converted": r.pk in converted,
        }
        for r in Registration.objects.filter(page=page)
        .select_related("occasion")
        .order_by("-created_at")[:500]
    ]


# --- Join links ------------------------------------------------------------------------------


class JoinState:
    ADMIT = "admit"
    EARLY = "early"
    ENDED = "ended"
    CANCELLED = "cancelled"
    WITHDRAWN = "withdrawn"
    WAITLISTED = "waitlisted"
    SIGN_IN = "sign_in"
    NO_TICKET = "no_ticket"


@dataclass(frozen=True)
class JoinDecision:
    state: str
    opens_at: datetime
    starts_at: datetime
    ends_at: datetime


def join_decision(registration: Registration, *, user, now: datetime | None = None) -> JoinDecision:
    """What a registrant's join link does right now (the link itself is already checked:
    links.registration_for_token)."""
    now = now or timezone.now()
    occasion = registration.occasion
    page = registration.page
    opens_at = occasion.starts_at - timedelta(minutes=page.join_early_minutes)

    def decided(state: str) -> JoinDecision:
        return JoinDecision(state, opens_at, occasion.starts_at, occasion.ends_at)

    if occasion.is_cancelled:
        return decided(JoinState.CANCELLED)
    if registration.status == Registration.Status.CANCELLED:
        return decided(JoinState.WITHDRAWN)
    if registration.status == Registration.Status.WAITLISTED:
        return decided(JoinState.WAITLISTED)
    if registration.source == Registration.Source.TICKET:
        if user is None or not user.is_authenticated:
            return decided(JoinState.SIGN_IN)
        if not holds_ticket(user, page):
            return decided(JoinState.NO_TICKET)
    if now < opens_at:
        return decided(JoinState.EARLY)
    if now >= occasion.ends_at:
        return decided(JoinState.ENDED)
    return decided(JoinState.ADMIT)


def join_target(registration: Registration) -> str:
    """Where an admitted registrant goes: the session's live room, the webinar's, or for
    an evergreen slot the replay player (the recording is the show)."""
    occasion = registration.occasion
    if occasion.kind == Occasion.Kind.EVERGREEN:
        return ""
    return occasion.join_url or registration.page.join_url
