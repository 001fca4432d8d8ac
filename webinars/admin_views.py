"""The creator's view of a webinar in the Wagtail admin: registrations per session,
attendance (join links that let someone in), replay viewers and conversions to the
follow-up offer, with a funnel chart drawn as inline SVG (geometry here, markup in the
template, as funnels/admin_views.py does)."""

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.generic import TemplateView
from wagtail.admin.views import generic

from . import selectors
from .models import WebinarPage

CHART_WIDTH = 640
LABEL_WIDTH = 170
BAR_HEIGHT = 26
BAR_GAP = 14


@dataclass(frozen=True)
class FunnelBar:
    label: str
    value: int
    y: int
    width: float
    text_x: float
    share: str


@dataclass(frozen=True)
class FunnelChart:
    width: int
    height: int
    plot_x: int
    bar_height: int
    bars: list[FunnelBar]
    title: str
    desc: str


def funnel_chart(stats: selectors.WebinarStats) -> FunnelChart:
    steps = [
        (_("Registered"), stats.registered),
        (_("Attended live"), stats.attended),
        (_("Watched the replay"), stats.replay_viewers),
        (_("Bought the follow-up"), stats.converted),
    ]
    top = max(1, stats.registered, *(value for _label, value in steps))
    plot = CHART_WIDTH - LABEL_WIDTH - 70
    bars = []
    for index, (label, value) in enumerate(steps):
        width = round(plot * value / top, 1)
        share = f"{round(100 * value / stats.registered)}%" if stats.registered else "—"
        bars.append(
            FunnelBar(
                label=label,
                value=value,
                y=index * (BAR_HEIGHT + BAR_GAP),
                width=width,
                text_x=LABEL_WIDTH + width + 6,
                share=share,
            )
        )
    return FunnelChart(
        width=CHART_WIDTH,
        height=len(steps) * (BAR_HEIGHT + BAR_GAP),
        plot_x=LABEL_WIDTH,
        bar_height=BAR_HEIGHT,
        bars=bars,
        title=_("From registration to purchase"),
        desc=", ".join(f"{bar.label}: {bar.value}" for bar in bars),
    )


class WebinarRegistrationsView(generic.WagtailAdminTemplateMixin, TemplateView):
    """Visible to whoever may edit the webinar page."""

    template_name = "webinars/admin/registrations.html"
    header_icon = "group"

    def dispatch(self, request, *args, **kwargs):
        self.webinar = get_object_or_404(WebinarPage, pk=kwargs["page_id"])
        if not self.webinar.permissions_for_user(request.user).can_edit():
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_page_title(self):
        return _("Registrations")

    def get_page_subtitle(self):
        return self.webinar.title

    def get_breadcrumbs_items(self):
        return [
            *self.breadcrumbs_items,
            {
                "url": reverse("wagtailadmin_pages:edit", args=[self.webinar.pk]),
                "label": self.webinar.title,
            },
            {"url": "", "label": _("Registrations")},
        ]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        stats = selectors.webinar_stats(self.webinar)
        context.update(
            webinar=self.webinar,
            stats=stats,
            chart=funnel_chart(stats),
            rows=selectors.registrations_table(self.webinar),
        )
        return context
