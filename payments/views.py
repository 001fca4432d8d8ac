"""HTTP edges of payments: they parse, call a service, and turn errors into messages.

Views that call Stripe are exempt from ATOMIC_REQUESTS: no database transaction is held
open across a network call, and a failure recorded before an error page is not rolled back.
"""

import logging
import re
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from core.csrf import same_origin_post

from . import exceptions, selectors, services, webhooks
from .models import Order, StripeCustomer

logger = logging.getLogger(__name__)

SESSION_CHECKOUTS = "payments_checkouts"
SESSION_ID_RE = re.compile(r"cs_(test_|live_)?[A-Za-z0-9]{8,250}")
# The success page signs a brand-new buyer in only this soon after paying, and only in the
# browser that started the checkout.
AUTO_LOGIN_WINDOW = timedelta(hours=1)
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


def _problem(request, error: exceptions.PaymentError, *, title: str, **extra):
    context = {"title": title, "message": error.message, **extra}
    return render(request, "payments/message.html", context, status=error.status)


def _see_other(url: str) -> HttpResponseRedirect:
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


@transaction.non_atomic_requests
@never_cache
# Buy buttons sit on edge-cached landing and product pages, which cannot carry a per-visitor
# CSRF token (its cookie would make the page private): the post must come from our origin.
@same_origin_post
@require_http_methods(["GET", "POST"])
def buy(request, slug: str):
    """GET: the offer with its prices and order bump. POST: off to Stripe Checkout."""
    token = request.GET.get("s") or request.POST.get("s") or ""
    subscriber = services.subscriber_from_checkout_token(token)
    if request.method == "GET":
        try:
            offer = selectors.offer_for_checkout(slug=slug)
        except exceptions.PaymentError as error:
            return _problem(request, error, title=_("This offer is not available"))
        prices = selectors.checkout_prices(offer)
        return render(
            request,
            "payments/buy.html",
            {
                "offer": offer,
                "prices": prices,
                "bump": selectors.bump_price_for(offer, prices[0]),
                "subscriber_token": token if subscriber else "",
            },
        )
    try:
        started = services.checkout_start(
            offer_slug=slug,
            price_id=request.POST.get("price") or None,
            include_bump=request.POST.get("bump") == "1",
            user=request.user,
            subscriber=subscriber,
        )
    except exceptions.OfferUnavailable as error:
        return _problem(request, error, title=_("This offer is not available"))
    except exceptions.PaymentError as error:
        return _problem(
            request,
            error,
            title=_("Payment is not available right now"),
            back_url=reverse("payments:buy", args=[slug]),
            back_label=_("Try again"),
        )
    request.session[SESSION_CHECKOUTS] = [
        *request.session.get(SESSION_CHECKOUTS, [])[-9:],
        str(started.attempt.uid),
    ]
    return _see_other(started.url)


@transaction.non_atomic_requests
@never_cache
def checkout_success(request):
    """Where Stripe sends the buyer back. Fulfils the order itself if the webhook has not
    yet, so access never waits on webhook delivery."""
    session_id = request.GET.get("session_id", "")
    if not SESSION_ID_RE.fullmatch(session_id):
        return _problem(
            request,
            exceptions.PaymentError("This page needs the link Stripe sent you back with."),
            title=_("Your order"),
        )
    order = selectors.order_for_session(session_id)
    session = None
    if order is None or order.status == Order.Status.PENDING:
        try:
            session = services.checkout_session_retrieve(session_id=session_id)
        except exceptions.PaymentError:
            if order is None:
                return render(
                    request, "payments/success.html", {"state": "confirming", "refresh": True}
                )
        if session is not None and services.is_ours(session.get("metadata")):
            if session.get("status") != "complete":
                slug = session["metadata"].get("lodestone_offer_slug", "")
                return render(
                    request,
                    "payments/success.html",
                    {
                        "state": "unpaid",
                        "offer_url": reverse("payments:buy", args=[slug]) if slug else None,
                    },
                )
            order = services.order_fulfil_from_session(session=session) or order
        elif order is None:
            return _problem(
                request,
                exceptions.PaymentError(_("We do not know this order.")),
                title=_("Your order"),
            )

    state = {
        Order.Status.PAID: "paid",
        Order.Status.PENDING: "processing",
        Order.Status.NEEDS_REVIEW: "review",
    }.get(order.status, "closed")
    signed_in_as_buyer = False
    if state == "paid" and order.buyer is not None:
        signed_in_as_buyer = _sign_in_new_buyer(request, order)
    products = [
        {"title": p.title, "url": selectors.product_page_url(p) if state == "paid" else ""}
        for item in order.items.prefetch_related("products")
        for p in item.products.all()
    ]
    return render(
        request,
        "payments/success.html",
        {
            "state": state,
            "order": order,
            "products": products,
            "signed_in_as_buyer": signed_in_as_buyer,
        },
    )


def _sign_in_new_buyer(request, order: Order) -> bool:
    """True when the visitor is (now) signed in as the buyer.

    Only an account this very order created, in the browser that started its checkout,
    shortly after payment, and never a staff account: the session id in the URL alone is
    not proof of who is reading this page.
    """
    buyer = order.buyer
    if request.user.is_authenticated:
        return request.user.pk == buyer.pk
    started_here = order.attempt_id is not None and str(order.attempt.uid) in request.session.get(
        SESSION_CHECKOUTS, []
    )
    recent = order.paid_at is not None and timezone.now() - order.paid_at < AUTO_LOGIN_WINDOW
    if (
        started_here
        and recent
        and order.buyer_account_created
        and buyer.is_active
        and not (buyer.is_staff or buyer.is_superuser)
    ):
        login(request, buyer, backend=MODEL_BACKEND)
        return True
    return False


@transaction.non_atomic_requests
@csrf_exempt  # Stripe cannot send our CSRF token; the signature is the proof.
@require_POST
def stripe_webhook(request):
    """Stripe's events. The signature is checked before the database is touched."""
    header = request.headers.get("Stripe-Signature")
    if not header:
        return JsonResponse({"error": "Missing Stripe-Signature header."}, status=400)
    try:
        payload = webhooks.webhook_verify(body=request.body, signature_header=header)
    except exceptions.PaymentsNotConfigured as error:
        logger.error("Stripe webhook received but %s", error.message)
        return JsonResponse({"error": "Webhooks are not configured."}, status=503)
    except exceptions.WebhookRejected as error:
        logger.warning("Stripe webhook rejected: %s", error.message)
        return JsonResponse({"error": error.message}, status=400)
    try:
        result = webhooks.stripe_event_receive(payload=payload)
    except exceptions.WebhookRejected as error:
        # Signed, but not something the database can keep (webhooks.stripe_event_record).
        logger.warning("Stripe webhook %r refused: %s", payload["id"][:80], error.message)
        return JsonResponse({"error": error.message}, status=400)
    except exceptions.EventProcessingFailed:
        # Stored with its error; a 500 makes Stripe retry, and stripe_replay can too.
        return JsonResponse({"error": "Processing failed; the event is stored."}, status=500)
    return JsonResponse({"received": payload["id"], "duplicate": not result.processed_now})


@never_cache
@require_http_methods(["GET", "POST"])
def login_link(request, token: str):
    """The one-time sign-in link from the purchase email. GET shows a button (mail scanners
    follow links), POST signs in."""
    if request.method == "GET":
        if problem := services.login_link_problem(token):
            return _problem(
                request,
                problem,
                title=_("This link does not work"),
                back_url=reverse("account_login"),
                back_label=_("Sign in with a code"),
            )
        return render(request, "payments/login_link.html", {"token": token})
    try:
        user = services.login_link_redeem(token=token)
    except exceptions.PaymentError as error:
        return _problem(
            request,
            error,
            title=_("This link does not work"),
            back_url=reverse("account_login"),
            back_label=_("Sign in with a code"),
        )
    login(request, user, backend=MODEL_BACKEND)
    return redirect(settings.LOGIN_REDIRECT_URL)


@transaction.non_atomic_requests
@never_cache
def billing_portal(request, token: str):
    """From the dunning email: a fresh Stripe billing-portal session, made on click."""
    try:
        url = services.billing_portal_url(token=token)
    except exceptions.PaymentError as error:
        return _problem(request, error, title=_("Billing is not available right now"))
    return _see_other(url)


@transaction.non_atomic_requests
@never_cache
@login_required
@require_POST
def billing_portal_mine(request):
    customer = StripeCustomer.objects.filter(user=request.user).first()
    if customer is None:
        return _problem(
            request,
            exceptions.PaymentError(_("There are no payments on this account to manage.")),
            title=_("Billing"),
        )
    try:
        url = services.billing_portal_url_for_customer(customer_id=customer.stripe_customer_id)
    except exceptions.PaymentError as error:
        return _problem(request, error, title=_("Billing is not available right now"))
    return _see_other(url)
