"""Reads for the funnel: token checks and the creator's numbers."""

import hashlib
import time
from dataclasses import dataclass
from datetime import date, timedelta

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from wagtail.models import Page

from . import exceptions
from .models import ConsentRecord, LandingPage, PageVisitDay, SubscriberToken, Touch


@dataclass(frozen=True)
class OptInFormSpec:
    """What the sign-up request needs of one opt-in form, read once per page revision."""

    page_id: int
    form_id: str
    form_version: str
    magnet_id: int | None
    consent_text: str
    double_opt_in: bool
    tags: str
    page_url: str
    thanks_url: str


# page id -> (when read, when last checked, revision, {form id: spec}); per process. Parsing
# a page's StreamField costs more than the whole sign-up insert, so a launch-day burst parses
# each published revision once per worker. Privacy restrictions are re-read now and then.
_FORM_SPECS: dict[int, tuple[float, float, int | None, dict[str, OptInFormSpec]]] = {}
FORM_SPEC_RECHECK_SECONDS = 30.0


def optin_form_specs_of(page: LandingPage) -> dict[str, OptInFormSpec]:
    version = str(page.live_revision_id or page.latest_revision_id or "")
    page_url = page.full_url or page.url or ""
    thanks_url = (page.url or "/") + page.reverse_subpage("optin_thanks")
    specs = {}
    for form_id, form in page.optin_forms().items():
        magnet = form.get("magnet")
        specs[str(form_id)] = OptInFormSpec(
            page_id=page.pk,
            form_id=str(form_id),
            form_version=version,
            magnet_id=magnet.pk if magnet is not None else None,
            consent_text=form.get("consent_text") or "",
            double_opt_in=bool(form.get("double_opt_in", True)),
            tags=form.get("tags") or "",
            page_url=page_url[:500],
            thanks_url=thanks_url,
        )
    return specs


def optin_form_specs(*, page_id: int) -> dict[str, OptInFormSpec] | None:
    """The opt-in forms of a live, public landing page; None when there is no such page.

    One indexed SELECT (is the page live, at which revision) at most every
    settings.FUNNELS_FORM_SPEC_TRUST_SECONDS per page and process — a publish or unpublish
    reaches the opt-in endpoint within that time, as it reaches an edge-cached page within
    its purge; the forms are parsed again only when the revision changes.
    """
    now = time.monotonic()
    cached = _FORM_SPECS.get(page_id)
    trust = getattr(settings, "FUNNELS_FORM_SPEC_TRUST_SECONDS", 0)
    if cached and now - cached[1] < trust:
        return cached[3]
    row = (
        Page.objects.filter(pk=page_id, live=True)
        .values_list("live_revision_id", "latest_revision_id")
        .first()
    )
    if row is None:
        _FORM_SPECS.pop(page_id, None)
        return None
    revision = row[0] or row[1]
    if cached and cached[2] == revision and now - cached[0] < FORM_SPEC_RECHECK_SECONDS:
        _FORM_SPECS[page_id] = (cached[0], now, revision, cached[3])
        return cached[3]
    page = LandingPage.objects.live().public().filter(pk=page_id).first()
    if page is None:
        _FORM_SPECS.pop(page_id, None)
        return None
    specs = optin_form_specs_of(page)
    _FORM_SPECS[page_id] = (now, now, revision, specs)
    return specs


def confirm_token_problem(token: str) -> exceptions.FunnelError | None:
    """Why a confirmation token cannot be used, or None when it can."""
    row = SubscriberToken.objects.filter(
        token_hash=hashlib.sha256((token or "").encode()).hexdigest(),
        purpose=SubscriberToken.Purpose.CONFIRM,
    ).first()
    if row is None:
        return exceptions.TokenInvalid()
    if row.used_at is not None:
        return exceptions.TokenUsed()
    if row.expires_at <= timezone.now():
        return exceptions.TokenExpired()
    return None


@dataclass
class PageFunnel:
    page: LandingPage
    visits: int
    optins: int
    confirmations: int

    @property
    def optin_rate(self) -> float:
        return self.optins / self.visits if self.visits else 0.0

    @property
    def confirm_rate(self) -> float:
        return self.confirmations / self.optins if self.optins else 0.0


def landing_page_funnels(*, since=None, until=None) -> list[PageFunnel]:
    """Visits, opt-ins (distinct subscribers who submitted) and confirmations per page."""
    pages = list(LandingPage.objects.all().order_by("title"))
    visit_filter = Q()
    touch_filter = Q(landing_page__isnull=False)
    consent_filter = Q(action=ConsentRecord.Action.CONFIRMED, landing_page_id__isnull=False)
    if since:
        visit_filter &= Q(day__gte=since)
        touch_filter &= Q(created_at__date__gte=since)
        consent_filter &= Q(created_at__date__gte=since)
    if until:
        visit_filter &= Q(day__lte=until)
        touch_filter &= Q(created_at__date__lte=until)
        consent_filter &= Q(created_at__date__lte=until)
    visits = dict(
        PageVisitDay.objects.filter(visit_filter)
        .values_list("landing_page")
        .annotate(n=Sum("visits"))
        .values_list("landing_page", "n")
    )
    optins = dict(
        Touch.objects.filter(touch_filter)
        .values_list("landing_page")
        .annotate(n=Count("subscriber", distinct=True))
        .values_list("landing_page", "n")
    )
    confirmations = dict(
        ConsentRecord.objects.filter(consent_filter)
        .values_list("landing_page_id")
        .annotate(n=Count("subscriber", distinct=True))
        .values_list("landing_page_id", "n")
    )
    return [
        PageFunnel(
            page=p,
            visits=visits.get(p.pk, 0),
            optins=optins.get(p.pk, 0),
            confirmations=confirmations.get(p.pk, 0),
        )
        for p in pages
    ]


@dataclass(frozen=True)
class DayCount:
    day: date
    optins: int
    confirmations: int


def daily_optins(*, since: date, until: date) -> list[DayCount]:
    """Opt-ins and confirmations per day (site time zone), every day of the period listed.

    Counted as landing_page_funnels counts them: distinct subscribers with a landing-page
    touch, and distinct subscribers confirming through a landing page, that day.
    """
    day = TruncDate("created_at")
    optins = dict(
        Touch.objects.filter(
            landing_page__isnull=False,
            created_at__date__gte=since,
            created_at__date__lte=until,
        )
        .annotate(day=day)
        .order_by()
        .values("day")
        .annotate(n=Count("subscriber", distinct=True))
        .values_list("day", "n")
    )
    confirmations = dict(
        ConsentRecord.objects.filter(
            action=ConsentRecord.Action.CONFIRMED,
            landing_page_id__isnull=False,
            created_at__date__gte=since,
            created_at__date__lte=until,
        )
        .annotate(day=day)
        .order_by()
        .values("day")
        .annotate(n=Count("subscriber", distinct=True))
        .values_list("day", "n")
    )
    span = (until - since).days + 1
    return [
        DayCount(d, optins.get(d, 0), confirmations.get(d, 0))
        for d in (since + timedelta(days=i) for i in range(span))
    ]
