"""The creator's side of payments in the Wagtail admin: offers and their prices, products,
orders, Stripe events, the revenue report and its dashboard panel.

Every change goes through payments.services (sync, approve) or payments.webhooks
(replay); the read-only queries the report needs live at the bottom of this module, as
the funnel report's do.
"""

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import django_filters
from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Case, Count, Prefetch, Q, Sum, Value, When
from django.db.models.deletion import ProtectedError
from django.db.models.functions import Coalesce, TruncDate
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.generic import TemplateView
from wagtail.admin.filters import DateRangePickerWidget, WagtailFilterSet
from wagtail.admin.forms import WagtailAdminModelForm
from wagtail.admin.panels import Panel
from wagtail.admin.ui.components import Component
from wagtail.admin.ui.tables import Column, TitleColumn
from wagtail.admin.views import generic
from wagtail.admin.views.generic.base import BaseOperationView
from wagtail.snippets.views import snippets as snippet_views

from core.admin_reports import (
    REPORT_DEFAULT_DAYS,
    DailyPairChart,
    DayPair,
    ReportPeriodForm,
    SpreadsheetExportMixin,
    daily_pair_chart,
    fmt_int,
    period_presets,
    post_button,
)

from . import exceptions, services, webhooks
from .models import (
    Entitlement,
    Offer,
    Order,
    PaymentReversal,
    Price,
    Product,
    StripeEvent,
    SubscriptionInvoice,
)
from .money import (
    MoneyError,
    exponent,
    format_money,
    normalize_currency,
    to_decimal,
    to_minor_units,
)

DASHBOARD_DAYS = 7
# Orders whose money arrived: pending bank debits and failed payments brought none yet.
RECEIVED_STATUSES = (
    Order.Status.PAID,
    Order.Status.REFUNDED,
    Order.Status.DISPUTED,
    Order.Status.NEEDS_REVIEW,
)
OFFER_EDIT_URL = "wagtailsnippets_payments_offer:edit"


def can_see_revenue(user) -> bool:
    return user.is_active and user.has_perm("payments.view_order")


def _local(value):
    if value is None:
        return None
    return timezone.localtime(value).replace(microsecond=0, tzinfo=None)


def _major(amount: int, currency: str):
    """Minor units as a Decimal in major units, for spreadsheets (49.00, not 4900)."""
    try:
        return to_decimal(int(amount), currency)
    except (MoneyError, TypeError, ValueError):
        return None


# --- Offers and prices ----------------------------------------------------------------------


def offer_products(offer: Offer) -> str:
    return ", ".join(p.title for p in offer.products.all()) or "—"


def offer_prices(offer: Offer) -> str:
    active = [p.display for p in offer.prices.all() if p.is_active]
    return ", ".join(active) or _("No active price")


class SyncStatusColumn(Column):
    cell_template_name = "payments/admin/sync_status_cell.html"

    def get_value(self, instance):
        return instance


class ErrorColumn(Column):
    cell_template_name = "payments/admin/error_cell.html"


class OfferForm(WagtailAdminModelForm):
    """The offer, and on creation its first price, so a new offer can be sold at once.
    Further prices (a payment plan, a second currency) are added from the offer's page."""

    first_price_amount = forms.CharField(
        label=gettext_lazy("Price"),
        max_length=20,
        help_text=gettext_lazy("What the buyer pays once, e.g. 49 or 49.00."),
    )
    first_price_currency = forms.CharField(
        label=gettext_lazy("Currency"),
        max_length=3,
        initial="usd",
        help_text=gettext_lazy("Three-letter code: usd, eur, gbp, jpy…"),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            del self.fields["first_price_amount"]
            del self.fields["first_price_currency"]

    def clean(self):
        data = super().clean()
        if "first_price_amount" not in self.fields:
            return data
        currency = (data.get("first_price_currency") or "").strip().lower()
        amount = data.get("first_price_amount")
        if not currency or amount in (None, ""):
            return data
        try:
            currency = normalize_currency(currency)
        except MoneyError as exc:
            self.add_error("first_price_currency", str(exc))
            return data
        try:
            minor = to_minor_units(amount, currency)
        except MoneyError as exc:
            self.add_error("first_price_amount", str(exc))
            return data
        if minor <= 0:
            self.add_error("first_price_amount", _("A price is more than zero."))
        data["first_price"] = (minor, currency)
        return data


class OfferCreateView(snippet_views.CreateView):
    def save_instance(self):
        with transaction.atomic():
            offer = super().save_instance()
            minor, currency = self.form.cleaned_data["first_price"]
            Price.objects.create(offer=offer, amount=minor, currency=currency)
            services.offer_request_sync(offer=offer)
        return offer


class OfferEditView(snippet_views.EditView):
    def save_instance(self):
        offer = super().save_instance()
        services.offer_request_sync(offer=offer)
        return offer

    @cached_property
    def header_more_buttons(self):
        buttons = list(super().header_more_buttons)
        if self.user_has_permission("change"):
            buttons.append(
                post_button(
                    _("Sync to Stripe"),
                    reverse("wagtailsnippets_payments_offer:sync", args=[self.object.pk]),
                    icon="resubmit",
                )
            )
        return buttons


class OfferIndexView(snippet_views.IndexView):
    def get_base_queryset(self):
        return (
            super()
            .get_base_queryset()
            .prefetch_related("products", Prefetch("prices", Price.objects.order_by("pk")))
        )

    def get_list_more_buttons(self, instance):
        buttons = list(super().get_list_more_buttons(instance))
        if self.user_has_permission("change"):
            buttons.append(
                post_button(
                    _("Sync to Stripe"),
                    reverse("wagtailsnippets_payments_offer:sync", args=[instance.pk]),
                    icon="resubmit",
                    priority=25,
                )
            )
        return buttons


class OfferDeleteView(snippet_views.DeleteView):
    @property
    def confirmation_message(self):
        message = super().confirmation_message
        orders = self.object.orders.count()
        if orders:
            message += " " + ngettext(
                "Its %(count)s order keeps its record (offer name and amounts); "
                "unpublishing the offer instead keeps it in the reports by name.",
                "Its %(count)s orders keep their record (offer name and amounts); "
                "unpublishing the offer instead keeps it in the reports by name.",
                orders,
            ) % {"count": fmt_int(orders)}
        if self.object.stripe_product_id:
            message += " " + _("Its Stripe product stays in Stripe; archive it there.")
        return message


class OfferSyncView(generic.PermissionCheckedMixin, BaseOperationView):
    model = Offer
    permission_required = "change"
    http_method_names = ["post"]
    success_url_name = OFFER_EDIT_URL

    def perform_operation(self):
        services.offer_request_sync(offer=self.object)

    def get_success_message(self):
        return _(
            "'%(offer)s' is queued to sync to Stripe. Its status below updates in a few "
            "seconds; reload the page to see it."
        ) % {"offer": self.object}


class OfferStripePanel(Panel):
    """On the offer's page: where it stands in Stripe, and its prices (each edited on a
    page of its own, since prices are rows of their own with a Stripe twin each)."""

    class BoundPanel(Panel.BoundPanel):
        template_name = "payments/admin/offer_stripe_panel.html"

        def get_context_data(self, parent_context=None):
            context = super().get_context_data(parent_context)
            offer = self.instance
            context.update(
                offer=offer,
                prices=offer.prices.order_by("pk") if offer.pk else [],
                add_price_url=(
                    reverse("payments_prices:add") + f"?offer={offer.pk}" if offer.pk else None
                ),
                sync_url=(
                    reverse("wagtailsnippets_payments_offer:sync", args=[offer.pk])
                    if offer.pk
                    else None
                ),
            )
            return context


class PriceForm(WagtailAdminModelForm):
    """Amounts are typed as the buyer reads them (49.00) and stored in minor units."""

    amount = forms.CharField(
        label=gettext_lazy("Amount"),
        max_length=20,
        help_text=gettext_lazy(
            "Per payment, e.g. 49 or 49.00. A payment plan charges this each interval."
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["amount"] = str(to_decimal(self.instance.amount, self.instance.currency))
            self.fields["offer"].disabled = True
            self.fields["offer"].help_text = _("A price belongs to its offer for good.")

    def clean_currency(self):
        return (self.cleaned_data.get("currency") or "").strip().lower()

    def clean(self):
        data = super().clean()
        amount, currency = data.get("amount"), data.get("currency")
        if not isinstance(amount, str):
            return data
        if not currency:
            data.pop("amount")  # the currency's own error says what to fix
            return data
        try:
            currency = normalize_currency(currency)
        except MoneyError as exc:
            data.pop("amount")
            self.add_error("currency", str(exc))
            return data
        try:
            minor = to_minor_units(amount, currency)
        except MoneyError as exc:
            self.add_error("amount", str(exc))
            return data
        if minor <= 0:
            self.add_error("amount", _("A price is more than zero."))
            return data
        data["amount"] = minor
        return data


class PriceCreateView(generic.CreateView):
    def get_initial(self):
        initial = super().get_initial()
        if offer_id := self.request.GET.get("offer"):
            initial["offer"] = offer_id
            offer = Offer.objects.filter(pk=offer_id).first()
            last = offer.prices.order_by("-pk").first() if offer else None
            if last:
                initial["currency"] = last.currency
        return initial

    def save_instance(self):
        price = super().save_instance()
        services.offer_request_sync(offer=price.offer)
        return price

    def get_success_url(self):
        return reverse(OFFER_EDIT_URL, args=[self.object.offer_id])


class PriceEditView(generic.EditView):
    def save_instance(self):
        price = super().save_instance()
        services.offer_request_sync(offer=price.offer)
        return price

    def get_success_url(self):
        return reverse(OFFER_EDIT_URL, args=[self.object.offer_id])


class PriceDeleteView(generic.DeleteView):
    """Only a price never sent to Stripe and never bought goes; any other is switched off
    (unticked "active"), so orders and open checkouts keep what they point at."""

    def dispatch(self, request, *args, **kwargs):
        price = self.object
        if price.stripe_price_id or price.orders.exists():
            messages.error(
                request,
                _(
                    "This price is in Stripe or has been bought, so it is kept. Untick "
                    "'Is active' to stop selling it."
                ),
            )
            return redirect(reverse("payments_prices:edit", args=[price.pk]))
        return super().dispatch(request, *args, **kwargs)

    def get_success_url(self):
        return reverse(OFFER_EDIT_URL, args=[self.object.offer_id])


class PriceIndexView(generic.IndexView):
    def get_base_queryset(self):
        return super().get_base_queryset().select_related("offer")


class PriceFilterSet(WagtailFilterSet):
    offer = django_filters.ModelChoiceFilter(
        label=gettext_lazy("Offer"), queryset=Offer.objects.order_by("title")
    )

    class Meta:
        model = Price
        fields = ["offer", "kind", "currency", "is_active"]


# --- Products -----------------------------------------------------------------------------


class ProductIndexView(generic.IndexView):
    def get_base_queryset(self):
        return (
            super()
            .get_base_queryset()
            .annotate(
                active_access=Count(
                    "entitlements",
                    filter=Q(entitlements__in=Entitlement.objects.active()),
                    distinct=True,
                ),
                offer_count=Count("offers", distinct=True),
            )
        )


class ProductDeleteView(generic.DeleteView):
    def dispatch(self, request, *args, **kwargs):
        product = self.object
        if product.entitlements.exists():
            messages.error(
                request,
                _(
                    "People have (or had) access to this product, so it cannot be deleted: "
                    "their purchase records point at it."
                ),
            )
            return redirect(reverse("payments_products:edit", args=[product.pk]))
        return super().dispatch(request, *args, **kwargs)

    def delete_action(self):
        try:
            super().delete_action()
        except ProtectedError as exc:
            names = ", ".join(sorted({str(obj) for obj in exc.protected_objects})[:5])
            raise PermissionDenied(
                _("Something still uses this product: %(names)s") % {"names": names}
            ) from exc


# --- Orders -------------------------------------------------------------------------------


def order_total(order: Order) -> str:
    return order.total_display or "—"


def order_offer(order: Order) -> str:
    return order.offer_title or order.offer_slug or _("(unknown offer)")


class OrderFilterSet(WagtailFilterSet):
    status = django_filters.ChoiceFilter(label=gettext_lazy("Status"), choices=Order.Status.choices)
    offer = django_filters.ModelChoiceFilter(
        label=gettext_lazy("Offer"), queryset=Offer.objects.order_by("title")
    )
    created = django_filters.DateFromToRangeFilter(
        label=gettext_lazy("Date"), field_name="created_at", widget=DateRangePickerWidget
    )

    class Meta:
        model = Order
        fields = []


ORDER_EXPORT = {
    "created_at": lambda o: _local(o.created_at),
    "paid_at": lambda o: _local(o.paid_at),
    "email": lambda o: o.email,
    "offer": order_offer,
    "price_kind": lambda o: o.get_price_kind_display(),
    "status": lambda o: o.get_status_display(),
    "currency": lambda o: o.currency.upper(),
    "amount_subtotal": lambda o: _major(o.amount_subtotal, o.currency),
    "amount_discount": lambda o: _major(o.amount_discount, o.currency),
    "amount_total": lambda o: _major(o.amount_total, o.currency),
    "amount_refunded": lambda o: _major(o.amount_refunded, o.currency),
    "stripe_checkout_session_id": lambda o: o.stripe_checkout_session_id,
    "stripe_payment_intent_id": lambda o: o.stripe_payment_intent_id,
    "stripe_subscription_id": lambda o: o.stripe_subscription_id,
    "stripe_customer_id": lambda o: o.stripe_customer_id,
}


class OrderIndexView(SpreadsheetExportMixin, generic.IndexView):
    def get_base_queryset(self):
        return super().get_base_queryset().select_related("offer")

    def _get_title_column(self, field_name, column_class=TitleColumn, **kwargs):
        # An order's page is its inspect view: orders are never edited by hand.
        return self._get_custom_column(
            field_name,
            self._get_title_column_class(column_class),
            get_url=self.get_inspect_url,
            **kwargs,
        )

    def to_row_dict(self, item):
        return {field: ORDER_EXPORT[field](item) for field in self.list_export}


@dataclass(frozen=True)
class OrderLine:
    title: str
    role: str
    amount: str
    products: list[Product]


def related_events(order: Order):
    """The Stripe events about this order: its session, payment, subscription, invoices,
    refunds and disputes (found by the ids they name)."""
    ids = [
        i
        for i in (
            order.stripe_checkout_session_id,
            order.stripe_payment_intent_id,
            order.stripe_subscription_id,
            order.stripe_invoice_id,
            *order.invoices.values_list("stripe_invoice_id", flat=True),
            *order.reversals.values_list("stripe_object_id", flat=True),
        )
        if i
    ]
    match = Q(payload__data__object__id__in=ids)
    if order.stripe_payment_intent_id:
        match |= Q(payload__data__object__payment_intent=order.stripe_payment_intent_id)
    return StripeEvent.objects.filter(match).order_by("received_at")


ORDER_INSPECT_FIELDS = [
    "email",
    "buyer",
    "status",
    "offer_title",
    "price_kind",
    "amount_subtotal",
    "amount_discount",
    "amount_total",
    "amount_refunded",
    "installments_paid",
    "subscription_status",
    "created_at",
    "paid_at",
    "refunded_at",
    "disputed_at",
    "failed_at",
]


class OrderInspectView(generic.InspectView):
    template_name = "payments/admin/order_inspect.html"
    money_fields = ("amount_subtotal", "amount_discount", "amount_total", "amount_refunded")

    def get_object(self, queryset=None):
        return get_object_or_404(
            Order.objects.select_related("buyer", "offer", "price"), pk=self.pk
        )

    def get_page_subtitle(self):
        return f"{order_offer(self.object)} · {self.object.email}"

    def get_field_display_value(self, field_name, field):
        order = self.object
        if field_name in self.money_fields and order.currency:
            return format_money(getattr(order, field_name), order.currency)
        if field_name == "installments_paid":
            if order.price_kind != Price.Kind.PAYMENT_PLAN:
                return "—"
            return f"{order.installments_paid} / {order.installments_total or '?'}"
        value = super().get_field_display_value(field_name, field)
        return "—" if value is None or value == "" else value

    @cached_property
    def can_approve(self) -> bool:
        return self.object.status == Order.Status.NEEDS_REVIEW and self.request.user.has_perm(
            "payments.change_order"
        )

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        order = self.object
        lines = [
            OrderLine(
                title=item.title,
                role=item.get_role_display(),
                amount=format_money(item.amount, item.currency),
                products=list(item.products.all()),
            )
            for item in order.items.prefetch_related("products")
        ]
        context.update(
            lines=lines,
            entitlements=order.entitlements.select_related("product", "user").order_by(
                "product__title"
            ),
            invoices=order.invoices.order_by("paid_at"),
            reversals=order.reversals.order_by("occurred_at"),
            events=related_events(order),
            stripe_ids=[
                (label, value)
                for label, value in (
                    (_("Checkout Session"), order.stripe_checkout_session_id),
                    (_("Payment intent"), order.stripe_payment_intent_id),
                    (_("Subscription"), order.stripe_subscription_id),
                    (_("First invoice"), order.stripe_invoice_id),
                    (_("Customer"), order.stripe_customer_id),
                )
                if value
            ],
            can_approve=self.can_approve,
            approve_url=reverse("payments_orders:approve", args=[order.pk]),
        )
        return context


class OrderApproveView(BaseOperationView):
    """The creator checked an order in review (in Stripe) and lets it through."""

    model = Order
    http_method_names = ["post"]
    success_url_name = "payments_orders:inspect"

    def dispatch(self, request, *args, **kwargs):
        if not request.user.has_perm("payments.change_order"):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def post(self, request, *args, **kwargs):
        if self.object.status != Order.Status.NEEDS_REVIEW:
            messages.warning(request, _("This order is not waiting for review."))
            return redirect(self.get_success_url())
        try:
            order = services.order_approve(order_id=self.object.pk)
        except exceptions.PaymentError as error:
            messages.error(request, error.message)
            return redirect(self.get_success_url())
        messages.success(
            request,
            _("Order approved: %(email)s has access now and gets the welcome email.")
            % {"email": order.email},
        )
        return redirect(self.get_success_url())


# --- Stripe events ------------------------------------------------------------------------


def event_state(event: StripeEvent) -> str:
    if event.processed_at:
        return _("Processed")
    if event.last_error:
        return _("Failed")
    return _("Waiting")


def event_is_failed(event: StripeEvent) -> bool:
    return event.processed_at is None and bool(event.last_error)


def _event_type_choices():
    types = StripeEvent.objects.order_by("type").values_list("type", flat=True).distinct()
    return [(t, t) for t in types[:200]]


class StripeEventFilterSet(WagtailFilterSet):
    type = django_filters.ChoiceFilter(label=gettext_lazy("Type"), choices=_event_type_choices)
    state = django_filters.ChoiceFilter(
        label=gettext_lazy("State"),
        method="filter_state",
        choices=[
            ("failed", gettext_lazy("Failed")),
            ("processed", gettext_lazy("Processed")),
            ("waiting", gettext_lazy("Waiting")),
        ],
    )
    received = django_filters.DateFromToRangeFilter(
        label=gettext_lazy("Received"), field_name="received_at", widget=DateRangePickerWidget
    )

    class Meta:
        model = StripeEvent
        fields = []

    def filter_state(self, queryset, name, value):
        if value == "failed":
            return queryset.filter(processed_at__isnull=True).exclude(last_error="")
        if value == "processed":
            return queryset.filter(processed_at__isnull=False)
        if value == "waiting":
            return queryset.filter(processed_at__isnull=True, last_error="")
        return queryset


class StripeEventIndexView(generic.IndexView):
    def get_base_queryset(self):
        # The payload can be large; the list never shows it.
        return super().get_base_queryset().defer("payload", "error_traceback")

    def _get_title_column(self, field_name, column_class=TitleColumn, **kwargs):
        return self._get_custom_column(
            field_name,
            self._get_title_column_class(column_class),
            get_url=self.get_inspect_url,
            **kwargs,
        )

    def get_list_more_buttons(self, instance):
        buttons = list(super().get_list_more_buttons(instance))
        if event_is_failed(instance) and self.request.user.has_perm("payments.change_stripeevent"):
            buttons.append(
                post_button(
                    _("Replay"),
                    reverse("payments_events:replay", args=[instance.pk]),
                    icon="rotate",
                )
            )
        return buttons


def order_for_event(event: StripeEvent) -> Order | None:
    obj = event.data_object
    ids = [obj.get("id"), obj.get("payment_intent"), obj.get("subscription")]
    ids = [i for i in ids if isinstance(i, str) and i]
    if not ids:
        return None
    return (
        Order.objects.filter(
            Q(stripe_checkout_session_id__in=ids)
            | Q(stripe_payment_intent_id__in=ids)
            | Q(stripe_subscription_id__in=ids)
            | Q(stripe_invoice_id__in=ids)
            | Q(invoices__stripe_invoice_id__in=ids)
            | Q(reversals__stripe_object_id__in=ids)
        )
        .distinct()
        .first()
    )


EVENT_INSPECT_FIELDS = [
    "stripe_id",
    "type",
    "api_version",
    "livemode",
    "received_via",
    "stripe_created_at",
    "received_at",
    "processed_at",
    "attempts",
    "last_error_at",
]


class StripeEventInspectView(generic.InspectView):
    template_name = "payments/admin/event_inspect.html"

    def get_page_subtitle(self):
        return f"{self.object.type} · {self.object.stripe_id}"

    def get_field_display_value(self, field_name, field):
        value = super().get_field_display_value(field_name, field)
        return "—" if value is None or value == "" else value

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        event = self.object
        context.update(
            state=event_state(event),
            failed=event_is_failed(event),
            can_replay=event_is_failed(event)
            and self.request.user.has_perm("payments.change_stripeevent"),
            replay_url=reverse("payments_events:replay", args=[event.pk]),
            payload=json.dumps(event.payload, indent=2, sort_keys=True, ensure_ascii=False),
            order=order_for_event(event),
        )
        return context


class StripeEventReplayView(BaseOperationView):
    """Process a failed event again, once its cause is fixed. Runs outside the request's
    transaction (see wagtail_hooks): handlers may call Stripe, and a failure is recorded
    on the event rather than rolled back."""

    model = StripeEvent
    http_method_names = ["post"]
    success_url_name = "payments_events:inspect"

    def dispatch(self, request, *args, **kwargs):
        if not request.user.has_perm("payments.change_stripeevent"):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def post(self, request, *args, **kwargs):
        event = self.object
        if event.processed_at is not None:
            messages.warning(request, _("This event was already processed."))
            return redirect(self.get_success_url())
        try:
            webhooks.stripe_event_replay(stripe_id=event.stripe_id)
        except exceptions.EventProcessingFailed as exc:
            messages.error(
                request,
                _("The event failed again: %(error)s") % {"error": str(exc)[:300]},
            )
        except exceptions.PaymentError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, _("Event %(id)s processed.") % {"id": event.stripe_id})
        return redirect(self.get_success_url())


# --- Revenue report and dashboard panel ----------------------------------------------------


def _default_period() -> tuple[date, date]:
    until = timezone.localdate()
    return until - timedelta(days=REPORT_DEFAULT_DAYS - 1), until


class RevenueReportView(generic.WagtailAdminTemplateMixin, TemplateView):
    template_name = "payments/admin/revenue_report.html"
    page_title = gettext_lazy("Revenue")
    header_icon = "chart-bar"

    def dispatch(self, request, *args, **kwargs):
        if not can_see_revenue(request.user):
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
            since, until = _default_period()
            if not form.is_bound:
                form = ReportPeriodForm(initial={"since": since, "until": until})
        currencies = revenue_by_currency(since=since, until=until)
        for report in currencies:
            report.chart = revenue_chart(report, since=since, until=until)
        context.update(
            form=form,
            since=since,
            until=until,
            currencies=currencies,
            reversals=reversals_in(since=since, until=until),
            orders_url=reverse("payments_orders:index"),
            offers_url=reverse("wagtailsnippets_payments_offer:list"),
            presets=period_presets(since=since, until=until),
        )
        return context


class RevenueSummaryPanel(Component):
    """Dashboard panel: the last week's takings per currency, and a way into the report."""

    name = "revenue_summary"
    order = 55
    template_name = "payments/admin/dashboard_panel.html"

    def __init__(self, request):
        self.request = request

    def get_context_data(self, parent_context=None):
        until = timezone.localdate()
        since = until - timedelta(days=DASHBOARD_DAYS - 1)
        return {
            "currencies": revenue_by_currency(since=since, until=until),
            "days": DASHBOARD_DAYS,
            "report_url": reverse("payments_revenue:index"),
            "needs_review": Order.objects.filter(status=Order.Status.NEEDS_REVIEW).count(),
            "failed_events": StripeEvent.objects.filter(processed_at__isnull=True)
            .exclude(last_error="")
            .count(),
            "review_url": reverse("payments_orders:index") + f"?status={Order.Status.NEEDS_REVIEW}",
            "events_url": reverse("payments_events:index") + "?state=failed",
        }


# --- Chart: revenue per day, geometry in Python, drawn by the template as inline SVG --------


def money_short(amount: int, currency: str) -> str:
    """An axis label: "$1,200", not "$1,200.00" (fractions only where there are some)."""
    text = format_money(amount, currency)
    exp = exponent(currency)
    if exp and amount % 10**exp == 0:
        zeros = "." + "0" * exp
        text = text.replace(zeros, "", 1)
    return text


def revenue_chart(report: "CurrencyRevenue", *, since: date, until: date) -> DailyPairChart:
    """Money taken per day as bars, refunds as a narrower darker bar in front of them."""
    currency = report.currency
    period = {
        "since": date_format(since, "DATE_FORMAT"),
        "until": date_format(until, "DATE_FORMAT"),
        "currency": currency.upper(),
    }
    totals = report.totals
    if not (totals.gross or totals.refunds):
        desc = _("No %(currency)s payments from %(since)s to %(until)s.") % period
    else:
        best = max(report.days, key=lambda d: d.figures.gross)
        desc = _(
            "Money taken in %(currency)s per day from %(since)s to %(until)s: %(gross)s in "
            "all, the best day %(day)s with %(best)s. Refunds: %(refunds)s. Net: %(net)s."
        ) % {
            **period,
            "gross": format_money(totals.gross, currency),
            "day": date_format(best.day, "DATE_FORMAT"),
            "best": format_money(best.figures.gross, currency),
            "refunds": format_money(totals.refunds, currency),
            "net": format_money(totals.net, currency),
        }
    return daily_pair_chart(
        [
            DayPair(
                day=day.day,
                outer=day.figures.gross,
                inner=day.figures.refunds,
                tooltip=_("%(day)s: %(gross)s taken, %(refunds)s refunded, %(orders)s orders")
                % {
                    "day": date_format(day.day, "D j M"),
                    "gross": format_money(day.figures.gross, currency),
                    "refunds": format_money(day.figures.refunds, currency),
                    "orders": fmt_int(day.figures.orders),
                },
            )
            for day in report.days
        ],
        series=(("gross", _("Taken")), ("refunds", _("Refunded"))),
        title=_("Money taken and refunded per day, %(currency)s") % period,
        desc=desc,
        empty_text=_("No payments in this period."),
        dom_id=f"revenue-{currency}",
        unit=10 ** exponent(currency),
        tick_label=lambda minor: money_short(minor, currency),
        plot_left=72,
        legend_gap=80,
    )


# --- Report queries ---------------------------------------------------------------------------


@dataclass
class Figures:
    """Amounts in one currency's minor units; never added across currencies."""

    gross: int = 0
    refunds: int = 0
    orders: int = 0

    @property
    def net(self) -> int:
        return self.gross - self.refunds

    def add(self, other: "Figures") -> None:
        self.gross += other.gross
        self.refunds += other.refunds
        self.orders += other.orders


@dataclass
class OfferRevenue:
    offer_id: int | None
    title: str
    figures: Figures


@dataclass
class DayRevenue:
    day: date
    figures: Figures


@dataclass
class CurrencyRevenue:
    currency: str
    totals: Figures
    offers: list[OfferRevenue]
    days: list[DayRevenue]
    chart: DailyPairChart | None = field(default=None)


def _period(since: date, until: date):
    tz = timezone.get_current_timezone()
    start = timezone.make_aware(datetime.combine(since, time.min), tz)
    end = timezone.make_aware(datetime.combine(until + timedelta(days=1), time.min), tz)
    return start, end, tz


def revenue_by_currency(*, since: date, until: date) -> list[CurrencyRevenue]:
    """Money taken, refunded and orders made per currency, offer and day (site time).

    Taken: one-time orders when paid (or, for orders held for review, when made) plus every
    paid subscription invoice, first payments and renewals alike; a subscription order's
    own total is its first invoice, so it is not counted twice. Refunded: refunds matched to
    an order, on the day Stripe reported them. Orders: purchases made, refunded or not.
    Disputes are listed by reversals_in, not subtracted: Stripe decides them later.
    """
    start, end, tz = _period(since, until)
    cells: dict[tuple[str, tuple, date], Figures] = defaultdict(Figures)
    snapshot_titles: dict[tuple, str] = {}

    def key_of(offer_id, title):
        key = ("offer", offer_id) if offer_id else ("title", title or "")
        snapshot_titles.setdefault(key, title or "")
        return key

    orders = (
        Order.objects.filter(status__in=RECEIVED_STATUSES)
        .exclude(currency="")
        .annotate(at=Coalesce("paid_at", "created_at"))
        .filter(at__gte=start, at__lt=end)
        .annotate(day=TruncDate("at", tzinfo=tz))
        .values("currency", "offer_id", "offer_title", "day")
        .annotate(
            n=Count("pk"),
            one_time=Sum(
                Case(
                    When(stripe_subscription_id="", then="amount_total"),
                    default=Value(0),
                )
            ),
        )
    )
    for row in orders:
        cell = cells[(row["currency"], key_of(row["offer_id"], row["offer_title"]), row["day"])]
        cell.orders += row["n"]
        cell.gross += row["one_time"] or 0

    invoices = (
        SubscriptionInvoice.objects.filter(order__isnull=False, paid_at__gte=start, paid_at__lt=end)
        .exclude(order__currency="")
        .annotate(day=TruncDate("paid_at", tzinfo=tz))
        .values("order__currency", "order__offer_id", "order__offer_title", "day")
        .annotate(total=Sum("amount_paid"))
    )
    for row in invoices:
        key = key_of(row["order__offer_id"], row["order__offer_title"])
        cells[(row["order__currency"], key, row["day"])].gross += row["total"] or 0

    refunds = (
        PaymentReversal.objects.filter(
            kind=PaymentReversal.Kind.REFUND,
            order__isnull=False,
            occurred_at__gte=start,
            occurred_at__lt=end,
        )
        .exclude(order__currency="")
        .annotate(day=TruncDate("occurred_at", tzinfo=tz))
        .values("order__currency", "order__offer_id", "order__offer_title", "day")
        .annotate(total=Sum("amount"))
    )
    for row in refunds:
        key = key_of(row["order__offer_id"], row["order__offer_title"])
        cells[(row["order__currency"], key, row["day"])].refunds += row["total"] or 0

    offer_ids = [key[1] for key in snapshot_titles if key[0] == "offer"]
    current_titles = dict(Offer.objects.filter(pk__in=offer_ids).values_list("pk", "title"))

    def title_of(key) -> str:
        if key[0] == "offer" and key[1] in current_titles:
            return current_titles[key[1]]
        return snapshot_titles.get(key) or _("(deleted offer)")

    all_days = [since + timedelta(days=i) for i in range((until - since).days + 1)]
    reports = []
    for currency in sorted({c for c, _k, _d in cells}):
        totals = Figures()
        per_offer: dict[tuple, Figures] = defaultdict(Figures)
        per_day: dict[date, Figures] = defaultdict(Figures)
        for (cur, key, day), figures in cells.items():
            if cur != currency:
                continue
            totals.add(figures)
            per_offer[key].add(figures)
            per_day[day].add(figures)
        offers = sorted(
            (
                OfferRevenue(
                    offer_id=key[1] if key[0] == "offer" else None,
                    title=title_of(key),
                    figures=figures,
                )
                for key, figures in per_offer.items()
            ),
            key=lambda o: (-o.figures.gross, -o.figures.orders, o.title.lower()),
        )
        reports.append(
            CurrencyRevenue(
                currency=currency,
                totals=totals,
                offers=offers,
                days=[DayRevenue(day=d, figures=per_day.get(d, Figures())) for d in all_days],
            )
        )
    reports.sort(key=lambda r: (-r.totals.gross, r.currency))
    return reports


def reversals_in(*, since: date, until: date, limit: int = 200) -> list[PaymentReversal]:
    """Refunds and disputes matched to an order, newest first."""
    start, end, _tz = _period(since, until)
    return list(
        PaymentReversal.objects.filter(
            kind__in=[PaymentReversal.Kind.REFUND, PaymentReversal.Kind.DISPUTE],
            order__isnull=False,
            occurred_at__gte=start,
            occurred_at__lt=end,
        )
        .select_related("order")
        .order_by("-occurred_at")[:limit]
    )
