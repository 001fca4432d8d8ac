"""Demo drip sequence: the Launch Checklist follow-up, attached to the demo landing pages'
opt-in forms. Idempotent. Called from funnels/demo.py's load()."""

from django.conf import settings
from django.db import transaction

from .models import LandingPage, Sequence, SequenceStep

NAME = "Launch Checklist follow-up"
PRODUCT_SLUG = "launch-your-first-course"  # sold by the payments demo
LANDING_PAGES = ("launch-checklist", "fa-checklist")

STEPS = [
    (
        "content",
        0,
        1,
        "Your checklist, {{ first_name|default:'friend' }}",
        "Hi {{ first_name|default:'there' }},\n\n"
        "Thanks for confirming. Print the checklist and tick off day 14 today: pick the "
        "date you open the cart and tell one person about it.\n\n"
        "Tomorrow: the one email most launches forget.\n\n— {{ sender_name }}",
    ),
    (
        "content",
        1,
        0,
        "The email most launches forget",
        "Hi {{ first_name|default:'there' }},\n\n"
        "Before you sell, send one email that is useful on its own: a story, a lesson, a "
        "template. Readers who got something for free open the next email.\n\n"
        "Here is the template I use: [the useful email](https://example.com/useful-email)\n\n"
        "— {{ sender_name }}",
    ),
    (
        "content",
        2,
        0,
        "How to test checkout",
        "Hi {{ first_name|default:'there' }},\n\n"
        "Buy your own course once, then refund yourself. You will find the broken link "
        "before a customer does.\n\n— {{ sender_name }}",
    ),
    (
        "offer",
        1,
        0,
        "Doors are open",
        "Hi {{ first_name|default:'there' }},\n\n"
        "Launch Your First Course is open. Fourteen lessons, the checklist in action, and "
        "a launch review with me.\n\n— {{ sender_name }}",
    ),
]


@transaction.atomic
def load(*, stdout) -> dict:
    from payments.models import Product

    sequence = Sequence.objects.filter(name=NAME).first()
    if sequence is None:
        sequence = Sequence.objects.create(
            name=NAME,
            description="Four emails after the checklist: three useful, then the offer.",
        )
        for order, (kind, days, hours, subject, body) in enumerate(STEPS):
            SequenceStep.objects.create(
                sequence=sequence,
                sort_order=order,
                kind=kind,
                delay_days=days,
                delay_hours=hours,
                subject=subject,
                body=body,
                button_label="See the course" if kind == "offer" else "",
                button_url=f"{settings.SITE_URL}/pay/buy/{PRODUCT_SLUG}/"
                if kind == "offer"
                else "",
            )
    product, _created = Product.objects.get_or_create(
        slug=PRODUCT_SLUG,
        defaults={"kind": Product.Kind.COURSE, "title": "Launch Your First Course"},
    )
    sequence.target_products.add(product)
    attached = []
    for page in LandingPage.objects.filter(slug__in=LANDING_PAGES):
        body = page.body
        changed = False
        for block in body:
            if block.block_type == "optin_form" and block.value.get("sequence") is None:
                block.value["sequence"] = sequence
                changed = True
        if changed:
            page.body = body
            page.save_revision().publish()
        attached.append(page.url or page.slug)
    stdout.write(
        f"  sequence: {sequence.name} ({sequence.steps.count()} emails) on {', '.join(attached)}"
    )
    return {}
