"""StreamField blocks for lesson bodies: what a teacher writes between the video and the
downloads. Kept few and plain so every lesson reads alike."""

from django.utils.translation import gettext_lazy as _
from wagtail import blocks
from wagtail.images.blocks import ImageChooserBlock

LESSON_TEXT_FEATURES = ["h3", "h4", "bold", "italic", "link", "ol", "ul", "code", "hr"]


class ImageBlock(blocks.StructBlock):
    image = ImageChooserBlock()
    alt_text = blocks.CharBlock(
        required=False,
        max_length=255,
        help_text=_("Describe the image for people who cannot see it. Empty if decorative."),
    )
    caption = blocks.CharBlock(required=False, max_length=255)

    class Meta:
        icon = "image"
        template = "courses/blocks/image.html"


class CalloutBlock(blocks.StructBlock):
    tone = blocks.ChoiceBlock(
        choices=[("tip", _("Tip")), ("note", _("Note")), ("warning", _("Watch out"))],
        default="tip",
    )
    title = blocks.CharBlock(required=False, max_length=120)
    text = blocks.RichTextBlock(features=["bold", "italic", "link", "ol", "ul"])

    class Meta:
        icon = "help"
        template = "courses/blocks/callout.html"


class ChecklistBlock(blocks.StructBlock):
    title = blocks.CharBlock(required=False, max_length=120)
    items = blocks.ListBlock(blocks.CharBlock(max_length=300), min_num=1)

    class Meta:
        icon = "tasks"
        template = "courses/blocks/checklist.html"


class QuoteBlock(blocks.StructBlock):
    quote = blocks.TextBlock()
    attribution = blocks.CharBlock(required=False, max_length=150)

    class Meta:
        icon = "openquote"
        template = "courses/blocks/quote.html"


class LessonBodyBlocks(blocks.StreamBlock):
    heading = blocks.CharBlock(
        max_length=150, icon="title", form_classname="title", template="courses/blocks/heading.html"
    )
    text = blocks.RichTextBlock(features=LESSON_TEXT_FEATURES, icon="pilcrow")
    image = ImageBlock()
    callout = CalloutBlock()
    checklist = ChecklistBlock()
    quote = QuoteBlock()
