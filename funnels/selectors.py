"""Reads for the funnel: token checks and the creator's numbers."""

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from . import exceptions
from .models import ConsentRecord, LandingPage, PageVisitDay, SubscriberToken, Touch


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
