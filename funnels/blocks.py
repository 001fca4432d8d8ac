"""StreamField blocks a creator arranges into a landing page."""

from django.utils.translation import gettext_lazy as _
from wagtail import blocks
from wagtail.embeds.blocks import EmbedBlock
from wagtail.images.blocks import ImageChooserBlock
from wagtail.snippets.blocks import SnippetChooserBlock

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
