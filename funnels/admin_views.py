"""The creator's side of the funnel in the Wagtail admin: subscriber views, the funnel
performance report, and the inline SVG charts it draws.

Status changes and erasure go through funnels.services; the read-only queries the report
needs beyond funnels.selectors live at the bottom of this module.
"""

from dataclasses import dataclass
from datetime import date, timedelta

import django_filters
from django import forms
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.generic import TemplateView
from taggit.models import Tag
from wagtail.admin.filters import DateRangePickerWidget, WagtailFilterSet
from wagtail.admin.ui.components import Component
from wagtail.admin.ui.tables import Column, TitleColumn
from wagtail.admin.views import generic
from wagtail.admin.views.generic.base import BaseOperationView
from wagtail.admin.widgets import BooleanRadioSelect
from wagtail.admin.widgets.button import Button
from wagtail.log_actions import log
from wagtail.permissions import policy_registry
from wagtail.snippets.views import snippets as snippet_views

from core.admin_reports import (
    REPORT_DEFAULT_DAYS,
    DailyPairChart,
    DayPair,
    LegendItem,
    ReportPeriodForm,
    SpreadsheetExportMixin,
    Tick,
    daily_pair_chart,
    fmt_int,
    fmt_pct,
    nice_scale,
    period_presets,
    post_button,
)

from . import audience, selectors, services
from .models import LandingPage, Subscriber, Touch
from .tasks import audience_sync_subscriber

ERASE_LABEL = gettext_lazy("Erase (GDPR)")
DASHBOARD_DAYS = 7


def can_see_subscribers(user) -> bool:
    return policy_registry.get_by_type(Subscriber).user_has_any_permission(
        user, ["view", "change", "delete"]
    )


# --- Subscriber display --------------------------------------------------------------------


def subscriber_tags(subscriber: Subscriber) -> str:
    # Reads the prefetched tagged_items instead of querying once per row.
    return ", ".join(sorted(item.tag.name for item in subscriber.tagged_items.all()))


def subscriber_source(subscriber: Subscriber) -> str:
    touch = subscriber.first_touch
    if touch is None:
        return ""
    page = touch.landing_page.title if touch.landing_page else _("(deleted page)")
    return f"{page} · {touch.utm_source}" if touch.utm_source else page


def subscriber_log_title(subscriber: Subscriber) -> str:
    # The admin history outlives an erasure, so it names subscribers by id, not address.
    return _("Subscriber #%(id)s") % {"id": subscriber.pk}


class SyncErrorColumn(Column):
    cell_template_name = "funnels/admin/sync_error_cell.html"


def _tag_choices():
    names = (
        Tag.objects.filter(funnels_subscribertag_items__isnull=False)
        .order_by("name")
        .values_list("name", flat=True)
        .distinct()
    )
    return [(name, name) for name in names]


def _utm_source_choices():
    sources = (
        Touch.objects.filter(pk__in=Subscriber.objects.values("first_touch"))
        .exclude(utm_source="")
        .order_by("utm_source")
        .values_list("utm_source", flat=True)
        .distinct()[:200]
    )
    return [(source, source) for source in sources]


class SubscriberFilterSet(WagtailFilterSet):
    status = django_filters.ChoiceFilter(
        label=gettext_lazy("Status"), choices=Subscriber.Status.choices
    )
    tag = django_filters.MultipleChoiceFilter(
        label=gettext_lazy("Tag"),
        field_name="tags__name",
        choices=_tag_choices,
        widget=forms.CheckboxSelectMultiple,
    )
    landing_page = django_filters.ModelChoiceFilter(
        label=gettext_lazy("First landing page"),
        field_name="first_touch__landing_page",
        queryset=LandingPage.objects.order_by("title"),
    )
    utm_source = django_filters.ChoiceFilter(
        label=gettext_lazy("First source (utm_source)"),
        field_name="first_touch__utm_source",
        choices=_utm_source_choices,
    )
    created = django_filters.DateFromToRangeFilter(
        label=gettext_lazy("Signed up"), field_name="created_at", widget=DateRangePickerWidget
    )
    sync_problem = django_filters.BooleanFilter(
        label=gettext_lazy("Mailchimp sync problem"),
        method="filter_sync_problem",
        widget=BooleanRadioSelect,
    )

    class Meta:
        model = Subscriber
        fields = []

    def filter_sync_problem(self, queryset, name, value):
        if value is None:
            return queryset
        if value:
            return queryset.exclude(audience_sync_error="")
        return queryset.filter(audience_sync_error="")


def _local(value):
    # Spreadsheets get the site's wall-clock time without microseconds; XLSX then
    # stores a real date cell instead of text.
    if value is None:
        return None
    return timezone.localtime(value).replace(microsecond=0, tzinfo=None)


SUBSCRIBER_EXPORT = {
    "email": lambda s: s.email,
    "name": lambda s: s.name,
    "status": lambda s: s.get_status_display(),
    "tags": subscriber_tags,
    "time_zone": lambda s: s.time_zone,
    "first_landing_page": lambda s: (
        s.first_touch.landing_page.title if s.first_touch and s.first_touch.landing_page else ""
    ),
    "utm_source": lambda s: s.first_touch.utm_source if s.first_touch else "",
    "utm_medium": lambda s: s.first_touch.utm_medium if s.first_touch else "",
    "utm_campaign": lambda s: s.first_touch.utm_campaign if s.first_touch else "",
    "created_at": lambda s: _local(s.created_at),
    "confirmed_at": lambda s: _local(s.confirmed_at),
    "unsubscribed_at": lambda s: _local(s.unsubscribed_at),
    "audience_sync_error": lambda s: s.audience_sync_error,
}


class SubscriberIndexView(SpreadsheetExportMixin, generic.IndexView):
    def get_base_queryset(self):
        return (
            super()
            .get_base_queryset()
            .select_related("first_touch__landing_page")
            .prefetch_related("tagged_items__tag")
        )

    def _get_title_column(self, field_name, column_class=TitleColumn, **kwargs):
        # A subscriber's page is the inspect view (consent ledger, touches, downloads);
        # the edit form only holds name, time zone and tags.
        return self._get_custom_column(
            field_name,
            self._get_title_column_class(column_class),
            get_url=self.get_inspect_url,
            width="22%",
            **kwargs,
        )

    def get_list_more_buttons(self, instance):
        buttons = super().get_list_more_buttons(instance)
        delete_url = self.get_delete_url(instance)
        for button in buttons:
            if delete_url and button.url == delete_url:
                button.label = ERASE_LABEL
        return buttons

    def to_row_dict(self, item):
        return {field: SUBSCRIBER_EXPORT[field](item) for field in self.list_export}


class SubscriberButtonsMixin:
    """Unsubscribe and erase, offered on a subscriber's inspect and edit pages."""

    def subscriber_buttons(self, buttons):
        subscriber = self.object
        delete_url = self.get_delete_url()
        for button in buttons:
            if delete_url and button.url == delete_url:
                button.label = ERASE_LABEL
        if subscriber.status != Subscriber.Status.UNSUBSCRIBED and self.user_has_permission(
            "change"
        ):
            buttons.append(
                post_button(
                    _("Unsubscribe"),
                    reverse("subscribers:unsubscribe", args=[subscriber.pk]),
                    icon="mail",
                )
            )
        return buttons


class SubscriberInspectView(SubscriberButtonsMixin, generic.InspectView):
    template_name = "funnels/admin/subscriber_inspect.html"
    field_labels = {
        "created_at": gettext_lazy("Signed up"),
        "confirmed_at": gettext_lazy("Confirmed"),
        "unsubscribed_at": gettext_lazy("Unsubscribed"),
        "audience_synced_at": gettext_lazy("Last Mailchimp sync"),
    }

    def get_object(self, queryset=None):
        return get_object_or_404(
            Subscriber.objects.select_related("first_touch__landing_page").prefetch_related(
                "tagged_items__tag"
            ),
            pk=unquote(str(self.pk)),
        )

    def get_page_subtitle(self):
        return self.object.email

    @cached_property
    def header_more_buttons(self):
        buttons = self.subscriber_buttons(list(super().header_more_buttons))
        buttons.append(
            Button(
                _("Email timeline"),
                url=self.timeline_url,
                icon_name="history",
                priority=5,
            )
        )
        return buttons

    @cached_property
    def timeline_url(self) -> str:
        return reverse("funnels_sequences:timeline", args=[self.object.pk])

    def get_field_label(self, field_name, field):
        return self.field_labels.get(field_name) or super().get_field_label(field_name, field)

    def get_field_display_value(self, field_name, field):
        value = super().get_field_display_value(field_name, field)
        return "—" if value is None or value == "" else value

    def get_tags_display_value(self):
        return subscriber_tags(self.object) or "—"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        subscriber = self.object
        context.update(
            consents=subscriber.consents.all(),
            touches=subscriber.touches.select_related("landing_page"),
            downloads=subscriber.deliveries.select_related("magnet"),
            source=subscriber_source(subscriber),
            can_unsubscribe=(
                subscriber.status != Subscriber.Status.UNSUBSCRIBED
                and self.user_has_permission("change")
            ),
            unsubscribe_url=reverse("subscribers:unsubscribe", args=[subscriber.pk]),
            erase_url=self.get_delete_url(),
            enrolments=subscriber.enrolments.select_related("sequence", "next_step"),
            timeline_url=self.timeline_url,
        )
        return context


class SubscriberEditView(SubscriberButtonsMixin, generic.EditView):
    delete_item_label = ERASE_LABEL

    @cached_property
    def header_more_buttons(self):
        return self.subscriber_buttons(list(super().header_more_buttons))

    def get_success_message(self):
        return _("Subscriber '%(email)s' updated.") % {"email": self.object.email}

    def save_instance(self):
        # Saved here rather than through Wagtail's EditAction so the history entry is
        # labelled by id: an address in the admin log would outlive its erasure.
        instance = self.form.save()
        log(
            instance=instance,
            action="wagtail.edit",
            user=self.request.user,
            title=subscriber_log_title(instance),
            content_changed=self.form.has_changed(),
        )
        # Name and tags are mirrored in Mailchimp. The mark is the outbox row, committed
        # with the edit: if the broker is down when the task below is published, the
        # sweep (funnels.tasks.audience_requeue_stale) queues the sync later. Set after
        # form.save(), which writes back every column as it was read.
        audience.subscribers_mark_changed(subscriber_ids=[instance.pk])
        audience_sync_subscriber.delay_on_commit(instance.pk)
        return instance


class SubscriberEraseView(generic.DeleteView):
    template_name = "funnels/admin/subscriber_erase.html"
    page_title = ERASE_LABEL

    @property
    def confirmation_message(self):
        return _(
            "Erase %(email)s? Their subscriber record, consent ledger, touches, download "
            "history and the emails sent to them are deleted for good, and they are removed "
            "from Mailchimp. Only a one-way hash of the address is kept so it is never mailed "
            "again."
        ) % {"email": self.object.email}

    def get_success_message(self):
        return _("Subscriber erased. The address is suppressed from all future mail.")

    def delete_action(self):
        log(
            instance=self.object,
            action="wagtail.delete",
            user=self.request.user,
            title=subscriber_log_title(self.object),
            deleted=True,
        )
        services.subscriber_erase(subscriber=self.object)


class SubscriberUnsubscribeView(generic.PermissionCheckedMixin, BaseOperationView):
    model = Subscriber
    permission_required = "change"
    http_method_names = ["post"]
    success_url_name = "subscribers:inspect"

    def perform_operation(self):
        request = self.request
        self.changed = services.subscriber_unsubscribe(
            subscriber=self.object,
            visitor=services.Visitor(
                ip_address=request.META.get("REMOTE_ADDR") or None,
                user_agent=request.META.get("HTTP_USER_AGENT", "")[:500],
            ),
            source=f"admin, by {request.user.get_username()}",
        )

    def get_success_message(self):
        if self.changed:
            return _("%(email)s is unsubscribed and will get no more email.") % {
                "email": self.object.email
            }
        return _("%(email)s had already unsubscribed.") % {"email": self.object.email}


class LeadMagnetDeleteView(snippet_views.DeleteView):
    @property
    def confirmation_message(self):
        message = super().confirmation_message
        downloads = self.object.deliveries.count()
        if downloads:
            message += " " + ngettext(
                "Its record of %(count)s download goes with it.",
                "Its record of %(count)s downloads goes with it.",
                downloads,
            ) % {"count": fmt_int(downloads)}
        return message


# --- Funnel performance report -------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    visits: int
    optins: int
    confirmations: int

    @property
    def optin_rate(self) -> float:
        return self.optins / self.visits if self.visits else 0.0

    @property
    def confirm_rate(self) -> float:
        return self.confirmations / self.optins if self.optins else 0.0


def totals_of(rows: list[selectors.PageFunnel]) -> Totals:
    # Summed per page: someone who opted in on two pages counts on each.
    return Totals(
        visits=sum(r.visits for r in rows),
        optins=sum(r.optins for r in rows),
        confirmations=sum(r.confirmations for r in rows),
    )


class FunnelReportView(generic.WagtailAdminTemplateMixin, TemplateView):
    template_name = "funnels/admin/report.html"
    page_title = gettext_lazy("Funnel performance")
    header_icon = "chart-bar"

    def dispatch(self, request, *args, **kwargs):
        if not can_see_subscribers(request.user):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_breadcrumbs_items(self):
        return [*self.breadcrumbs_items, {"url": "", "label": self.get_page_title()}]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        form = ReportPeriodForm(self.request.GET or None)
        if form.is_bound and form.is_valid():
            since, until = form.cleaned_data["since"], form.cleaned_data["until"]
        else:
            until = timezone.localdate()
            since = until - timedelta(days=REPORT_DEFAULT_DAYS - 1)
            if not form.is_bound:
                form = ReportPeriodForm(initial={"since": since, "until": until})
        rows = sorted(
            selectors.landing_page_funnels(since=since, until=until),
            key=lambda r: (-r.visits, -r.optins, r.page.title.lower()),
        )
        days = selectors.daily_optins(since=since, until=until)
        context.update(
            form=form,
            since=since,
            until=until,
            rows=rows,
            totals=totals_of(rows),
            page_chart=page_bars_chart(rows, since=since, until=until) if rows else None,
            daily_chart=daily_chart(days, since=since, until=until),
            presets=period_presets(since=since, until=until),
        )
        return context


class FunnelSummaryPanel(Component):
    """Dashboard panel: the last week's totals and a way into the report."""

    name = "funnel_summary"
    order = 60
    template_name = "funnels/admin/dashboard_panel.html"

    def __init__(self, request):
        self.request = request

    def get_context_data(self, parent_context=None):
        until = timezone.localdate()
        since = until - timedelta(days=DASHBOARD_DAYS - 1)
        rows = selectors.landing_page_funnels(since=since, until=until)
        return {
            "totals": totals_of(rows),
            "days": DASHBOARD_DAYS,
            "report_url": reverse("funnel_performance:index"),
            "has_pages": bool(rows),
        }


# --- Charts: geometry in Python, drawn by templates as inline SVG ----------------------------


def _r(value: float) -> float:
    return round(value, 1)


SERIES_LABELS = {
    "visits": gettext_lazy("Visits"),
    "optins": gettext_lazy("Opt-ins"),
    "confirmations": gettext_lazy("Confirmations"),
}


def legend(series: list[str], *, x: float, widths: dict[str, int]) -> list[LegendItem]:
    items = []
    for key in series:
        items.append(LegendItem(series=key, label=str(SERIES_LABELS[key]), x=x))
        x += widths.get(key, 110)
    return items


@dataclass(frozen=True)
class HBar:
    series: str
    y: float
    width: float
    text: str
    text_x: float


@dataclass(frozen=True)
class PageRow:
    title: str
    short_title: str
    label_y: float
    bars: list[HBar]
    summary: str


@dataclass(frozen=True)
class PageBarsChart:
    width: int
    height: int
    plot_x: int
    plot_width: int
    bar_height: int
    grid_top: int
    ticks: list[Tick]
    rows: list[PageRow]
    legend: list[LegendItem]
    title: str
    desc: str


def page_bars_chart(rows: list[selectors.PageFunnel], *, since: date, until: date) -> PageBarsChart:
    """Grouped horizontal bars per landing page, on one scale, each bar labelled."""
    width, plot_x, value_room = 800, 210, 120
    bar_h, bar_gap, group_gap, top = 14, 3, 22, 56
    plot_width = width - plot_x - value_room
    group_h = 3 * bar_h + 2 * bar_gap
    axis_max, step = nice_scale(max((r.visits for r in rows), default=0) or 1)

    def scaled(value: int) -> float:
        return _r(plot_width * value / axis_max)

    page_rows = []
    for i, row in enumerate(rows):
        y0 = top + i * (group_h + group_gap)
        texts = {
            "visits": fmt_int(row.visits),
            "optins": f"{fmt_int(row.optins)} · {fmt_pct(row.optin_rate)}",
            "confirmations": f"{fmt_int(row.confirmations)} · {fmt_pct(row.confirm_rate)}",
        }
        bars = []
        for j, series in enumerate(("visits", "optins", "confirmations")):
            w = scaled(getattr(row, series))
            bars.append(
                HBar(
                    series=series,
                    y=y0 + j * (bar_h + bar_gap),
                    width=max(w, 1.5),
                    text=texts[series],
                    text_x=_r(plot_x + w + 6),
                )
            )
        page_rows.append(
            PageRow(
                title=row.page.title,
                short_title=Truncator(row.page.title).chars(30),
                label_y=y0 + bar_h + bar_gap + bar_h / 2,
                bars=bars,
                summary=_(
                    "%(page)s: %(visits)s visits, %(optins)s opt-ins (%(optin_rate)s), "
                    "%(confirmations)s confirmations (%(confirm_rate)s)"
                )
                % {
                    "page": row.page.title,
                    "visits": fmt_int(row.visits),
                    "optins": fmt_int(row.optins),
                    "optin_rate": fmt_pct(row.optin_rate),
                    "confirmations": fmt_int(row.confirmations),
                    "confirm_rate": fmt_pct(row.confirm_rate),
                },
            )
        )
    height = top + len(rows) * (group_h + group_gap) - group_gap + 14
    ticks = [
        Tick(pos=_r(plot_x + plot_width * v / axis_max), label=fmt_int(v))
        for v in range(0, axis_max + 1, step)
    ]
    best_visits = max(rows, key=lambda r: r.visits)
    best_rate = max(rows, key=lambda r: (r.optin_rate, r.optins))
    desc = " ".join(
        [
            _(
                "Visits, opt-ins and confirmations for %(count)s landing pages from "
                "%(since)s to %(until)s."
            )
            % {
                "count": len(rows),
                "since": date_format(since, "DATE_FORMAT"),
                "until": date_format(until, "DATE_FORMAT"),
            },
            _("Most visited: %(page)s (%(visits)s).")
            % {"page": best_visits.page.title, "visits": fmt_int(best_visits.visits)},
            _("Best opt-in rate: %(page)s (%(rate)s).")
            % {"page": best_rate.page.title, "rate": fmt_pct(best_rate.optin_rate)},
            _("Every number is in the table below."),
        ]
    )
    return PageBarsChart(
        width=width,
        height=height,
        plot_x=plot_x,
        plot_width=plot_width,
        bar_height=bar_h,
        grid_top=top - 8,
        ticks=ticks,
        rows=page_rows,
        legend=legend(
            ["visits", "optins", "confirmations"], x=plot_x, widths={"visits": 80, "optins": 90}
        ),
        title=_("Visits, opt-ins and confirmations per landing page"),
        desc=desc,
    )


def daily_chart(days: list[selectors.DayCount], *, since: date, until: date) -> DailyPairChart:
    """Opt-ins per day as bars, confirmations as a narrower darker bar in front."""
    total_optins = sum(d.optins for d in days)
    total_confirmations = sum(d.confirmations for d in days)
    period = {
        "since": date_format(since, "DATE_FORMAT"),
        "until": date_format(until, "DATE_FORMAT"),
    }
    if total_optins or total_confirmations:
        busiest = max(days, key=lambda d: d.optins)
        desc = _(
            "Opt-ins per day from %(since)s to %(until)s: %(optins)s in all, the busiest "
            "day %(day)s with %(best)s. Confirmations: %(confirmations)s in all."
        ) % {
            **period,
            "optins": fmt_int(total_optins),
            "day": date_format(busiest.day, "DATE_FORMAT"),
            "best": fmt_int(busiest.optins),
            "confirmations": fmt_int(total_confirmations),
        }
    else:
        desc = _("No opt-ins from %(since)s to %(until)s.") % period
    return daily_pair_chart(
        [
            DayPair(
                day=d.day,
                outer=d.optins,
                inner=d.confirmations,
                tooltip=_("%(day)s: %(optins)s opt-ins, %(confirmations)s confirmations")
                % {
                    "day": date_format(d.day, "D j M"),
                    "optins": fmt_int(d.optins),
                    "confirmations": fmt_int(d.confirmations),
                },
            )
            for d in days
        ],
        series=(
            ("optins", SERIES_LABELS["optins"]),
            ("confirmations", SERIES_LABELS["confirmations"]),
        ),
        title=_("Opt-ins and confirmations per day"),
        desc=desc,
        empty_text=_("No opt-ins in this period yet."),
        dom_id="funnels-daily",
    )
