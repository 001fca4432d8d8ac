"""What every creator report in the admin shares: the period form and its presets, chart
scales and number formats, legend/tick geometry, spreadsheet-safe CSV export and POST
buttons. The funnel, revenue, sequence and webinar reports build on these."""

import math
from dataclasses import dataclass
from datetime import date, timedelta

from django import forms
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.formats import date_format, number_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from wagtail.admin.widgets import AdminDateInput
from wagtail.admin.widgets.button import Button

REPORT_DEFAULT_DAYS = 30
REPORT_MAX_DAYS = 366
# Spreadsheet apps run a cell that starts with one of these as a formula; names and UTM
# values come from public forms, so a CSV cell never starts with one.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


# --- Report period ---------------------------------------------------------------------------


def period_presets(*, since: date, until: date) -> list[dict]:
    """The "Last 7/30/90 days" buttons of a report, the chosen one marked active."""
    today = timezone.localdate()
    return [
        {
            "label": ngettext("Last %(n)s day", "Last %(n)s days", n) % {"n": n},
            "since": today - timedelta(days=n - 1),
            "until": today,
            "active": since == today - timedelta(days=n - 1) and until == today,
        }
        for n in (7, 30, 90)
    ]


class ReportPeriodForm(forms.Form):
    since = forms.DateField(label=gettext_lazy("From"), required=False, widget=AdminDateInput)
    until = forms.DateField(label=gettext_lazy("To"), required=False, widget=AdminDateInput)

    def clean(self):
        data = super().clean()
        today = timezone.localdate()
        until = data.get("until") or today
        since = data.get("since") or until - timedelta(days=REPORT_DEFAULT_DAYS - 1)
        if since > until:
            raise forms.ValidationError(_("The start date is after the end date."))
        if (until - since).days >= REPORT_MAX_DAYS:
            raise forms.ValidationError(
                _("Choose a period of at most %(days)s days.") % {"days": REPORT_MAX_DAYS}
            )
        data.update(since=since, until=until)
        return data


# --- Charts: geometry in Python, drawn by templates as inline SVG ----------------------------


def nice_scale(value: int, ticks: int = 4) -> tuple[int, int]:
    """A round axis maximum ≥ value and its step (1, 2 or 5 × 10ⁿ, whole numbers)."""
    if value <= 0:
        return ticks, 1
    raw = value / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(1, round(step))
    return step * math.ceil(value / step), step


def fmt_int(value: int) -> str:
    return number_format(value, force_grouping=True)


def fmt_pct(rate: float) -> str:
    # number_format truncates to decimal_pos; round first so 2/3 reads 66.7%, not 66.6%.
    return number_format(round(rate * 100, 1), decimal_pos=1) + "%"


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class LegendItem:
    series: str
    label: str
    x: float


# --- Exports and buttons ---------------------------------------------------------------------


class SpreadsheetExportMixin:
    """For a Wagtail IndexView with `list_export`: CSV that Excel opens as UTF-8 and never
    runs as a formula (an email address or a name typed by a visitor may start with "=")."""

    def preprocess_field_value(self, field, value, export_format):
        value = super().preprocess_field_value(field, value, export_format)
        if (
            export_format == self.FORMAT_CSV
            and isinstance(value, str)
            and value.startswith(FORMULA_PREFIXES)
        ):
            return "'" + value
        return value

    def stream_csv(self, queryset):
        # A byte-order mark, so Excel reads the file as UTF-8 and non-Latin names survive.
        yield "\ufeff".encode()
        yield from super().stream_csv(queryset)

    def write_csv_response(self, queryset):
        response = StreamingHttpResponse(
            self.stream_csv(queryset), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="{self.get_filename()}.csv"'
        return response


def post_button(label: str, url: str, *, icon: str, priority: int = 15) -> Button:
    """A header button that POSTs (Wagtail's w-action controller builds its own form)."""
    return Button(
        label,
        icon_name=icon,
        priority=priority,
        attrs={
            "data-controller": "w-action",
            "data-action": "w-action#post",
            "data-w-action-url-value": url,
        },
    )


# --- Daily paired bars (opt-ins/confirmations, money taken/refunded) -------------------------


def _r(value: float) -> float:
    return round(value, 1)


@dataclass(frozen=True)
class DayPair:
    """One day's two figures, in the chart's unit (counts, or money in minor units)."""

    day: date
    outer: int
    inner: int
    tooltip: str


@dataclass(frozen=True)
class PairedBar:
    x: float
    width: float
    outer_y: float
    outer_height: float
    inner_x: float
    inner_width: float
    inner_y: float
    inner_height: float
    tooltip: str


@dataclass(frozen=True)
class DailyPairChart:
    dom_id: str
    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    plot_height: int
    center_x: int
    center_y: int
    y_ticks: list[Tick]
    x_labels: list[Tick]
    bars: list[PairedBar]
    legend: list[LegendItem]
    outer_series: str
    inner_series: str
    empty: bool
    empty_text: str
    title: str
    desc: str


def daily_pair_chart(
    days: list[DayPair],
    *,
    series: tuple[tuple[str, str], tuple[str, str]],
    title: str,
    desc: str,
    empty_text: str,
    dom_id: str,
    unit: int = 1,
    tick_label=fmt_int,
    plot_left: int = 44,
    legend_gap: int = 90,
) -> DailyPairChart:
    """A day per slot: the outer figure as a wide bar, the inner one as a narrower darker
    bar in front of it. `series` is ((css series, label) outer, (css series, label) inner);
    the y axis counts whole `unit`s (1 for counts, 100 for cents) labelled by `tick_label`,
    which receives the value in the chart's unit."""
    (outer_series, outer_label), (inner_series, inner_label) = series
    width, height = 800, 250
    left, right, top, bottom = plot_left, width - 12, 40, height - 30
    plot_w, plot_h = right - left, bottom - top
    peak = max((max(d.outer, d.inner) for d in days), default=0)
    axis_max, step = nice_scale(math.ceil(peak / unit))
    slot = plot_w / max(len(days), 1)

    def y_of(value: int) -> float:
        return _r(bottom - plot_h * (value / unit) / axis_max)

    bars = []
    wide, narrow = max(slot * 0.76, 1.0), max(slot * 0.38, 1.0)
    for i, d in enumerate(days):
        x = left + i * slot
        bars.append(
            PairedBar(
                x=_r(x + (slot - wide) / 2),
                width=_r(wide),
                outer_y=y_of(d.outer),
                outer_height=_r(bottom - y_of(d.outer)),
                inner_x=_r(x + (slot - narrow) / 2),
                inner_width=_r(narrow),
                inner_y=y_of(d.inner),
                inner_height=_r(bottom - y_of(d.inner)),
                tooltip=d.tooltip,
            )
        )
    label_every = max(1, math.ceil(len(days) / 8))
    x_labels = [
        Tick(pos=_r(left + (i + 0.5) * slot), label=date_format(d.day, "j M"))
        for i, d in enumerate(days)
        if i % label_every == 0
    ]
    y_ticks = [
        Tick(pos=y_of(v * unit), label=tick_label(v * unit)) for v in range(0, axis_max + 1, step)
    ]
    return DailyPairChart(
        dom_id=dom_id,
        width=width,
        height=height,
        plot_left=left,
        plot_right=right,
        plot_top=top,
        plot_bottom=bottom,
        plot_height=plot_h,
        center_x=(left + right) // 2,
        center_y=(top + bottom) // 2,
        y_ticks=y_ticks,
        x_labels=x_labels,
        bars=bars,
        legend=[
            LegendItem(series=outer_series, label=str(outer_label), x=left),
            LegendItem(series=inner_series, label=str(inner_label), x=left + legend_gap),
        ],
        outer_series=outer_series,
        inner_series=inner_series,
        empty=not any(d.outer or d.inner for d in days),
        empty_text=empty_text,
        title=title,
        desc=desc,
    )


def page_report_button(*, page_class, label, url_name: str, hook_prefix: str) -> type:
    """A button to a page type's own report (a course's Students, a webinar's
    Registrations) in the page header and in the page listing's "More" menu, for users
    who may edit the page. Registers both hooks; returns the button class."""
    from wagtail import hooks
    from wagtail.admin.ui.menus.pages import PageMenuItem

    class ReportButton(PageMenuItem):
        icon_name = "group"

        def is_shown(self, user):
            return issubclass(self.page.specific_class or type(None), page_class) and (
                self.page.permissions_for_user(user).can_edit()
            )

    ReportButton.label = label
    ReportButton.url_name = url_name
    ReportButton.__name__ = ReportButton.__qualname__ = f"{page_class.__name__}ReportButton"

    def header_button(page, user, view_name, next_url=None):
        yield ReportButton(page=page, priority=12)

    def listing_button(page, user, next_url=None):
        yield ReportButton(page=page, priority=15)

    header_button.__name__ = f"{hook_prefix}_header_button"
    listing_button.__name__ = f"{hook_prefix}_listing_button"
    hooks.register("register_page_header_buttons", header_button)
    hooks.register("register_page_listing_more_buttons", listing_button)
    return ReportButton
