"""Admin for drip sequences and broadcasts; imported at the end of funnels/wagtail_hooks.py."""

from django.db.models import Count, Q
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _
from wagtail import hooks
from wagtail.admin.menu import MenuItem
from wagtail.admin.ui.tables import Column, DateColumn, StatusTagColumn, TitleColumn
from wagtail.admin.viewsets.base import ViewSet
from wagtail.admin.viewsets.model import ModelViewSet
from wagtail.admin.widgets.button import Button
from wagtail.snippets.models import register_snippet
from wagtail.snippets.views.snippets import SnippetViewSet

from core.admin_reports import post_button

from .models import Broadcast, Enrolment, Sequence
from .sequences import admin_views


# The subject field of every step shows its length as the creator types.
class LinkColumn(TitleColumn, Column):
    pass


class SequenceViewSet(SnippetViewSet):
    """A snippet, so the opt-in form block can choose one with SnippetChooserBlock."""

    model = Sequence
    icon = "mail"
    menu_label = _("Sequences")
    menu_order = 215
    add_to_admin_menu = True
    edit_view_class = admin_views.SequenceEditView
    add_view_class = admin_views.SequenceCreateView
    list_display = [
        "name",
        Column("step_count", label=_("Steps"), sort_key="step_count"),
        Column("active_count", label=_("In it now"), sort_key="active_count"),
        StatusTagColumn(
            "state",
            label=_("State"),
            accessor=lambda s: _("Paused") if s.is_paused else _("Sending"),
            primary=lambda s: not s.is_paused,
        ),
        TitleColumn(
            "report",
            label=_("Report"),
            accessor=lambda s: _("Figures and tools"),
            get_url=lambda s: reverse("funnels_sequences:report", args=[s.pk]),
        ),
    ]

    def get_queryset(self, request):
        return Sequence.objects.annotate(
            step_count=Count("steps", distinct=True),
            active_count=Count(
                "enrolments",
                filter=Q(enrolments__status=Enrolment.Status.ACTIVE),
                distinct=True,
            ),
        )


register_snippet(SequenceViewSet)


class BroadcastEditView(ModelViewSet.edit_view_class):
    @property
    def header_more_buttons(self):
        buttons = list(super().header_more_buttons)
        broadcast = self.object
        buttons.append(
            Button(
                _("Preview and test"),
                url=reverse("funnels_sequences:preview_broadcast", args=[broadcast.pk]),
                icon_name="view",
                priority=5,
            )
        )
        if broadcast.status in (Broadcast.Status.DRAFT, Broadcast.Status.CANCELLED):
            buttons.append(
                _post_button(_("Send now"), "funnels_sequences:broadcast_send", broadcast)
            )
        elif broadcast.status in (Broadcast.Status.SCHEDULED, Broadcast.Status.SENDING):
            buttons.append(
                _post_button(_("Cancel sending"), "funnels_sequences:broadcast_cancel", broadcast)
            )
        return buttons


def _post_button(label, url_name, obj):
    return post_button(label, reverse(url_name, args=[obj.pk]), icon="mail", priority=10)


class BroadcastViewSet(ModelViewSet):
    model = Broadcast
    icon = "mail"
    menu_label = _("Broadcasts")
    menu_order = 216
    add_to_admin_menu = True
    copy_view_enabled = False
    edit_view_class = BroadcastEditView
    form_fields = None
    panels = Broadcast.panels
    list_display = [
        "name",
        "subject",
        StatusTagColumn(
            "status",
            label=_("Status"),
            accessor="get_status_display",
            primary=lambda b: b.status == Broadcast.Status.SENT,
        ),
        Column("recipients", label=_("Recipients")),
        DateColumn("send_at", label=_("Sent")),
    ]
    ordering = "-created_at"


class SequenceToolsViewSet(ViewSet):
    """Report, pause/resume, previews and test sends, and subscriber timelines."""

    name = "funnels_sequences"
    url_prefix = "sequences-tools"
    icon = "history"
    menu_label = _("Subscriber timeline")
    menu_order = 225
    add_to_admin_menu = True

    @property
    def menu_item_class(self):
        class TimelineMenuItem(MenuItem):
            def is_shown(self, request):
                from .admin_views import can_see_subscribers

                return can_see_subscribers(request.user)

        return TimelineMenuItem

    def get_urlpatterns(self):
        views = admin_views
        return [
            path("", views.TimelineView.as_view(), name="index"),
            path("timeline/<int:pk>/", views.TimelineView.as_view(), name="timeline"),
            path("report/<int:pk>/", views.SequenceReportView.as_view(), name="report"),
            path("pause/<int:pk>/", views.SequencePauseView.as_view(pause=True), name="pause"),
            path("resume/<int:pk>/", views.SequencePauseView.as_view(pause=False), name="resume"),
            path(
                "preview/step/<int:pk>/",
                views.PreviewView.as_view(kind="step"),
                name="preview_step",
            ),
            path(
                "preview/broadcast/<int:pk>/",
                views.PreviewView.as_view(kind="broadcast"),
                name="preview_broadcast",
            ),
            path("test/step/<int:pk>/", views.TestSendView.as_view(kind="step"), name="test_step"),
            path(
                "test/broadcast/<int:pk>/",
                views.TestSendView.as_view(kind="broadcast"),
                name="test_broadcast",
            ),
            path(
                "broadcast/<int:pk>/send/",
                views.BroadcastSendView.as_view(cancel=False),
                name="broadcast_send",
            ),
            path(
                "broadcast/<int:pk>/cancel/",
                views.BroadcastSendView.as_view(cancel=True),
                name="broadcast_cancel",
            ),
        ]


@hooks.register("register_admin_viewset")
def register_broadcast_viewset():
    return BroadcastViewSet("funnels_broadcasts")


@hooks.register("register_admin_viewset")
def register_sequence_tools_viewset():
    return SequenceToolsViewSet()
