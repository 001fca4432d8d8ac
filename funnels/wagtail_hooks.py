from django import forms
from django.db.models import Count
from django.urls import path
from django.utils.translation import gettext_lazy as _
from wagtail import hooks
from wagtail.admin.panels import FieldPanel, ObjectList
from wagtail.admin.ui.tables import Column, DateColumn, StatusTagColumn
from wagtail.admin.viewsets.base import ViewSet
from wagtail.admin.viewsets.model import ModelViewSet
from wagtail.permissions import register_permission_policy
from wagtail.snippets.models import register_snippet
from wagtail.snippets.views.snippets import SnippetViewSet

from core.models import TIME_ZONE_CHOICES
from core.permissions import RefusingPolicy

from . import admin_views
from .forms import LeadMagnetForm
from .models import LeadMagnet, SignUp, Subscriber


class LeadMagnetSnippetViewSet(SnippetViewSet):
    """A snippet, not a plain ModelViewSet: the opt-in form block's SnippetChooserBlock
    picks lead magnets through the snippet chooser."""

    model = LeadMagnet
    icon = "doc-full"
    menu_label = _("Lead magnets")
    menu_order = 210
    add_to_admin_menu = True
    delete_view_class = admin_views.LeadMagnetDeleteView
    # Refuses a file that cannot be stamped for subscribers; shows the stored file's status.
    edit_handler = ObjectList(LeadMagnet.panels, base_form_class=LeadMagnetForm)
    list_display = [
        "title",
        Column("filename", label=_("File name"), accessor="filename"),
        Column("delivery_count", label=_("Downloads"), sort_key="delivery_count"),
    ]

    def get_queryset(self, request):
        return LeadMagnet.objects.annotate(delivery_count=Count("deliveries"))


register_snippet(LeadMagnetSnippetViewSet)


# Subscribers arrive through opt-in forms only; the admin never creates one.
register_permission_policy(Subscriber, RefusingPolicy(Subscriber, refused={"add"}))


class SubscriberViewSet(ModelViewSet):
    model = Subscriber
    icon = "group"
    menu_label = _("Subscribers")
    menu_order = 220
    add_to_admin_menu = True
    copy_view_enabled = False
    inspect_view_enabled = True
    index_view_class = admin_views.SubscriberIndexView
    index_template_name = "funnels/admin/subscriber_index.html"
    inspect_view_class = admin_views.SubscriberInspectView
    edit_view_class = admin_views.SubscriberEditView
    delete_view_class = admin_views.SubscriberEraseView
    # Status changes go through services (unsubscribe, erase), never through this form.
    panels = [
        FieldPanel("name"),
        FieldPanel("time_zone", widget=forms.Select(choices=TIME_ZONE_CHOICES)),
        FieldPanel("tags"),
    ]
    filterset_class = admin_views.SubscriberFilterSet
    search_fields = ["email", "name"]
    search_backend_name = None
    ordering = "-created_at"
    list_per_page = 50
    list_display = [
        "email",
        Column("name", label=_("Name"), sort_key="name", width="12%"),
        StatusTagColumn(
            "status",
            label=_("Status"),
            accessor="get_status_display",
            sort_key="status",
            primary=lambda s: s.status == Subscriber.Status.CONFIRMED,
        ),
        Column("tags", label=_("Tags"), accessor=admin_views.subscriber_tags),
        Column("source", label=_("Source"), accessor=admin_views.subscriber_source, width="16%"),
        DateColumn("created_at", label=_("Signed up"), sort_key="created_at"),
        DateColumn("confirmed_at", label=_("Confirmed"), sort_key="confirmed_at"),
        admin_views.SyncErrorColumn(
            "audience_sync_error", label=_("Mailchimp"), accessor="audience_sync_error"
        ),
    ]
    list_export = list(admin_views.SUBSCRIBER_EXPORT)
    export_headings = {
        "email": _("Email"),
        "name": _("Name"),
        "status": _("Status"),
        "tags": _("Tags"),
        "time_zone": _("Time zone"),
        "first_landing_page": _("First landing page"),
        "utm_source": _("utm_source"),
        "utm_medium": _("utm_medium"),
        "utm_campaign": _("utm_campaign"),
        "created_at": _("Signed up"),
        "confirmed_at": _("Confirmed"),
        "unsubscribed_at": _("Unsubscribed"),
        "audience_sync_error": _("Mailchimp sync error"),
    }
    export_filename = "subscribers"
    inspect_view_fields = [
        "email",
        "name",
        "status",
        "tags",
        "time_zone",
        "created_at",
        "confirmed_at",
        "unsubscribed_at",
        "audience_synced_at",
    ]

    def get_urlpatterns(self):
        return [
            *super().get_urlpatterns(),
            path(
                "unsubscribe/<int:pk>/",
                admin_views.SubscriberUnsubscribeView.as_view(),
                name="unsubscribe",
            ),
        ]


# Sign-ups are written by the opt-in request and processed by a task; the admin only reads
# them, so the creator sees what is still waiting and what failed, and why.
register_permission_policy(SignUp, RefusingPolicy(SignUp, refused={"add", "change", "delete"}))


class SignUpViewSet(ModelViewSet):
    model = SignUp
    icon = "mail"
    # Never saved through the admin (the policy refuses change); Wagtail wants a form.
    form_fields = ["email"]
    menu_label = _("Sign-ups")
    menu_order = 221
    add_to_admin_menu = True
    copy_view_enabled = False
    inspect_view_enabled = True
    search_fields = ["email"]
    search_backend_name = None
    list_filter = ["status"]
    ordering = "-created_at"
    list_per_page = 50
    list_display = [
        "email",
        StatusTagColumn(
            "status",
            label=_("Processing"),
            accessor="get_status_display",
            sort_key="status",
            primary=lambda s: s.status == SignUp.Status.PROCESSED,
        ),
        Column("outcome", label=_("Email sent")),
        Column("attempts", label=_("Attempts")),
        Column("last_error", label=_("Error")),
        Column("landing_page_id", label=_("Page id")),
        DateColumn("created_at", label=_("Received"), sort_key="created_at"),
        DateColumn("processed_at", label=_("Processed"), sort_key="processed_at"),
    ]
    inspect_view_fields = [
        "email",
        "name",
        "status",
        "outcome",
        "attempts",
        "last_error",
        "subscriber",
        "landing_page_id",
        "form_id",
        "form_version",
        "page_url",
        "consent_text",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "referrer",
        "ip_address",
        "user_agent",
        "created_at",
        "processed_at",
    ]


class FunnelReportViewSet(ViewSet):
    name = "funnel_performance"
    url_prefix = "funnel-performance"
    icon = "chart-bar"
    menu_label = _("Funnel performance")
    menu_order = 230
    add_to_admin_menu = True

    @property
    def menu_item_class(self):
        from wagtail.admin.menu import MenuItem

        class ReportMenuItem(MenuItem):
            def is_shown(self, request):
                return admin_views.can_see_subscribers(request.user)

        return ReportMenuItem

    def get_urlpatterns(self):
        return [path("", admin_views.FunnelReportView.as_view(), name="index")]


@hooks.register("register_admin_viewset")
def register_subscriber_viewset():
    return SubscriberViewSet("subscribers")


@hooks.register("register_admin_viewset")
def register_signup_viewset():
    return SignUpViewSet("signups")


@hooks.register("register_admin_viewset")
def register_funnel_report_viewset():
    return FunnelReportViewSet()


@hooks.register("register_icons")
def register_chart_icon(icons):
    return [*icons, "funnels/admin/icons/chart-bar.svg"]


@hooks.register("construct_homepage_panels")
def add_funnel_summary_panel(request, panels):
    if admin_views.can_see_subscribers(request.user):
        panels.append(admin_views.FunnelSummaryPanel(request))


from . import wagtail_hooks_sequences  # noqa: E402,F401
