import logging
from dataclasses import dataclass
from datetime import datetime

import stripe
from allauth.account.models import EmailAddress
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from payments import exceptions as payment_exceptions
from payments import selectors as payment_selectors
from payments.models import Order, Product, StripeCustomer
from payments.stripe_client import as_dict, stripe_client

logger = logging.getLogger(__name__)

# Orders whose money arrived, so Stripe has a receipt (or an invoice) for them.
RECEIPT_STATUSES = (
    Order.Status.PAID,
    Order.Status.REFUNDED,
    Order.Status.DISPUTED,
    Order.Status.NEEDS_REVIEW,
)


@dataclass(frozen=True)
class Access:
    product: Product
    url: str
    since: datetime
    until: datetime | None


@login_required
def account_overview(request):
    user = request.user
    emails = EmailAddress.objects.filter(user=user).order_by("-primary", "email")
    orders = list(
        payment_selectors.orders_for(user).select_related("offer").order_by("-created_at")
    )
    access = [
        Access(
            product=ent.product,
            url=payment_selectors.product_page_url(ent.product),
            since=ent.starts_at,
            until=ent.ends_at,
        )
        for ent in payment_selectors.entitlements_for(user)
    ]
    return render(
        request,
        "account/overview.html",
        {
            "emails": emails,
            "orders": orders,
            "access": access,
            "receipt_statuses": RECEIPT_STATUSES,
            "can_manage_billing": StripeCustomer.objects.filter(user=user).exists(),
        },
    )


def _receipt_url(order: Order) -> str:
    """Stripe's own receipt for the order's payment: the charge's receipt for a one-time
    payment, the hosted invoice for a subscription's first payment. Asked for when the buyer
    clicks, not stored (Order keeps no receipt URL)."""
    client = stripe_client()
    if order.stripe_payment_intent_id:
        intent = as_dict(
            client.v1.payment_intents.retrieve(
                order.stripe_payment_intent_id, params={"expand": ["latest_charge"]}
            )
        )
        charge = intent.get("latest_charge") or {}
        if isinstance(charge, dict) and charge.get("receipt_url"):
            return charge["receipt_url"]
    if order.stripe_invoice_id:
        invoice = as_dict(client.v1.invoices.retrieve(order.stripe_invoice_id))
        if invoice.get("hosted_invoice_url"):
            return invoice["hosted_invoice_url"]
    return ""


@transaction.non_atomic_requests
@never_cache
@login_required
@require_GET
def order_receipt(request, order_id: int):
    """Off to Stripe's receipt for one of the signed-in buyer's own orders."""
    order = get_object_or_404(Order, pk=order_id, buyer=request.user, status__in=RECEIPT_STATUSES)
    try:
        url = _receipt_url(order)
    except (stripe.StripeError, payment_exceptions.PaymentError) as exc:
        logger.warning("Receipt for order %s not available: %r", order.pk, exc)
        url = ""
    if not url:
        messages.error(
            request,
            _("The receipt for this order is not available right now. Please try again later."),
        )
        return redirect("account_overview")
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response
