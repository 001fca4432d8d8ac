"""StreamField blocks a creator arranges into a landing page."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from wagtail import blocks
from wagtail.embeds.blocks import EmbedBlock
from wagtail.images.blocks import ImageChooserBlock
from wagtail.snippets.blocks import SnippetChooserBlock

if TYPE_CHECKING:
    from payments.models import Offer, Price

RICH = ["bold", "italic", "link", "ol", "ul", "h2", "h3"]


class HeroBlock(blocks.StructBlock):
    headline = blocks.CharBlock(max_length=120)
    subheadline = blocks.TextBlock(required=False, max_length=300)
    image = ImageChooserBlock(required=False)
    video = EmbedBlock(
        required=False, help_text=_("A YouTube or Vimeo URL; shown instead of the image.")
    )

    class Meta:
        icon = "title"
        template = "funnels/blocks/hero.html"


class BenefitsBlock(blocks.StructBlock):
    heading = blocks.CharBlock(required=False)
    items = blocks.ListBlock(
        blocks.StructBlock(
            [("title", blocks.CharBlock()), ("text", blocks.TextBlock(required=False))]
        )
    )

    class Meta:
        icon = "list-ul"
        template = "funnels/blocks/benefits.html"


class TestimonialsBlock(blocks.StructBlock):
    heading = blocks.CharBlock(required=False)
    items = blocks.ListBlock(
        blocks.StructBlock(
            [
                ("quote", blocks.TextBlock()),
                ("name", blocks.CharBlock()),
                ("role", blocks.CharBlock(required=False)),
                ("photo", ImageChooserBlock(required=False)),
            ]
        )
    )

    class Meta:
        icon = "openquote"
        template = "funnels/blocks/testimonials.html"


class FaqBlock(blocks.StructBlock):
    heading = blocks.CharBlock(required=False, default="Questions")
    items = blocks.ListBlock(
        blocks.StructBlock(
            [("question", blocks.CharBlock()), ("answer", blocks.RichTextBlock(features=RICH))]
        )
    )

    class Meta:
        icon = "help"
        template = "funnels/blocks/faq.html"


class CountdownBlock(blocks.StructBlock):
    heading = blocks.CharBlock(required=False)
    deadline = blocks.DateTimeBlock(help_text=_("In the site's time zone."))
    expired_text = blocks.CharBlock(required=False, default="This offer has ended.")

    class Meta:
        icon = "time"
        template = "funnels/blocks/countdown.html"


class OptInFormBlock(blocks.StructBlock):
    heading = blocks.CharBlock(default="Get your free copy")
    text = blocks.TextBlock(required=False)
    magnet = SnippetChooserBlock("funnels.LeadMagnet")
    ask_name = blocks.BooleanBlock(required=False, default=True, label=_("Ask for a first name"))
    button_label = blocks.CharBlock(default="Send it to me", max_length=40)
    consent_text = blocks.TextBlock(
        default="Send me the download and occasional emails. I can unsubscribe at any time.",
        help_text=_(
            "The visitor ticks a box with this text, stored word for word as proof of consent."
        ),
    )
    double_opt_in = blocks.BooleanBlock(
        required=False,
        default=True,
        help_text=_(
            "Ask new subscribers to confirm their address before the download (recommended)."
        ),
    )
    tags = blocks.CharBlock(
        required=False, help_text=_("Comma-separated tags applied to new sign-ups.")
    )
    sequence = SnippetChooserBlock(
        "funnels.Sequence",
        required=False,
        help_text=_("Email sequence that starts when a sign-up confirms their address."),
    )

    class Meta:
        icon = "mail"
        template = "funnels/blocks/optin_form.html"


class CallToActionBlock(blocks.StructBlock):
    heading = blocks.CharBlock(required=False)
    text = blocks.TextBlock(required=False)
    button_label = blocks.CharBlock(max_length=40)
    page = blocks.PageChooserBlock(required=False)
    url = blocks.URLBlock(required=False, help_text=_("Used when no page is chosen."))

    class Meta:
        icon = "pick"
        template = "funnels/blocks/cta.html"


class AuthorBioBlock(blocks.StructBlock):
    name = blocks.CharBlock()
    photo = ImageChooserBlock(required=False)
    bio = blocks.RichTextBlock(features=RICH)

    class Meta:
        icon = "user"
        template = "funnels/blocks/author_bio.html"


@dataclass(frozen=True)
class BuyBox:
    """What a buy button shows: an offer that can be bought now, and how to pay for it."""

    offer: "Offer"
    prices: list["Price"]
    # One price and no order bump: the button posts straight to Stripe Checkout. Otherwise
    # it opens the offer's buy page, where the buyer picks a price or ticks the bump.
    direct: bool
    test_checkout: bool


def buy_box(offer: "Offer | None") -> BuyBox | None:
    """The buy box for ``offer``, or None when it cannot be bought (unpublished, no active
    price, no product). Product pages build theirs with this too and include
    ``funnels/blocks/buy_button.html`` with ``buy`` and a ``value`` holding headline, text
    and button_label."""
    from payments import exceptions, selectors

    if offer is None:
        return None
    try:
        offer = selectors.offer_for_checkout(slug=offer.slug)
    except exceptions.OfferUnavailable:
        return None
    prices = selectors.checkout_prices(offer)
    return BuyBox(
        offer=offer,
        prices=prices,
        direct=len(prices) == 1 and selectors.bump_price_for(offer, prices[0]) is None,
        test_checkout=is_test_checkout(),
    )


def is_test_checkout() -> bool:
    """True when no real money can move: a Stripe stand-in (STRIPE_API_BASE) or Stripe's
    own test mode (an sk_test_/rk_test_ key)."""
    key = settings.STRIPE_SECRET_KEY or ""
    return bool(settings.STRIPE_API_BASE) or key.startswith(("sk_test_", "rk_test_"))


class BuyButtonBlock(blocks.StructBlock):
    offer = SnippetChooserBlock(
        "payments.Offer",
        help_text=_("Only a published offer with an active price shows a button."),
    )
    headline = blocks.CharBlock(max_length=120)
    text = blocks.TextBlock(required=False, max_length=400)
    button_label = blocks.CharBlock(default="Buy now", max_length=40)

    class Meta:
        icon = "tag"
        label = _("Buy button")
        template = "funnels/blocks/buy_button.html"

    def get_context(self, value, parent_context=None):
        context = super().get_context(value, parent_context=parent_context)
        context["buy"] = buy_box(value.get("offer"))
        return context


class LandingPageBlocks(blocks.StreamBlock):
    hero = HeroBlock()
    rich_text = blocks.RichTextBlock(features=RICH, template="funnels/blocks/rich_text.html")
    benefits = BenefitsBlock()
    testimonials = TestimonialsBlock()
    faq = FaqBlock()
    countdown = CountdownBlock()
    optin_form = OptInFormBlock()
    cta = CallToActionBlock()
    author_bio = AuthorBioBlock()
    buy_button = BuyButtonBlock()
