"""Reads: what can be bought, and who may use what.

``has_access(user, product)`` is the one check every protected view makes (course lessons,
webinar rooms, downloads); ``entitlements_for(user)`` lists what a buyer has.
"""

from django.db.models import QuerySet
from django.utils import timezone

from . import exceptions
from .models import Entitlement, Offer, Order, Price, Product

# Where a product's own page hangs: a CoursePage links its product one-to-one.
PRODUCT_PAGE_ATTRS = ("course_page", "webinar_page")


def product_page_url(product: Product) -> str:
    """The live page of a product (a course), or "" while it has none."""
    for attr in PRODUCT_PAGE_ATTRS:
        page = getattr(product, attr, None)
        if page is not None and getattr(page, "live", False):
            return page.url or ""
    return ""


def has_access(user, product: Product | int) -> bool:
    """True while ``user`` holds an active entitlement to ``product`` (a Product or its pk):
    not revoked (refund, dispute), started, and not ended (subscription over)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    product_id = product.pk if isinstance(product, Product) else product
    return Entitlement.objects.active().filter(user_id=user.pk, product_id=product_id).exists()


def entitlements_for(user, *, include_inactive: bool = False) -> QuerySet[Entitlement]:
    """A buyer's entitlements with their products, active ones only unless asked."""
    if user is None or not getattr(user, "is_authenticated", False):
        return Entitlement.objects.none()
    qs = Entitlement.objects.filter(user_id=user.pk).select_related("product", "order")
    if not include_inactive:
        qs = qs.active()
    return qs.order_by("product__title")


def products_for(user) -> QuerySet[Product]:
    if user is None or not getattr(user, "is_authenticated", False):
        return Product.objects.none()
    now = timezone.now()
    return (
        Product.objects.filter(
            entitlements__in=Entitlement.objects.active(now).filter(user_id=user.pk)
        )
        .distinct()
        .order_by("title")
    )


def offer_for_checkout(*, slug: str) -> Offer:
    """A published offer that has at least one active price, or OfferUnavailable."""
    offer = (
        Offer.objects.filter(slug=slug, is_published=True)
        .select_related("bump_offer")
        .prefetch_related("products")
        .first()
    )
    if (
        offer is None
        or not offer.prices.filter(is_active=True).exists()
        or not offer.products.exists()
    ):
        raise exceptions.OfferUnavailable()
    return offer


def checkout_prices(offer: Offer) -> list[Price]:
    return list(offer.prices.filter(is_active=True).order_by("pk"))


def checkout_price(offer: Offer, price_id: int | str | None) -> Price:
    prices = checkout_prices(offer)
    if not prices:
        raise exceptions.OfferUnavailable()
    if price_id in (None, ""):
        return prices[0]
    for price in prices:
        if str(price.pk) == str(price_id):
            return price
    raise exceptions.OfferUnavailable("That price is no longer offered. Please choose another.")


def bump_price_for(offer: Offer, price: Price) -> Price | None:
    """The order bump's price, when the bump can ride along this checkout: a published
    offer with an active one-time price in the same currency."""
    bump = offer.bump_offer
    if bump is None or not bump.is_published or bump.pk == offer.pk:
        return None
    return (
        bump.prices.filter(is_active=True, kind=Price.Kind.ONE_TIME, currency=price.currency)
        .order_by("pk")
        .first()
    )


def order_for_session(session_id: str) -> Order | None:
    return (
        Order.objects.filter(stripe_checkout_session_id=session_id)
        .select_related("buyer", "offer")
        .first()
    )


def orders_for(user) -> QuerySet[Order]:
    if user is None or not getattr(user, "is_authenticated", False):
        return Order.objects.none()
    return Order.objects.filter(buyer_id=user.pk).prefetch_related("items")
