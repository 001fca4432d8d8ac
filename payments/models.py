"""What is sold (products, offers, prices), what was bought (orders), and who may use what
(entitlements); plus the Stripe records that make every step idempotent.

Invariants the business depends on are database constraints: one order per Checkout
Session, one entitlement per buyer and product, one row per Stripe event, per paid invoice
and per refund or dispute.
"""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .money import format_money

currency_validator = RegexValidator(
    r"^[a-z]{3}$", _("Use the three-letter ISO 4217 code in lower case, e.g. usd.")
)


class SyncStatus(models.TextChoices):
    PENDING = "pending", _("Not yet in Stripe")
    SYNCED = "synced", _("In Stripe")
    FAILED = "failed", _("Sync failed")


class Product(models.Model):
    """A thing access is granted to. Courses, webinars and downloads point here (a one-to-one
    from their own models), never the other way round, so this app depends on none of them."""

    class Kind(models.TextChoices):
        COURSE = "course", _("Course")
        WEBINAR = "webinar", _("Webinar ticket")
        DOWNLOAD = "download", _("Download")
        MEMBERSHIP = "membership", _("Membership")

    kind = models.CharField(max_length=16, choices=Kind.choices)
    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class Offer(models.Model):
    """How something is sold: one product, or a bundle of several, at one or more prices."""

    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    is_published = models.BooleanField(
        default=False, help_text=_("Only published offers can be bought.")
    )
    products = models.ManyToManyField(Product, related_name="offers")
    bump_offer = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("Offered as a tick-box extra at checkout (an order bump)."),
    )
    bump_headline = models.CharField(max_length=200, blank=True)
    stripe_product_id = models.CharField(max_length=255, blank=True)
    sync_status = models.CharField(
        max_length=16, choices=SyncStatus.choices, default=SyncStatus.PENDING
    )
    sync_error = models.TextField(blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class Price(models.Model):
    class Kind(models.TextChoices):
        ONE_TIME = "one_time", _("One-time payment")
        SUBSCRIPTION = "subscription", _("Subscription")
        PAYMENT_PLAN = "payment_plan", _("Payment plan")

    class Interval(models.TextChoices):
        MONTH = "month", _("Monthly")
        YEAR = "year", _("Yearly")

    offer = models.ForeignKey(Offer, on_delete=models.CASCADE, related_name="prices")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ONE_TIME)
    # In the currency's minor unit (cents; yen; fils): never a float.
    amount = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3, validators=[currency_validator])
    interval = models.CharField(max_length=8, choices=Interval.choices, blank=True)
    installments = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text=_("Payment plans: how many payments, then access for good."),
    )
    is_active = models.BooleanField(default=True)
    stripe_price_id = models.CharField(max_length=255, blank=True)
    # What the Stripe price was created from; a change means a new Stripe price
    # (Stripe prices are immutable).
    stripe_fingerprint = models.CharField(max_length=128, blank=True)
    sync_status = models.CharField(
        max_length=16, choices=SyncStatus.choices, default=SyncStatus.PENDING
    )
    sync_error = models.TextField(blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["offer", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="payments_price_amount_positive"
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[a-z]{3}$"), name="payments_price_currency_iso"
            ),
            models.CheckConstraint(
                condition=(
                    Q(kind="one_time", interval="", installments__isnull=True)
                    | Q(
                        kind="subscription",
                        interval__in=["month", "year"],
                        installments__isnull=True,
                    )
                    | Q(kind="payment_plan", interval__in=["month", "year"], installments__gte=2)
                ),
                name="payments_price_kind_shape",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.offer} — {self.display}"

    def clean(self):
        super().clean()
        self.currency = (self.currency or "").lower()
        if self.kind == self.Kind.ONE_TIME:
            if self.interval or self.installments:
                raise ValidationError(_("A one-time price has no interval or instalments."))
        elif not self.interval:
            raise ValidationError({"interval": _("Choose monthly or yearly.")})
        if self.kind == self.Kind.PAYMENT_PLAN and (self.installments or 0) < 2:
            raise ValidationError({"installments": _("A payment plan has at least 2 payments.")})
        if self.kind == self.Kind.SUBSCRIPTION and self.installments:
            raise ValidationError({"installments": _("Only payment plans have instalments.")})

    @property
    def is_recurring(self) -> bool:
        return self.kind in (self.Kind.SUBSCRIPTION, self.Kind.PAYMENT_PLAN)

    @property
    def display(self) -> str:
        money = format_money(self.amount, self.currency)
        if self.kind == self.Kind.SUBSCRIPTION:
            return f"{money} / {self.interval}"
        if self.kind == self.Kind.PAYMENT_PLAN:
            return f"{self.installments} × {money} / {self.interval}"
        return money


class CheckoutAttempt(models.Model):
    """A buyer pressed "buy": what we asked Stripe for, and whether Stripe answered.

    Exists before any payment (an Order does not); it also carries what the amounts should
    be, so fulfilment can tell a price change mid-checkout from a forged session.
    """

    class Status(models.TextChoices):
        STARTED = "started", _("Started")
        REDIRECTED = "redirected", _("Sent to Stripe")
        FAILED = "failed", _("Stripe did not answer")

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    offer = models.ForeignKey(Offer, null=True, on_delete=models.SET_NULL, related_name="+")
    price = models.ForeignKey(Price, null=True, on_delete=models.SET_NULL, related_name="+")
    bump_price = models.ForeignKey(
        Price, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    subscriber_id = models.PositiveBigIntegerField(null=True, blank=True)
    email = models.EmailField(max_length=254, blank=True)
    expected_subtotal = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    stripe_checkout_session_id = models.CharField(
        max_length=255, null=True, blank=True, unique=True
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"checkout {self.uid} ({self.status})"


class Order(models.Model):
    """One per completed Checkout Session; created when Stripe says the buyer paid (or is
    paying by bank debit), never before."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Payment processing")
        PAID = "paid", _("Paid")
        REFUNDED = "refunded", _("Refunded")
        DISPUTED = "disputed", _("Disputed")
        NEEDS_REVIEW = "needs_review", _("Needs review")
        FAILED = "failed", _("Payment failed")

    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="orders",
    )
    email = models.EmailField(max_length=254, blank=True)
    subscriber_id = models.PositiveBigIntegerField(null=True, blank=True)
    offer = models.ForeignKey(
        Offer, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    price = models.ForeignKey(
        Price, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    # Snapshots: the order must read the same after the offer or price is edited or deleted.
    offer_slug = models.SlugField(max_length=100, blank=True)
    offer_title = models.CharField(max_length=200, blank=True)
    price_kind = models.CharField(max_length=16, choices=Price.Kind.choices, blank=True)
    installments_total = models.PositiveSmallIntegerField(null=True, blank=True)
    installments_paid = models.PositiveSmallIntegerField(default=0)
    plan_completed_at = models.DateTimeField(null=True, blank=True)
    attempt = models.ForeignKey(
        CheckoutAttempt, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    stripe_checkout_session_id = models.CharField(max_length=255, unique=True)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_invoice_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True, db_index=True)
    subscription_status = models.CharField(max_length=32, blank=True)
    subscription_cancel_requested_at = models.DateTimeField(null=True, blank=True)
    subscription_cancel_error = models.TextField(blank=True)
    amount_subtotal = models.BigIntegerField(default=0)
    amount_discount = models.BigIntegerField(default=0)
    amount_total = models.BigIntegerField(default=0)
    amount_refunded = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    review_reason = models.TextField(blank=True)
    buyer_account_created = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    disputed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"order {self.pk} {self.offer_title} ({self.status})"

    @property
    def total_display(self) -> str:
        return format_money(self.amount_total, self.currency) if self.currency else ""


class OrderItem(models.Model):
    """A line of the Checkout Session: the offer bought, and the order bump if ticked."""

    class Role(models.TextChoices):
        MAIN = "main", _("Offer")
        BUMP = "bump", _("Order bump")

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    role = models.CharField(max_length=8, choices=Role.choices)
    offer = models.ForeignKey(Offer, null=True, blank=True, on_delete=models.SET_NULL)
    price = models.ForeignKey(Price, null=True, blank=True, on_delete=models.SET_NULL)
    title = models.CharField(max_length=200)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    # What this line grants, fixed when the order is made: editing a bundle later changes
    # what new buyers get, not what earlier buyers paid for.
    products = models.ManyToManyField(Product, related_name="+", blank=True)

    class Meta:
        ordering = ["order", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["order", "role"], name="payments_order_item_role_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.title} ({format_money(self.amount, self.currency)})"


class EntitlementQuerySet(models.QuerySet):
    def active(self, at=None):
        at = at or timezone.now()
        return self.filter(
            Q(revoked_at__isnull=True),
            Q(starts_at__lte=at),
            Q(ends_at__isnull=True) | Q(ends_at__gt=at),
        )


class Entitlement(models.Model):
    """Who may use what: the one row every protected view checks (selectors.has_access)."""

    class Source(models.TextChoices):
        ORDER = "order", _("Purchase")
        SUBSCRIPTION = "subscription", _("Subscription")
        MANUAL = "manual", _("Granted by hand")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="entitlements"
    )
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="entitlements")
    order = models.ForeignKey(
        Order, null=True, blank=True, on_delete=models.SET_NULL, related_name="entitlements"
    )
    source = models.CharField(max_length=16, choices=Source.choices)
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = EntitlementQuerySet.as_manager()

    class Meta:
        ordering = ["user", "product"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "product"], name="payments_entitlement_user_product_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.product}"

    def is_active(self, at=None) -> bool:
        at = at or timezone.now()
        return (
            self.revoked_at is None
            and self.starts_at <= at
            and (self.ends_at is None or self.ends_at > at)
        )


class StripeCustomer(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stripe_customer"
    )
    stripe_customer_id = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.stripe_customer_id


class SubscriptionInvoice(models.Model):
    """A paid invoice of one of our subscriptions: a payment plan counts these rows.

    Recorded whenever invoice.paid arrives, even before the order exists, so the count does
    not depend on the order in which events arrive.
    """

    stripe_invoice_id = models.CharField(max_length=255, unique=True)
    stripe_subscription_id = models.CharField(max_length=255, db_index=True)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    order = models.ForeignKey(
        Order, null=True, blank=True, on_delete=models.SET_NULL, related_name="invoices"
    )
    billing_reason = models.CharField(max_length=64, blank=True)
    amount_paid = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    paid_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["paid_at"]

    def __str__(self) -> str:
        return self.stripe_invoice_id


class PaymentReversal(models.Model):
    """Money or access taken back: a refund, a dispute, or the end of a subscription.

    Stored even when no order matches yet (events arrive in any order); fulfilment looks
    here first, so a refund that arrived before the purchase still wins.
    """

    class Kind(models.TextChoices):
        REFUND = "refund", _("Refund")
        DISPUTE = "dispute", _("Dispute")
        SUBSCRIPTION_ENDED = "subscription_ended", _("Subscription ended")

    kind = models.CharField(max_length=32, choices=Kind.choices)
    # The charge (refund), dispute or subscription id.
    stripe_object_id = models.CharField(max_length=255)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_invoice_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True, db_index=True)
    amount = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    full = models.BooleanField(default=True, help_text=_("Whole charge refunded."))
    occurred_at = models.DateTimeField(default=timezone.now)
    order = models.ForeignKey(
        Order, null=True, blank=True, on_delete=models.SET_NULL, related_name="reversals"
    )
    applied_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "stripe_object_id"], name="payments_reversal_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.stripe_object_id}"


class StripeEvent(models.Model):
    """Every event Stripe sent or we fetched, stored under its id before it is processed."""

    stripe_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=128, db_index=True)
    api_version = models.CharField(max_length=64, blank=True)
    livemode = models.BooleanField(default=False)
    payload = models.JSONField()
    stripe_created_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    received_via = models.CharField(max_length=16, default="webhook")
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    error_traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["processed_at", "received_at"])]

    def __str__(self) -> str:
        return f"{self.stripe_id} {self.type}"

    @property
    def data_object(self) -> dict:
        return (self.payload.get("data") or {}).get("object") or {}


class LoginToken(models.Model):
    """A one-time sign-in link sent after a purchase. Only a hash of its secret is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="payment_login_tokens"
    )
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.SET_NULL)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"login link for {self.user_id}"
