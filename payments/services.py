"""Writes for payments: syncing offers to Stripe, starting checkouts, fulfilling orders,
granting and taking back access.

Everything here assumes it runs twice, at once: the success page and the webhook fulfil the
same session; Stripe delivers the same event again; a refund arrives before the purchase.

Locks are always taken in this order, so concurrent paths cannot deadlock:
  1. the StripeEvent row (webhook processing only),
  2. advisory locks on the Stripe ids involved (payment intent, invoice, subscription),
     sorted — they serialise a purchase with its refund, dispute or renewal even before
     the Order row exists,
  3. the Order row, 4. its Entitlement rows by product id, 5. the funnels Subscriber.
"""

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr

import stripe
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Sum
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from core.services import brand_settings, email_enqueue

from . import exceptions, selectors
from .models import (
    CheckoutAttempt,
    Entitlement,
    LoginToken,
    Offer,
    Order,
    OrderItem,
    PaymentReversal,
    Price,
    Product,
    StripeCustomer,
    SubscriptionInvoice,
    SyncStatus,
)
from .money import format_money
from .signals import access_revoked, purchase_completed
from .stripe_client import as_dict, is_transient, stripe_client

logger = logging.getLogger(__name__)

LOGIN_LINK_LIFETIME = timedelta(hours=24)
LOGIN_LINK_SALT = "lodestone.payments.login-link"
PORTAL_LINK_SALT = "lodestone.payments.billing-portal"
PORTAL_LINK_MAX_AGE = timedelta(days=30)
CHECKOUT_LINK_SALT = "lodestone.payments.checkout-subscriber"
# An offer sync asked for this long ago and still pending lost its queue message (broker
# down at commit); the task queued on commit has had its chance.
OFFER_SYNC_STALE_AFTER = timedelta(minutes=2)
# Metadata keys on every Checkout Session, PaymentIntent and Subscription we create; an
# object without them is not ours (the Stripe account may sell other things too).
META_ATTEMPT = "lodestone_attempt"
META_OFFER = "lodestone_offer_id"
META_PRICE = "lodestone_price_id"
META_BUMP_PRICE = "lodestone_bump_price_id"
META_SUBSCRIBER = "lodestone_subscriber_id"
META_USER = "lodestone_user_id"
PAID_STATUSES = ("paid", "no_payment_required")
ENDED_SUBSCRIPTION_STATUSES = ("canceled", "incomplete_expired")


# --- Small helpers ----------------------------------------------------------------------


def _now() -> datetime:
    return timezone.now()


def _from_timestamp(value) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if value else None


def idempotency_key(*parts) -> str:
    """Stripe idempotency keys are per Stripe account; the site's own prefix keeps two
    installations sharing an account (staging and production in test mode) apart."""
    site = hashlib.sha256(f"{settings.SECRET_KEY}|{settings.SITE_URL}".encode()).hexdigest()[:10]
    return "-".join(["lodestone", site, *(str(p) for p in parts)])


def lock_stripe_ids(*ids: str | None) -> None:
    """Transaction-scoped advisory locks on Stripe ids, taken in sorted order.

    SQLite (the demo) serialises writers already, so there is nothing to do there.
    """
    keys = sorted({i for i in ids if i})
    if not keys or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for key in keys:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"lodestone.payments:{key}"],
            )


def creator_email() -> str:
    """Where the creator is told about refunds, disputes and orders to review."""
    brand = brand_settings()
    return brand.sender_email or parseaddr(settings.DEFAULT_FROM_EMAIL)[1]


def notify_creator(*, kind: str, subject: str, lines: list[str], order: Order | None = None):
    context = {
        "brand": brand_settings(),
        "lines": lines,
        "order": order,
        "site_url": settings.SITE_URL,
    }
    email_enqueue(
        to=creator_email(),
        subject=subject,
        text_body=render_to_string("payments/email/creator_alert.txt", context),
        kind=f"payments:{kind}",
    )


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def is_ours(metadata: dict | None) -> bool:
    return bool(metadata) and META_OFFER in metadata


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- Offers → Stripe ---------------------------------------------------------------------


def price_fingerprint(price: Price) -> str:
    """What a Stripe price is made of. Stripe prices are immutable: a change means a new one.
    Instalment counts are ours alone and change nothing at Stripe."""
    recurring = price.interval if price.is_recurring else ""
    return f"{price.amount}:{price.currency}:{recurring}"


def price_needs_sync(price: Price) -> bool:
    return not price.stripe_price_id or price.stripe_fingerprint != price_fingerprint(price)


def _params_hash(params: dict) -> str:
    return hashlib.sha256(repr(sorted(params.items())).encode()).hexdigest()[:12]


def offer_request_sync(*, offer: Offer) -> None:
    """Mark the offer as waiting for Stripe and queue a sync once the current transaction
    commits (admin saves call this). The mark is the outbox row: when the broker is down at
    commit, the publish is only logged and ``offer_requeue_stale`` queues the sync later."""
    from .tasks import offer_sync

    now = _now()
    Offer.objects.filter(pk=offer.pk).update(sync_status=SyncStatus.PENDING, updated_at=now)
    offer.sync_status, offer.updated_at = SyncStatus.PENDING, now
    offer_sync.delay_on_commit(offer.pk)


def offer_requeue_stale(*, now: datetime | None = None) -> int:
    """Beat: queue the sync of offers still waiting for it well after it was asked for. A
    duplicate is harmless: the sync locks the offer and every Stripe create carries an
    idempotency key. Without Stripe settings there is nothing to sync to."""
    from .tasks import offer_sync

    if not settings.STRIPE_SECRET_KEY:
        return 0
    now = now or _now()
    due = (
        Offer.objects.filter(
            sync_status=SyncStatus.PENDING, updated_at__lt=now - OFFER_SYNC_STALE_AFTER
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:200]
    )
    return offer_sync.requeue(list(due))


def offer_sync_to_stripe(*, offer_id: int) -> Offer:
    """Create or update the offer's Stripe Product and Prices. Safe to run twice, at once.

    The offer row is locked for the whole sync, so two syncs never race; every create carries
    an idempotency key derived from what it creates, so a sync whose database write was lost
    after Stripe answered gets the same Stripe objects back on the next run.
    Raises stripe.StripeError after recording it on the offer.
    """
    client = stripe_client()
    try:
        with transaction.atomic():
            offer = Offer.objects.select_for_update().get(pk=offer_id)
            _sync_product(client, offer)
            for price in offer.prices.select_for_update().order_by("pk"):
                _sync_price(client, offer, price)
            offer.sync_status = SyncStatus.SYNCED
            offer.sync_error = ""
            offer.synced_at = _now()
            offer.save(update_fields=["sync_status", "sync_error", "synced_at", "updated_at"])
            return offer
    except stripe.StripeError as exc:
        message = f"{type(exc).__name__}: {getattr(exc, 'user_message', None) or exc}"[:2000]
        Offer.objects.filter(pk=offer_id).update(sync_status=SyncStatus.FAILED, sync_error=message)
        raise


def _sync_product(client: stripe.StripeClient, offer: Offer) -> None:
    params = {"name": offer.title[:250], "metadata": {META_OFFER: str(offer.pk)}}
    if offer.description.strip():
        params["description"] = offer.description.strip()[:5000]
    if offer.stripe_product_id:
        client.v1.products.update(offer.stripe_product_id, params={**params, "active": True})
        return
    product = client.v1.products.create(
        params=params,
        options={"idempotency_key": idempotency_key("offer", offer.pk, _params_hash(params))},
    )
    offer.stripe_product_id = product.id
    offer.save(update_fields=["stripe_product_id", "updated_at"])


def _sync_price(client: stripe.StripeClient, offer: Offer, price: Price) -> None:
    fingerprint = price_fingerprint(price)
    if price.stripe_price_id and price.stripe_fingerprint == fingerprint:
        client.v1.prices.update(price.stripe_price_id, params={"active": price.is_active})
    else:
        params: dict = {
            "product": offer.stripe_product_id,
            "unit_amount": price.amount,
            "currency": price.currency,
            "nickname": price.display[:250],
            "metadata": {META_OFFER: str(offer.pk), META_PRICE: str(price.pk)},
        }
        if price.is_recurring:
            params["recurring"] = {"interval": price.interval}
        created = client.v1.prices.create(
            params=params,
            options={
                "idempotency_key": idempotency_key(
                    "price", price.pk, hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
                )
            },
        )
        if price.stripe_price_id:
            # The old Stripe price stays valid for sessions already open; new ones use the new.
            client.v1.prices.update(price.stripe_price_id, params={"active": False})
        price.stripe_price_id = created.id
        price.stripe_fingerprint = fingerprint
        if not price.is_active:
            client.v1.prices.update(created.id, params={"active": False})
    price.sync_status = SyncStatus.SYNCED
    price.sync_error = ""
    price.synced_at = _now()
    price.save(
        update_fields=[
            "stripe_price_id",
            "stripe_fingerprint",
            "sync_status",
            "sync_error",
            "synced_at",
        ]
    )


# --- Checkout -----------------------------------------------------------------------------


def checkout_link(*, offer: Offer, subscriber) -> str:
    """A buy link that names a funnel subscriber, for sales emails: checkout opens with their
    address filled in and the purchase is tied to them."""
    from funnels.services import email_hash

    token = signing.dumps(
        {"s": subscriber.pk, "e": email_hash(subscriber.email)[:16]}, salt=CHECKOUT_LINK_SALT
    )
    return f"{settings.SITE_URL}{reverse('payments:buy', args=[offer.slug])}?s={token}"


def subscriber_from_checkout_token(token: str):
    """The subscriber a checkout link names, or None (a bad link just isn't prefilled)."""
    from funnels.models import Subscriber
    from funnels.services import email_hash

    if not token:
        return None
    try:
        data = signing.loads(token, salt=CHECKOUT_LINK_SALT, max_age=timedelta(days=90))
    except signing.BadSignature:
        return None
    subscriber = Subscriber.objects.filter(pk=data.get("s")).first()
    if subscriber is None or email_hash(subscriber.email)[:16] != data.get("e"):
        return None
    return subscriber


@dataclass(frozen=True)
class CheckoutStarted:
    attempt: CheckoutAttempt
    url: str


def checkout_start(
    *,
    offer_slug: str,
    price_id: int | str | None = None,
    include_bump: bool = False,
    user=None,
    subscriber=None,
) -> CheckoutStarted:
    """Create a Stripe Checkout Session for an offer and return where to send the buyer.

    Nothing but a CheckoutAttempt row is written before payment; when Stripe cannot be
    reached the attempt records why and StripeUnavailable carries the buyer's message.
    Must not run inside a transaction that a Stripe failure would roll back.
    """
    offer = selectors.offer_for_checkout(slug=offer_slug)
    price = selectors.checkout_price(offer, price_id)
    bump_price = selectors.bump_price_for(offer, price) if include_bump else None

    for needs in {p.offer_id for p in (price, bump_price) if p and price_needs_sync(p)}:
        try:
            offer_sync_to_stripe(offer_id=needs)
        except stripe.StripeError as exc:
            raise _buyer_facing(exc) from exc
    price.refresh_from_db()
    if bump_price:
        bump_price.refresh_from_db()

    user = user if user is not None and user.is_authenticated else None
    email = (user.email if user else "") or (subscriber.email if subscriber else "")
    customer = StripeCustomer.objects.filter(user=user).first() if user else None
    attempt = CheckoutAttempt.objects.create(
        offer=offer,
        price=price,
        bump_price=bump_price,
        user=user,
        subscriber_id=subscriber.pk if subscriber else None,
        email=email,
        expected_subtotal=price.amount + (bump_price.amount if bump_price else 0),
        currency=price.currency,
    )
    metadata = {
        META_ATTEMPT: str(attempt.uid),
        META_OFFER: str(offer.pk),
        "lodestone_offer_slug": offer.slug,
        META_PRICE: str(price.pk),
    }
    if bump_price:
        metadata[META_BUMP_PRICE] = str(bump_price.pk)
    if subscriber:
        metadata[META_SUBSCRIBER] = str(subscriber.pk)
    if user:
        metadata[META_USER] = str(user.pk)

    line_items = [{"price": price.stripe_price_id, "quantity": 1}]
    if bump_price:
        line_items.append({"price": bump_price.stripe_price_id, "quantity": 1})
    params: dict = {
        "mode": "subscription" if price.is_recurring else "payment",
        "line_items": line_items,
        "success_url": settings.SITE_URL
        + reverse("payments:checkout_success")
        + "?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": settings.SITE_URL + reverse("payments:buy", args=[offer.slug]),
        "client_reference_id": (
            f"offer-{offer.pk}_subscriber-{subscriber.pk if subscriber else 0}_attempt-{attempt.pk}"
        ),
        "metadata": metadata,
        "allow_promotion_codes": True,
    }
    if customer:
        params["customer"] = customer.stripe_customer_id
    elif email:
        params["customer_email"] = email
    if price.is_recurring:
        params["subscription_data"] = {"metadata": metadata}
    else:
        params["payment_intent_data"] = {"metadata": metadata}
        if not customer:
            # A customer in payment mode too: the buyer can reach the billing portal later.
            params["customer_creation"] = "always"

    try:
        session = stripe_client().v1.checkout.sessions.create(
            params=params,
            options={"idempotency_key": idempotency_key("checkout", attempt.uid)},
        )
    except (stripe.StripeError, exceptions.PaymentsNotConfigured) as exc:
        attempt.status = CheckoutAttempt.Status.FAILED
        attempt.error = f"{type(exc).__name__}: {exc}"[:2000]
        attempt.save(update_fields=["status", "error"])
        if isinstance(exc, exceptions.PaymentError):
            raise
        raise _buyer_facing(exc) from exc
    attempt.status = CheckoutAttempt.Status.REDIRECTED
    attempt.stripe_checkout_session_id = session.id
    attempt.save(update_fields=["status", "stripe_checkout_session_id"])
    return CheckoutStarted(attempt=attempt, url=session.url)


def _buyer_facing(exc: BaseException) -> exceptions.PaymentError:
    if isinstance(exc, exceptions.PaymentError):
        return exc
    if is_transient(exc) or isinstance(exc, stripe.AuthenticationError):
        logger.warning("Stripe unavailable at checkout: %r", exc)
        return exceptions.StripeUnavailable()
    logger.error("Stripe refused a checkout request: %r", exc)
    return exceptions.CheckoutRefused()


def checkout_session_retrieve(*, session_id: str) -> dict | None:
    """The session as Stripe has it now, or None if Stripe does not know it."""
    try:
        session = stripe_client().v1.checkout.sessions.retrieve(session_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return None
        raise _buyer_facing(exc) from exc
    except stripe.StripeError as exc:
        raise _buyer_facing(exc) from exc
    return as_dict(session)


# --- Buyers -------------------------------------------------------------------------------


def buyer_get_or_create(*, email: str, name: str = ""):
    """The account for a paying address, made if needed; the address counts as verified
    (the brief's rule: the payment verified it). Returns (user, created)."""
    from allauth.account.models import EmailAddress

    user_model = get_user_model()
    email = user_model.objects.normalize_email(email)
    user = user_model.objects.filter(email__iexact=email).first()
    if user is None:
        address = (
            # allauth keeps addresses lower-cased and looks them up so (its indexed column).
            EmailAddress.objects.filter(email=email.lower(), verified=True)
            .select_related("user")
            .first()
        )
        user = address.user if address else None
    created = False
    if user is None:
        first, _sep, last = " ".join((name or "").split()).partition(" ")
        try:
            with transaction.atomic():
                user = user_model.objects.create_user(
                    email=email, first_name=first[:150], last_name=last[:150]
                )
                created = True
        except IntegrityError:
            user = user_model.objects.get(email__iexact=email)

    address = EmailAddress.objects.filter(user=user, email__iexact=email).first()
    has_primary = EmailAddress.objects.filter(user=user, primary=True).exists()
    if address is None:
        try:
            with transaction.atomic():
                EmailAddress.objects.create(
                    user=user, email=email.lower(), verified=True, primary=not has_primary
                )
        except IntegrityError:
            address = EmailAddress.objects.filter(user=user, email__iexact=email).first()
    if address is not None:
        changed = []
        if not address.verified:
            address.verified = True
            changed.append("verified")
        if not address.primary and (not has_primary or user.email.lower() == email):
            EmailAddress.objects.filter(user=user, primary=True).update(primary=False)
            address.primary = True
            changed.append("primary")
        if changed:
            address.save(update_fields=changed)
    return user, created


def _link_stripe_customer(user, customer_id: str | None) -> None:
    if not customer_id or user is None:
        return
    if StripeCustomer.objects.filter(Q(user=user) | Q(stripe_customer_id=customer_id)).exists():
        return
    try:
        with transaction.atomic():
            StripeCustomer.objects.create(user=user, stripe_customer_id=customer_id)
    except IntegrityError:
        pass  # linked concurrently; the first link stays


# --- Login links -------------------------------------------------------------------------


def login_link_issue(*, user, order: Order | None = None) -> str:
    """A single-use sign-in link valid for 24 hours. Signed, and its use stored."""
    secret = secrets.token_urlsafe(32)
    LoginToken.objects.create(
        user=user,
        order=order,
        token_hash=hashlib.sha256(secret.encode()).hexdigest(),
        expires_at=_now() + LOGIN_LINK_LIFETIME,
    )
    token = signing.dumps(secret, salt=LOGIN_LINK_SALT)
    return settings.SITE_URL + reverse("payments:login_link", kwargs={"token": token})


def _login_token_row(token: str, *, lock: bool) -> LoginToken:
    try:
        secret = signing.loads(
            token, salt=LOGIN_LINK_SALT, max_age=LOGIN_LINK_LIFETIME.total_seconds()
        )
    except signing.SignatureExpired as exc:
        raise exceptions.TokenExpired() from exc
    except signing.BadSignature as exc:
        raise exceptions.TokenInvalid() from exc
    qs = LoginToken.objects.select_related("user")
    if lock:
        qs = qs.select_for_update(of=("self",))
    row = qs.filter(token_hash=hashlib.sha256(str(secret).encode()).hexdigest()).first()
    if row is None or not row.user.is_active:
        raise exceptions.TokenInvalid()
    if row.used_at is not None:
        raise exceptions.TokenUsed()
    if row.expires_at <= _now():
        raise exceptions.TokenExpired()
    return row


def login_link_problem(token: str) -> exceptions.PaymentError | None:
    try:
        _login_token_row(token, lock=False)
    except exceptions.PaymentError as problem:
        return problem
    return None


@transaction.atomic
def login_link_redeem(*, token: str):
    """Spend a login link; returns its user. A second use raises TokenUsed."""
    row = _login_token_row(token, lock=True)
    row.used_at = _now()
    row.save(update_fields=["used_at"])
    return row.user


# --- Billing portal ------------------------------------------------------------------------


def billing_portal_link(*, customer_id: str) -> str:
    """A link for emails: our view makes a fresh Stripe portal session when it is clicked
    (portal sessions themselves expire within minutes)."""
    token = signing.dumps({"c": customer_id}, salt=PORTAL_LINK_SALT)
    return settings.SITE_URL + reverse("payments:billing_portal", kwargs={"token": token})


def billing_portal_url(*, token: str) -> str:
    try:
        data = signing.loads(
            token, salt=PORTAL_LINK_SALT, max_age=PORTAL_LINK_MAX_AGE.total_seconds()
        )
    except signing.SignatureExpired as exc:
        raise exceptions.TokenExpired(
            "This billing link has expired. Sign in to manage your subscription."
        ) from exc
    except signing.BadSignature as exc:
        raise exceptions.TokenInvalid("This billing link is not valid.") from exc
    return billing_portal_url_for_customer(customer_id=data["c"])


def billing_portal_url_for_customer(*, customer_id: str) -> str:
    try:
        session = stripe_client().v1.billing_portal.sessions.create(
            params={"customer": customer_id, "return_url": settings.SITE_URL + "/"}
        )
    except stripe.StripeError as exc:
        raise _buyer_facing(exc) from exc
    return session.url


# --- Entitlements --------------------------------------------------------------------------


def entitlement_grant(
    *,
    user,
    product: Product,
    source: str = Entitlement.Source.MANUAL,
    order: Order | None = None,
    ends_at: datetime | None = None,
) -> Entitlement:
    """Give ``user`` access to ``product`` (a manual grant unless an order is named).

    One row per user and product (a database constraint): granting again re-opens a revoked
    or ended entitlement, and never shortens one that is already open for good.
    """
    with transaction.atomic():
        return _entitlement_grant_locked(
            user=user, product_id=product.pk, source=source, order=order, ends_at=ends_at
        )


@transaction.atomic
def entitlement_revoke(*, user, product: Product, reason: str) -> bool:
    """Take access away by hand (not tied to Stripe). False when there was none."""
    ent = Entitlement.objects.select_for_update().filter(user=user, product=product).first()
    if ent is None or ent.revoked_at is not None:
        return False
    ent.revoked_at = _now()
    ent.revoke_reason = reason[:200]
    ent.save(update_fields=["revoked_at", "revoke_reason", "updated_at"])
    return True


_STRENGTH = {
    Entitlement.Source.SUBSCRIPTION: 1,
    Entitlement.Source.ORDER: 2,
    Entitlement.Source.MANUAL: 2,
}


def _entitlement_grant_locked(
    *, user, product_id: int, source: str, order: Order | None, ends_at: datetime | None = None
) -> Entitlement:
    ent = Entitlement.objects.select_for_update().filter(user=user, product_id=product_id).first()
    if ent is None:
        try:
            with transaction.atomic():
                return Entitlement.objects.create(
                    user=user, product_id=product_id, order=order, source=source, ends_at=ends_at
                )
        except IntegrityError:
            ent = Entitlement.objects.select_for_update().get(user=user, product_id=product_id)
    if ent.is_active() and (
        _STRENGTH[ent.source] > _STRENGTH[source]
        or (_STRENGTH[ent.source] == _STRENGTH[source] and ent.ends_at is None)
    ):
        return ent  # already open on an equal or stronger footing
    ent.order = order
    ent.source = source
    ent.ends_at = ends_at
    ent.revoked_at = None
    ent.revoke_reason = ""
    if not ent.is_active():
        ent.starts_at = _now()
    ent.save()
    return ent


def _order_grants(order: Order) -> dict[int, str]:
    """product id → source of access this order gives while it stands."""
    grants: dict[int, str] = {}
    main_source = (
        Entitlement.Source.SUBSCRIPTION
        if order.price_kind in (Price.Kind.SUBSCRIPTION, Price.Kind.PAYMENT_PLAN)
        and order.plan_completed_at is None
        else Entitlement.Source.ORDER
    )
    for item in order.items.prefetch_related("products"):
        source = main_source if item.role == OrderItem.Role.MAIN else Entitlement.Source.ORDER
        for product in item.products.all():
            if grants.get(product.pk) != Entitlement.Source.ORDER:
                grants[product.pk] = source
    return grants


def _order_still_grants(order: Order, product_id: int) -> str | None:
    if order.status != Order.Status.PAID:
        return None
    source = _order_grants(order).get(product_id)
    if (
        source == Entitlement.Source.SUBSCRIPTION
        and order.subscription_status in ENDED_SUBSCRIPTION_STATUSES
    ):
        return None
    return source


def _other_backing_order(ent: Entitlement, exclude: Order) -> tuple[Order, str] | None:
    """Another paid order of the same buyer that covers this product, if any."""
    candidates = (
        Order.objects.filter(
            buyer_id=ent.user_id, status=Order.Status.PAID, items__products=ent.product_id
        )
        .exclude(pk=exclude.pk)
        .distinct()
        .order_by("pk")
    )
    found = None
    for other in candidates:
        source = _order_still_grants(other, ent.product_id)
        if source == Entitlement.Source.ORDER:
            return other, source
        if source and found is None:
            found = (other, source)
    return found


def _order_take_access(
    order: Order, *, reason: str, only_subscription: bool = False, ends_at: datetime | None = None
) -> list[Product]:
    """Revoke (or, with ends_at, end) what this order granted, unless another paid order of
    the same buyer still covers it. Returns the products that were taken away."""
    taken = []
    ents = (
        Entitlement.objects.select_for_update()
        .filter(order=order, revoked_at__isnull=True)
        .select_related("product")
        .order_by("product_id")
    )
    for ent in ents:
        if only_subscription and ent.source != Entitlement.Source.SUBSCRIPTION:
            continue
        if ends_at is not None and ent.ends_at is not None and ent.ends_at <= ends_at:
            continue
        backing = _other_backing_order(ent, exclude=order)
        if backing:
            ent.order, ent.source = backing
            ent.ends_at = None
            ent.save()
            continue
        if ends_at is not None:
            ent.ends_at = ends_at
        else:
            ent.revoked_at = _now()
            ent.revoke_reason = reason[:200]
        ent.save()
        taken.append(ent.product)
    return taken


def _send_after_commit(signal, **kwargs) -> None:
    def send():
        for receiver, response in signal.send_robust(sender=Order, **kwargs):
            if isinstance(response, Exception):
                logger.error("payments signal receiver %r failed: %r", receiver, response)

    transaction.on_commit(send)


# --- Fulfilment --------------------------------------------------------------------------


def _lock_order_for_session(session: dict) -> tuple[Order, bool]:
    sid = session["id"]
    order = Order.objects.select_for_update().filter(stripe_checkout_session_id=sid).first()
    if order is not None:
        return order, False
    try:
        with transaction.atomic():
            return Order.objects.create(
                stripe_checkout_session_id=sid, **_order_fields(session)
            ), True
    except IntegrityError:
        # The success page and the webhook both got here; the other one inserted first.
        return Order.objects.select_for_update().get(stripe_checkout_session_id=sid), False


def _order_fields(session: dict) -> dict:
    meta = _meta(session)
    details = session.get("customer_details") or {}
    offer = Offer.objects.filter(pk=_int_or_none(meta.get(META_OFFER))).first()
    price = Price.objects.filter(pk=_int_or_none(meta.get(META_PRICE))).first()
    attempt = (
        CheckoutAttempt.objects.filter(uid=meta[META_ATTEMPT]).first()
        if _valid_uuid(meta.get(META_ATTEMPT))
        else None
    )
    totals = session.get("total_details") or {}
    return {
        "email": (details.get("email") or session.get("customer_email") or "").strip().lower(),
        "subscriber_id": _int_or_none(meta.get(META_SUBSCRIBER)),
        "offer": offer,
        "price": price,
        "offer_slug": offer.slug if offer else (meta.get("lodestone_offer_slug") or "")[:100],
        "offer_title": offer.title if offer else "",
        "price_kind": price.kind if price else "",
        "installments_total": price.installments if price else None,
        "attempt": attempt,
        "amount_subtotal": session.get("amount_subtotal") or 0,
        "amount_discount": totals.get("amount_discount") or 0,
        "amount_total": session.get("amount_total") or 0,
        "currency": (session.get("currency") or "").lower(),
    }


def _valid_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
    except (TypeError, ValueError):
        return False
    return True


def _order_items_create(order: Order, session: dict) -> None:
    meta = _meta(session)
    lines = [(OrderItem.Role.MAIN, order.price)]
    bump_id = _int_or_none(meta.get(META_BUMP_PRICE))
    if bump_id:
        lines.append(
            (OrderItem.Role.BUMP, Price.objects.select_related("offer").filter(pk=bump_id).first())
        )
    for role, price in lines:
        if price is None:
            continue
        item = OrderItem.objects.create(
            order=order,
            role=role,
            offer=price.offer,
            price=price,
            title=price.offer.title,
            amount=price.amount,
            currency=price.currency,
        )
        item.products.set(price.offer.products.all())


def _record_stripe_ids(order: Order, session: dict) -> None:
    for field, key in (
        ("stripe_payment_intent_id", "payment_intent"),
        ("stripe_subscription_id", "subscription"),
        ("stripe_invoice_id", "invoice"),
        ("stripe_customer_id", "customer"),
    ):
        value = session.get(key)
        if isinstance(value, dict):
            value = value.get("id")
        if value and not getattr(order, field):
            setattr(order, field, value)
    if not order.email:
        details = session.get("customer_details") or {}
        order.email = (details.get("email") or session.get("customer_email") or "").lower()


def _amount_problem(order: Order, session: dict) -> str | None:
    """Why this session must not be fulfilled blindly, or None when it adds up.

    What we expect comes from the CheckoutAttempt that created this very session (so a price
    edited mid-checkout is not a mismatch), else from the prices as they stand now.
    """
    if order.offer is None or order.price is None:
        return "The offer or price this session names no longer exists."
    main = order.items.filter(role=OrderItem.Role.MAIN).first()
    if main is None or not main.products.exists():
        return "The offer bought grants no products."
    attempt = order.attempt
    if (
        attempt is not None
        and attempt.stripe_checkout_session_id == order.stripe_checkout_session_id
    ):
        expected, currency = attempt.expected_subtotal, attempt.currency
    else:
        expected = sum(item.amount for item in order.items.all())
        currency = order.price.currency
    paid_currency = (session.get("currency") or "").lower()
    if paid_currency != currency:
        return f"Paid in {paid_currency.upper() or '?'}, but the offer is priced in {currency.upper()}."
    subtotal = session.get("amount_subtotal")
    if subtotal != expected:
        return (
            f"Paid {format_money(subtotal or 0, currency)} before discounts, "
            f"but the offer costs {format_money(expected, currency)}."
        )
    totals = session.get("total_details") or {}
    computed = (
        subtotal
        - (totals.get("amount_discount") or 0)
        + (totals.get("amount_tax") or 0)
        + (totals.get("amount_shipping") or 0)
    )
    if session.get("amount_total") != computed:
        return "The session's total does not add up from its subtotal and discounts."
    return None


@transaction.atomic
def order_fulfil_from_session(*, session: dict) -> Order | None:
    """Fulfil a Checkout Session exactly once, from whichever comes first: the success page
    or a webhook (checkout.session.completed / async_payment_succeeded / failed).

    Returns the order (paid, pending for a bank debit still settling, needs_review,
    refunded...), or None for a session that is not ours or not complete.
    """
    if not is_ours(_meta(session)) or session.get("status") != "complete":
        return None
    lock_stripe_ids(
        session.get("payment_intent"), session.get("invoice"), session.get("subscription")
    )
    order, created = _lock_order_for_session(session)
    _record_stripe_ids(order, session)
    if created:
        _order_items_create(order, session)
    order.save()

    if order.status != Order.Status.PENDING:
        return order  # paid, or a state that must never turn into access by itself
    if _apply_pending_reversals(order):
        return order
    if session.get("payment_status") not in PAID_STATUSES:
        return order  # a bank debit still settling: async_payment_succeeded finishes it
    problem = _amount_problem(order, session)
    if problem:
        order.status = Order.Status.NEEDS_REVIEW
        order.review_reason = problem
        order.save(update_fields=["status", "review_reason"])
        notify_creator(
            kind="creator_review",
            subject=f"Order to review: {order.offer_title or order.offer_slug}",
            lines=[
                "A payment went through but was NOT fulfilled automatically:",
                problem,
                f"Buyer: {order.email}",
                f"Checkout Session: {order.stripe_checkout_session_id}",
                "Check it in Stripe, then approve the order (payments.services.order_approve) "
                "or refund it.",
            ],
            order=order,
        )
        return order
    details = session.get("customer_details") or {}
    _order_complete(order, name=details.get("name") or "", session=session)
    return order


@transaction.atomic
def order_fail_from_session(*, session: dict) -> Order | None:
    """checkout.session.async_payment_failed: the bank debit bounced; nothing is granted."""
    if not is_ours(_meta(session)):
        return None
    lock_stripe_ids(
        session.get("payment_intent"), session.get("invoice"), session.get("subscription")
    )
    order, created = _lock_order_for_session(session)
    _record_stripe_ids(order, session)
    if created:
        _order_items_create(order, session)
    if order.status == Order.Status.PENDING:
        order.status = Order.Status.FAILED
        order.failed_at = _now()
    order.save()
    return order


@transaction.atomic
def order_approve(*, order_id: int) -> Order:
    """The creator checked an order in review and lets it through."""
    ids = Order.objects.filter(pk=order_id).values_list(
        "stripe_payment_intent_id", "stripe_invoice_id", "stripe_subscription_id"
    )
    lock_stripe_ids(*(ids.first() or ()))
    order = Order.objects.select_for_update().get(pk=order_id)
    if order.status != Order.Status.NEEDS_REVIEW:
        return order
    if not order.email or not order.items.filter(products__isnull=False).exists():
        raise exceptions.PaymentError("This order names no buyer or no products to grant.")
    _order_complete(order, name="", session=None)
    return order


def _order_complete(order: Order, *, name: str, session: dict | None) -> None:
    user, created = buyer_get_or_create(email=order.email, name=name)
    order.buyer = user
    order.buyer_account_created = order.buyer_account_created or created
    order.status = Order.Status.PAID
    order.paid_at = _now()
    order.review_reason = ""
    if order.stripe_subscription_id:
        order.subscription_status = order.subscription_status or "active"
    order.save()
    _link_stripe_customer(user, order.stripe_customer_id)

    grants = _order_grants(order)
    for product_id in sorted(grants):
        _entitlement_grant_locked(
            user=user, product_id=product_id, source=grants[product_id], order=order
        )

    if order.stripe_subscription_id:
        if (
            session is not None
            and session.get("invoice")
            and session.get("payment_status") == "paid"
        ):
            _subscription_invoice_record(
                invoice_id=session["invoice"],
                subscription_id=order.stripe_subscription_id,
                amount_paid=session.get("amount_total") or 0,
                currency=order.currency,
                billing_reason="subscription_create",
                payment_intent_id="",
            )
        SubscriptionInvoice.objects.filter(
            stripe_subscription_id=order.stripe_subscription_id, order__isnull=True
        ).update(order=order)
        ended = PaymentReversal.objects.filter(
            kind=PaymentReversal.Kind.SUBSCRIPTION_ENDED,
            stripe_subscription_id=order.stripe_subscription_id,
        ).first()
        _plan_check_completion(order)
        if ended is not None:
            _order_subscription_ended(order, ended)

    products = list(Product.objects.filter(pk__in=grants).order_by("pk"))
    _subscriber_tag_purchase(order)
    _welcome_email(order, user, products)
    _send_after_commit(purchase_completed, order=order, products=products)


def _subscriber_tag_purchase(order: Order) -> None:
    from funnels import audience
    from funnels.models import Subscriber
    from funnels.tasks import audience_sync_subscriber

    subscriber = Subscriber.objects.select_for_update().filter(email__iexact=order.email).first()
    if subscriber is None:
        return
    if order.subscriber_id is None:
        Order.objects.filter(pk=order.pk).update(subscriber_id=subscriber.pk)
        order.subscriber_id = subscriber.pk
    tags = {
        f"bought:{item.offer.slug}"[:100]
        for item in order.items.select_related("offer")
        if item.offer
    }
    if order.offer_slug:
        tags.add(f"bought:{order.offer_slug}"[:100])
    subscriber.tags.add(*sorted(tags))  # taggit writes the through rows itself
    # Mailchimp mirrors tags: the mark is committed with them, so a sync the broker could
    # not take is queued by the sweep (funnels.tasks.audience_requeue_stale).
    audience.subscribers_mark_changed(subscriber_ids=[subscriber.pk])
    audience_sync_subscriber.delay_on_commit(subscriber.pk)


def _welcome_email(order: Order, user, products: list[Product]) -> None:
    login_url = None if user.is_staff else login_link_issue(user=user, order=order)
    context = {
        "brand": brand_settings(),
        "order": order,
        "user": user,
        "products": products,
        "login_url": login_url,
        "new_account": order.buyer_account_created,
        "account_url": settings.SITE_URL + reverse("account_overview"),
        "lifetime_hours": int(LOGIN_LINK_LIFETIME.total_seconds() // 3600),
    }
    email_enqueue(
        to=order.email,
        subject=render_to_string("payments/email/welcome_subject.txt", context).strip(),
        text_body=render_to_string("payments/email/welcome.txt", context),
        kind="payments:welcome",
    )


# --- Refunds, disputes, ended subscriptions --------------------------------------------------


def _subscription_invoice_record(
    *,
    invoice_id: str,
    subscription_id: str,
    amount_paid: int,
    currency: str,
    billing_reason: str,
    payment_intent_id: str,
    paid_at: datetime | None = None,
) -> SubscriptionInvoice:
    row, _created = SubscriptionInvoice.objects.get_or_create(
        stripe_invoice_id=invoice_id,
        defaults={
            "stripe_subscription_id": subscription_id,
            "stripe_payment_intent_id": payment_intent_id,
            "amount_paid": amount_paid,
            "currency": currency,
            "billing_reason": billing_reason,
            "paid_at": paid_at or _now(),
        },
    )
    if payment_intent_id and not row.stripe_payment_intent_id:
        row.stripe_payment_intent_id = payment_intent_id
        row.save(update_fields=["stripe_payment_intent_id"])
    return row


def _apply_pending_reversals(order: Order) -> bool:
    """A refund or dispute that arrived before the purchase was fulfilled wins: the order
    takes its status and nothing is granted. True when one did."""
    match = Q(pk__in=[])
    if order.stripe_payment_intent_id:
        match |= Q(stripe_payment_intent_id=order.stripe_payment_intent_id)
    if order.stripe_invoice_id:
        match |= Q(stripe_invoice_id=order.stripe_invoice_id)
    reversals = list(
        PaymentReversal.objects.select_for_update()
        .filter(match, kind__in=[PaymentReversal.Kind.REFUND, PaymentReversal.Kind.DISPUTE])
        .order_by("pk")
    )
    blocked = False
    for reversal in reversals:
        _reversal_apply(reversal, order)
        blocked = blocked or order.status in (Order.Status.REFUNDED, Order.Status.DISPUTED)
    return blocked


def _order_for_payment(
    *, payment_intent_id: str, invoice_id: str, subscription_id: str
) -> Order | None:
    qs = Order.objects.select_for_update()
    if payment_intent_id:
        order = qs.filter(stripe_payment_intent_id=payment_intent_id).first()
        if order:
            return order
    if invoice_id:
        order = qs.filter(stripe_invoice_id=invoice_id).first()
        if order:
            return order
        row = SubscriptionInvoice.objects.filter(stripe_invoice_id=invoice_id).first()
        if row and row.order_id:
            return qs.get(pk=row.order_id)
    if subscription_id:
        return qs.filter(stripe_subscription_id=subscription_id).first()
    return None


def _invoice_for_payment_intent(payment_intent_id: str) -> tuple[str, str]:
    """(invoice id, subscription id) paid by a PaymentIntent, asking Stripe when we do not
    know it locally. Since API 2025-03 charges and intents no longer name their invoice;
    the link is the InvoicePayment."""
    row = SubscriptionInvoice.objects.filter(stripe_payment_intent_id=payment_intent_id).first()
    if row:
        return row.stripe_invoice_id, row.stripe_subscription_id
    client = stripe_client()
    found = None
    payments = client.v1.invoice_payments.list(
        params={
            "payment": {"type": "payment_intent", "payment_intent": payment_intent_id},
            "limit": 100,
        }
    )
    for payment in payments.auto_paging_iter():
        data = as_dict(payment)
        if (data.get("payment") or {}).get("payment_intent") == payment_intent_id:
            found = data.get("invoice")
            break
    if not found:
        return "", ""
    invoice_id = found if isinstance(found, str) else found.get("id", "")
    invoice = as_dict(client.v1.invoices.retrieve(invoice_id))
    return invoice_id, invoice_subscription_id(invoice)


def invoice_subscription_id(invoice: dict) -> str:
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    sub = details.get("subscription") or invoice.get("subscription") or ""
    return sub if isinstance(sub, str) else sub.get("id", "")


def _invoice_payment_intent(invoice: dict) -> str:
    """The intent that paid an invoice, when the payload carries its payments (expanded)."""
    for payment in ((invoice.get("payments") or {}).get("data")) or []:
        intent = (payment.get("payment") or {}).get("payment_intent")
        if payment.get("status") == "paid" and intent:
            return intent if isinstance(intent, str) else intent.get("id", "")
    return ""


def _invoice_metadata(invoice: dict) -> dict:
    parent = invoice.get("parent") or {}
    return (parent.get("subscription_details") or {}).get("metadata") or {}


def _resolve_payment(payment_intent_id: str, *, may_have_invoice: bool) -> tuple[str, str]:
    """Which invoice/subscription a payment belongs to, when no order knows its intent."""
    if not payment_intent_id or not may_have_invoice:
        return "", ""
    if Order.objects.filter(stripe_payment_intent_id=payment_intent_id).exists():
        return "", ""
    return _invoice_for_payment_intent(payment_intent_id)


@transaction.atomic
def charge_refund_record(*, charge: dict) -> PaymentReversal:
    """charge.refunded: record the refund; a full refund takes access away and tells the
    creator. A refund for an order not yet fulfilled is kept and wins when it arrives."""
    payment_intent_id = charge.get("payment_intent") or ""
    # Invoices always have a customer; a guest's one-off payment has no invoice to find.
    invoice_id, subscription_id = _resolve_payment(
        payment_intent_id, may_have_invoice=bool(charge.get("customer"))
    )
    lock_stripe_ids(payment_intent_id, invoice_id, subscription_id)
    reversal, _created = PaymentReversal.objects.get_or_create(
        kind=PaymentReversal.Kind.REFUND,
        stripe_object_id=charge["id"],
        defaults={
            "stripe_payment_intent_id": payment_intent_id,
            "stripe_invoice_id": invoice_id,
            "stripe_subscription_id": subscription_id,
            "currency": charge.get("currency") or "",
        },
    )
    reversal = PaymentReversal.objects.select_for_update().get(pk=reversal.pk)
    reversal.amount = max(reversal.amount, charge.get("amount_refunded") or 0)
    reversal.full = bool(charge.get("refunded"))
    reversal.save(update_fields=["amount", "full"])
    order = _order_for_payment(
        payment_intent_id=payment_intent_id, invoice_id=invoice_id, subscription_id=subscription_id
    )
    if order is not None:
        _reversal_apply(reversal, order)
    return reversal


@transaction.atomic
def dispute_record(*, dispute: dict) -> PaymentReversal:
    """charge.dispute.created: the card holder disputes; access goes at once."""
    payment_intent_id = dispute.get("payment_intent") or ""
    invoice_id, subscription_id = _resolve_payment(payment_intent_id, may_have_invoice=True)
    lock_stripe_ids(payment_intent_id, invoice_id, subscription_id)
    reversal, _created = PaymentReversal.objects.get_or_create(
        kind=PaymentReversal.Kind.DISPUTE,
        stripe_object_id=dispute["id"],
        defaults={
            "stripe_payment_intent_id": payment_intent_id,
            "stripe_invoice_id": invoice_id,
            "stripe_subscription_id": subscription_id,
            "amount": dispute.get("amount") or 0,
            "currency": dispute.get("currency") or "",
        },
    )
    order = _order_for_payment(
        payment_intent_id=payment_intent_id, invoice_id=invoice_id, subscription_id=subscription_id
    )
    if order is not None:
        _reversal_apply(reversal, order)
    return reversal


def _reversal_apply(reversal: PaymentReversal, order: Order) -> None:
    first_time = reversal.applied_at is None
    reversal.order = order
    reversal.applied_at = reversal.applied_at or _now()
    reversal.save(update_fields=["order", "applied_at"])
    refunded = (
        PaymentReversal.objects.filter(order=order, kind=PaymentReversal.Kind.REFUND).aggregate(
            total=Sum("amount")
        )["total"]
        or 0
    )
    if order.amount_refunded != refunded:
        order.amount_refunded = refunded
        order.save(update_fields=["amount_refunded"])

    if reversal.kind == PaymentReversal.Kind.REFUND and not reversal.full:
        if first_time:
            notify_creator(
                kind="creator_partial_refund",
                subject=f"Partial refund: {order.offer_title}",
                lines=[
                    f"{format_money(reversal.amount, reversal.currency or order.currency)} was "
                    f"refunded to {order.email}. Access was kept (only a full refund ends it).",
                ],
                order=order,
            )
        return

    was = order.status
    if reversal.kind == PaymentReversal.Kind.REFUND:
        if was == Order.Status.REFUNDED:
            return
        order.status = Order.Status.REFUNDED
        order.refunded_at = order.refunded_at or _now()
        reason = "refunded"
    else:
        if was in (Order.Status.DISPUTED, Order.Status.REFUNDED):
            return
        order.status = Order.Status.DISPUTED
        order.disputed_at = order.disputed_at or _now()
        reason = "disputed"
    order.save(update_fields=["status", "refunded_at", "disputed_at"])
    taken = _order_take_access(order, reason=reason)
    headline = {
        "refunded": "A payment was refunded",
        "disputed": "A payment is disputed (chargeback)",
    }[reason]
    lines = [
        f"{headline}: {order.offer_title or order.offer_slug} bought by {order.email or 'unknown'}.",
        (
            "Access was taken away: " + ", ".join(p.title for p in taken) + "."
            if taken
            else "No access had been granted for it, and none will be."
        ),
    ]
    if order.stripe_subscription_id and order.plan_completed_at is None:
        lines.append(
            f"Its Stripe subscription {order.stripe_subscription_id} was not cancelled; "
            "cancel it in Stripe if it should stop."
        )
    if reversal.kind == PaymentReversal.Kind.DISPUTE:
        lines.append("Respond to the dispute in your Stripe dashboard before its deadline.")
    notify_creator(
        kind=f"creator_{reason}",
        subject=f"{headline}: {order.offer_title or order.offer_slug}",
        lines=lines,
        order=order,
    )
    if taken:
        _send_after_commit(access_revoked, order=order, products=taken, reason=reason)


@transaction.atomic
def subscription_ended_record(*, subscription: dict) -> PaymentReversal | None:
    """customer.subscription.deleted: a membership ends; a completed payment plan keeps
    access for good; a plan abandoned part-way ends too."""
    subscription_id = subscription["id"]
    if (
        not is_ours(_meta(subscription))
        and not Order.objects.filter(stripe_subscription_id=subscription_id).exists()
    ):
        return None
    lock_stripe_ids(subscription_id)
    ended_at = (
        _from_timestamp(subscription.get("ended_at"))
        or _from_timestamp(subscription.get("canceled_at"))
        or _now()
    )
    reversal, _created = PaymentReversal.objects.get_or_create(
        kind=PaymentReversal.Kind.SUBSCRIPTION_ENDED,
        stripe_object_id=subscription_id,
        defaults={"stripe_subscription_id": subscription_id, "occurred_at": ended_at},
    )
    order = Order.objects.select_for_update().filter(stripe_subscription_id=subscription_id).first()
    if order is not None:
        _order_subscription_ended(order, reversal)
    return reversal


def _order_subscription_ended(order: Order, reversal: PaymentReversal) -> None:
    reversal.order = order
    reversal.applied_at = reversal.applied_at or _now()
    reversal.save(update_fields=["order", "applied_at"])
    order.subscription_status = "canceled"
    order.save(update_fields=["subscription_status"])
    if order.plan_completed_at is not None or order.status != Order.Status.PAID:
        return
    ends_at = min(reversal.occurred_at, _now())
    taken = _order_take_access(
        order, reason="subscription ended", only_subscription=True, ends_at=ends_at
    )
    if taken:
        _send_after_commit(access_revoked, order=order, products=taken, reason="subscription ended")


# --- Invoices: renewals, instalments, dunning -------------------------------------------------


@transaction.atomic
def invoice_paid_record(*, invoice: dict) -> SubscriptionInvoice | None:
    """invoice.paid: a subscription renewed or an instalment was paid. Counted once per
    invoice id; after the last instalment the plan is complete and access is for good."""
    subscription_id = invoice_subscription_id(invoice)
    if not subscription_id:
        return None
    if (
        not is_ours(_invoice_metadata(invoice))
        and not Order.objects.filter(stripe_subscription_id=subscription_id).exists()
    ):
        return None
    lock_stripe_ids(invoice["id"], subscription_id)
    row = _subscription_invoice_record(
        invoice_id=invoice["id"],
        subscription_id=subscription_id,
        amount_paid=invoice.get("amount_paid") or 0,
        currency=invoice.get("currency") or "",
        billing_reason=invoice.get("billing_reason") or "",
        payment_intent_id=_invoice_payment_intent(invoice),
        paid_at=_from_timestamp((invoice.get("status_transitions") or {}).get("paid_at")),
    )
    order = Order.objects.select_for_update().filter(stripe_subscription_id=subscription_id).first()
    if order is None:
        return row  # the purchase itself is not fulfilled yet; it will count this row
    if row.order_id is None:
        row.order = order
        row.save(update_fields=["order"])
    if order.status == Order.Status.PAID:
        if order.subscription_status in ("", "past_due", "incomplete"):
            order.subscription_status = "active"
            order.save(update_fields=["subscription_status"])
        _plan_check_completion(order)
    return row


def _plan_check_completion(order: Order) -> None:
    if order.price_kind != Price.Kind.PAYMENT_PLAN or not order.stripe_subscription_id:
        return
    paid = SubscriptionInvoice.objects.filter(
        stripe_subscription_id=order.stripe_subscription_id
    ).count()
    order.installments_paid = paid
    order.save(update_fields=["installments_paid"])
    if order.plan_completed_at is not None or order.status != Order.Status.PAID:
        return
    if paid < (order.installments_total or 0):
        return
    order.plan_completed_at = _now()
    order.save(update_fields=["plan_completed_at"])
    for ent in (
        Entitlement.objects.select_for_update()
        .filter(order=order, source=Entitlement.Source.SUBSCRIPTION)
        .order_by("product_id")
    ):
        ent.source = Entitlement.Source.ORDER
        ent.ends_at = None
        ent.save(update_fields=["source", "ends_at", "updated_at"])
    order_id = order.pk
    transaction.on_commit(lambda: _plan_cancel_or_queue(order_id))


def _plan_cancel_or_queue(order_id: int) -> None:
    from .tasks import plan_subscription_cancel

    try:
        order_plan_subscription_cancel(order_id=order_id)
    except Exception as exc:
        # The order stays marked (plan_completed_at, no subscription_cancel_requested_at):
        # the task retries it, and with the broker down too the hourly
        # stripe_reconcile_recent does. The webhook that got here has committed; it answers
        # 200 whatever happens now.
        logger.warning(
            "Cancelling the finished plan of order %s failed (%r); queued for a retry, and "
            "the hourly reconciliation retries it if the queue is down too.",
            order_id,
            exc,
        )
        plan_subscription_cancel.delay_or_log(order_id)


def order_plan_subscription_cancel(*, order_id: int) -> bool:
    """Stop billing a payment plan that has been paid in full. Idempotent; True once done.
    Raises stripe errors (recorded on the order) so the task can retry."""
    order = Order.objects.get(pk=order_id)
    if order.plan_completed_at is None or order.subscription_cancel_requested_at is not None:
        return order.subscription_cancel_requested_at is not None
    try:
        stripe_client().v1.subscriptions.cancel(
            order.stripe_subscription_id,
            options={"idempotency_key": idempotency_key("plan-complete", order.pk)},
        )
    except stripe.StripeError as exc:
        # Already cancelled or gone: either way it no longer bills.
        gone = isinstance(exc, stripe.InvalidRequestError) and (
            exc.http_status == 404
            or exc.code == "resource_missing"
            or "canceled subscription" in str(exc).lower()
        )
        if not gone:
            Order.objects.filter(pk=order_id).update(subscription_cancel_error=str(exc)[:2000])
            raise
    Order.objects.filter(pk=order_id).update(
        subscription_cancel_requested_at=_now(), subscription_cancel_error=""
    )
    return True


@transaction.atomic
def invoice_payment_failed_record(*, invoice: dict) -> bool:
    """invoice.payment_failed on a renewal or instalment: tell the buyer, with a link to
    update their card. Access stays until Stripe gives up and ends the subscription.
    True when a dunning email was queued."""
    subscription_id = invoice_subscription_id(invoice)
    if not subscription_id or invoice.get("billing_reason") == "subscription_create":
        return False  # a failed first payment is the checkout's business
    order = Order.objects.select_for_update().filter(stripe_subscription_id=subscription_id).first()
    if order is None and not is_ours(_invoice_metadata(invoice)):
        return False
    customer = invoice.get("customer")
    customer_id = customer if isinstance(customer, str) else (customer or {}).get("id", "")
    to = (invoice.get("customer_email") or (order.email if order else "")).strip()
    if not to or not customer_id:
        return False
    if order is not None and order.subscription_status != "canceled":
        order.subscription_status = "past_due"
        order.save(update_fields=["subscription_status"])
    next_attempt = _from_timestamp(invoice.get("next_payment_attempt"))
    context = {
        "brand": brand_settings(),
        "order": order,
        "title": (order.offer_title if order else "") or "your subscription",
        "amount": format_money(invoice.get("amount_due") or 0, invoice.get("currency") or "usd"),
        "portal_url": billing_portal_link(customer_id=customer_id),
        "next_attempt": next_attempt,
        "is_plan": bool(order and order.price_kind == Price.Kind.PAYMENT_PLAN),
    }
    email_enqueue(
        to=to,
        subject=render_to_string("payments/email/dunning_subject.txt", context).strip(),
        text_body=render_to_string("payments/email/dunning.txt", context),
        kind="payments:dunning",
    )
    return True
