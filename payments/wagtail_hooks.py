"""Payments in the Wagtail admin: one "Payments" menu with offers, products, orders, Stripe
events and the revenue report, plus a dashboard panel.

Offers are snippets so a landing page's buy button can choose one (SnippetChooserBlock).
Prices are edited on pages of their own, reached from their offer: they are rows of their
own (a foreign key, not a ParentalKey), each with its Stripe twin.
"""

from django import forms
from django.db import transaction
from django.urls import path
from django.utils.translation import gettext_lazy as _
from wagtail import hooks
from wagtail.admin.panels import FieldPanel, MultiFieldPanel, ObjectList
from wagtail.admin.ui.tables import BooleanColumn, Column, DateColumn, StatusTagColumn
from wagtail.admin.viewsets.base import ViewSet
from wagtail.admin.viewsets.model import ModelViewSet
from wagtail.permissions import register_permission_policy
from wagtail.snippets.models import register_snippet
from wagtail.snippets.views.snippets import SnippetViewSet, SnippetViewSetGroup

from core.permissions import RefusingPolicy

from . import admin_views
from .models import Offer, Order, Price, Product, StripeEvent

# Orders and Stripe events are written by Stripe's webhooks only: the admin views and inspects
# them, and acts through named operations (approve, replay) that check the model's change
# permission themselves.
WEBHOOK_ONLY = {"add", "change", "delete"}
register_permission_policy(Order, RefusingPolicy(Order, refused=WEBHOOK_ONLY))
register_permission_policy(StripeEvent, RefusingPolicy(StripeEvent, refused=WEBHOOK_ONLY))


class OfferViewSet(SnippetViewSet):
    model = Offer
    icon = "tag"
    menu_label = _("Offers")
    index_view_class = admin_views.OfferIndexView
    index_template_name = "payments/admin/snippet_index.html"
    add_view_class = admin_views.OfferCreateView
    edit_view_class = admin_views.OfferEditView
    delete_view_class = admin_views.OfferDeleteView
    copy_view_enabled = False
    search_fields = ["title", "slug"]
    search_backend_name = None
    list_filter = ["is_published", "sync_status"]
    list_display = [
        "title",
        Column("slug", label=_("Slug"), sort_key="slug"),
        BooleanColumn("is_published", label=_("Published"), sort_key="is_published"),
        Column("products", label=_("Products"), accessor=admin_views.offer_products),
        Column("prices", label=_("Prices"), accessor=admin_views.offer_prices),
        admin_views.SyncStatusColumn("sync_status", label=_("Stripe"), sort_key="sync_status"),
    ]
    edit_handler = ObjectList(
        [
            FieldPanel("title"),
            FieldPanel(
                "slug", help_text=_("The buy link is /pay/buy/<slug>/. Letters, digits and -.")
            ),
            FieldPanel("description"),
            FieldPanel("is_published"),
            FieldPanel("products", widget=forms.CheckboxSelectMultiple),
            MultiFieldPanel(
                [FieldPanel("first_price_amount"), FieldPanel("first_price_currency")],
                heading=_("Price"),
            ),
            MultiFieldPanel(
                [FieldPanel("bump_offer"), FieldPanel("bump_headline")],
                heading=_("Order bump"),
            ),
            admin_views.OfferStripePanel(heading=_("Prices and Stripe")),
        ],
        base_form_class=admin_views.OfferForm,
    )

    def get_urlpatterns(self):
        return [
            *super().get_urlpatterns(),
            path("sync/<int:pk>/", admin_views.OfferSyncView.as_view(), name="sync"),
        ]


class ProductViewSet(ModelViewSet):
    name = "payments_products"
    url_prefix = "payments/products"
    model = Product
    icon = "grid"
    menu_label = _("Products")
    index_view_class = admin_views.ProductIndexView
    index_template_name = "payments/admin/index.html"
    delete_view_class = admin_views.ProductDeleteView
    copy_view_enabled = False
    form_fields = ["title", "slug", "kind", "description"]
    search_fields = ["title", "slug"]
    search_backend_name = None
    list_filter = ["kind"]
    list_display = [
        "title",
        Column("kind", label=_("Kind"), accessor="get_kind_display", sort_key="kind"),
        Column("slug", label=_("Slug"), sort_key="slug"),
        Column("offer_count", label=_("Offers"), sort_key="offer_count"),
        Column("active_access", label=_("People with access"), sort_key="active_access"),
    ]


class OrderViewSet(ModelViewSet):
    name = "payments_orders"
    url_prefix = "payments/orders"
    model = Order
    icon = "clipboard-list"
    menu_label = _("Orders")
    index_view_class = admin_views.OrderIndexView
    index_template_name = "payments/admin/index.html"
    inspect_view_class = admin_views.OrderInspectView
    inspect_view_enabled = True
    inspect_view_fields = admin_views.ORDER_INSPECT_FIELDS
    copy_view_enabled = False
    form_fields = []
    filterset_class = admin_views.OrderFilterSet
    search_fields = ["email"]
    search_backend_name = None
    ordering = "-created_at"
    list_per_page = 50
    list_display = [
        "email",
        Column("offer", label=_("Offer"), accessor=admin_views.order_offer),
        Column(
            "amount_total",
            label=_("Total"),
            accessor=admin_views.order_total,
            sort_key="amount_total",
            classname="funnels-num",
        ),
        StatusTagColumn(
            "status",
            label=_("Status"),
            accessor="get_status_display",
            sort_key="status",
            primary=lambda o: o.status == Order.Status.PAID,
        ),
        DateColumn("created_at", label=_("Date"), sort_key="created_at"),
    ]
    list_export = list(admin_views.ORDER_EXPORT)
    export_headings = {
        "created_at": _("Date"),
        "paid_at": _("Paid"),
        "email": _("Email"),
        "offer": _("Offer"),
        "price_kind": _("Price kind"),
        "status": _("Status"),
        "currency": _("Currency"),
        "amount_subtotal": _("Subtotal"),
        "amount_discount": _("Discount"),
        "amount_total": _("Total"),
        "amount_refunded": _("Refunded"),
        "stripe_checkout_session_id": _("Stripe Checkout Session"),
        "stripe_payment_intent_id": _("Stripe payment intent"),
        "stripe_subscription_id": _("Stripe subscription"),
        "stripe_customer_id": _("Stripe customer"),
    }
    export_filename = "orders"

    def get_urlpatterns(self):
        return [
            *super().get_urlpatterns(),
            path("approve/<int:pk>/", admin_views.OrderApproveView.as_view(), name="approve"),
        ]


class StripeEventViewSet(ModelViewSet):
    name = "payments_events"
    url_prefix = "payments/stripe-events"
    model = StripeEvent
    icon = "code"
    menu_label = _("Stripe events")
    index_view_class = admin_views.StripeEventIndexView
    index_template_name = "payments/admin/index.html"
    inspect_view_class = admin_views.StripeEventInspectView
    inspect_view_enabled = True
    inspect_view_fields = admin_views.EVENT_INSPECT_FIELDS
    copy_view_enabled = False
    form_fields = []
    filterset_class = admin_views.StripeEventFilterSet
    search_fields = ["stripe_id", "type"]
    search_backend_name = None
    ordering = "-received_at"
    list_per_page = 50
    list_display = [
        "stripe_id",
        Column("type", label=_("Type"), sort_key="type"),
        StatusTagColumn(
            "state",
            label=_("State"),
            accessor=admin_views.event_state,
            primary=lambda e: e.processed_at is not None,
        ),
        Column("attempts", label=_("Attempts"), sort_key="attempts"),
        admin_views.ErrorColumn("last_error", label=_("Last error"), accessor="last_error"),
        DateColumn("received_at", label=_("Received"), sort_key="received_at"),
    ]

    def get_urlpatterns(self):
        # Replaying may call Stripe: no request-wide transaction around it.
        replay = transaction.non_atomic_requests(admin_views.StripeEventReplayView.as_view())
        return [*super().get_urlpatterns(), path("replay/<int:pk>/", replay, name="replay")]


class RevenueReportViewSet(ViewSet):
    name = "payments_revenue"
    url_prefix = "payments/revenue"
    icon = "chart-bar"
    menu_label = _("Revenue")

    @property
    def menu_item_class(self):
        from wagtail.admin.menu import MenuItem

        class ReportMenuItem(MenuItem):
            def is_shown(self, request):
                return admin_views.can_see_revenue(request.user)

        return ReportMenuItem

    def get_urlpatterns(self):
        return [path("", admin_views.RevenueReportView.as_view(), name="index")]


class PaymentsGroup(SnippetViewSetGroup):
    """A snippet group so Offer is registered as a snippet (for the chooser); the other
    items are ordinary viewsets that share its menu."""

    menu_label = _("Payments")
    menu_icon = "tag"
    menu_order = 240
    items = (
        OfferViewSet,
        ProductViewSet,
        OrderViewSet,
        StripeEventViewSet,
        RevenueReportViewSet,
    )


register_snippet(PaymentsGroup)


class PriceViewSet(ModelViewSet):
    """Reached from an offer's page ("Add a price", "Edit"), not from the menu."""

    name = "payments_prices"
    url_prefix = "payments/prices"
    model = Price
    icon = "tag"
    add_to_admin_menu = False
    index_view_class = admin_views.PriceIndexView
    index_template_name = "payments/admin/index.html"
    add_view_class = admin_views.PriceCreateView
    edit_view_class = admin_views.PriceEditView
    delete_view_class = admin_views.PriceDeleteView
    copy_view_enabled = False
    filterset_class = admin_views.PriceFilterSet
    list_display = [
        "__str__",
        Column("kind", label=_("Kind"), accessor="get_kind_display"),
        BooleanColumn("is_active", label=_("Active")),
        admin_views.SyncStatusColumn("sync_status", label=_("Stripe")),
    ]
    edit_handler = ObjectList(
        [
            FieldPanel("offer"),
            FieldPanel("kind"),
            FieldPanel("amount"),
            FieldPanel("currency"),
            FieldPanel("interval"),
            FieldPanel("installments"),
            FieldPanel("is_active"),
        ],
        base_form_class=admin_views.PriceForm,
    )


@hooks.register("register_admin_viewset")
def register_price_viewset():
    return PriceViewSet()


@hooks.register("construct_homepage_panels")
def add_revenue_panel(request, panels):
    if admin_views.can_see_revenue(request.user):
        panels.append(admin_views.RevenueSummaryPanel(request))
