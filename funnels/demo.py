"""Demo funnel: a lead magnet (a real PDF) and two landing pages, English and Persian."""

from datetime import timedelta
from pathlib import Path

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from core.models import HomePage

from .models import LandingPage, LeadMagnet

ASSET = Path(__file__).parent / "demo_assets" / "launch-checklist.pdf"


def _magnet() -> LeadMagnet:
    magnet = LeadMagnet.objects.filter(title="The Launch Checklist").first()
    if magnet is None:
        magnet = LeadMagnet(
            title="The Launch Checklist",
            description="<p>Everything to do in the 14 days before you open the cart.</p>",
            download_filename="launch-checklist.pdf",
        )
        magnet.file.save("launch-checklist.pdf", ContentFile(ASSET.read_bytes()), save=False)
        magnet.save()
    return magnet


def _optin(magnet, heading, button, consent, tags, text=""):
    return (
        "optin_form",
        {
            "heading": heading,
            "text": text,
            "magnet": magnet,
            "ask_name": True,
            "button_label": button,
            "consent_text": consent,
            "double_opt_in": True,
            "tags": tags,
        },
    )


def _english_body(magnet):
    deadline = (timezone.now() + timedelta(days=5)).replace(minute=0, second=0, microsecond=0)
    return [
        (
            "hero",
            {
                "headline": "Launch your course without the 3 a.m. panic",
                "subheadline": "The two-page checklist 1,200 creators use in the 14 days before opening the cart.",
            },
        ),
        _optin(
            magnet,
            "Get the free Launch Checklist",
            "Send me the checklist",
            "Send me the checklist and a weekly email with launch advice. I can unsubscribe at any time.",
            "launch-checklist, lead",
            "Straight to your inbox. No spam, ever.",
        ),
        (
            "benefits",
            {
                "heading": "What you will know by tonight",
                "items": [
                    {"title": "What to do each day", "text": "Fourteen days, one short list each."},
                    {"title": "When to send what", "text": "Useful emails first, the offer after."},
                    {"title": "How to test checkout", "text": "A dry run with a real refund."},
                ],
            },
        ),
        (
            "testimonials",
            {
                "heading": "Creators who used it",
                "items": [
                    {
                        "quote": "My first launch that did not end in tears.",
                        "name": "Aino Virtanen",
                        "role": "Yoga teacher, Tampere",
                    },
                    {
                        "quote": "Chị gửi email đúng giờ, và doanh thu tăng gấp đôi.",
                        "name": "Nguyễn Thị Mai",
                        "role": "Baking course, Hà Nội",
                    },
                ],
            },
        ),
        (
            "countdown",
            {
                "heading": "The launch bonus ends in",
                "deadline": deadline,
                "expired_text": "The launch bonus has ended.",
            },
        ),
        (
            "faq",
            {
                "heading": "Questions",
                "items": [
                    {
                        "question": "Is it really free?",
                        "answer": "<p>Yes. You confirm your email and download it.</p>",
                    },
                    {
                        "question": "Will you email me?",
                        "answer": "<p>Once a week, with one useful idea. Leave with one click.</p>",
                    },
                ],
            },
        ),
        (
            "author_bio",
            {
                "name": "Maya Creator",
                "bio": "<p>Maya has launched eleven online courses since 2017.</p>",
            },
        ),
    ]


def _persian_body(magnet):
    return [
        (
            "hero",
            {
                "headline": "دوره‌تان را بدون استرس راه‌اندازی کنید",
                "subheadline": "چک‌لیست دوصفحه‌ای برای ۱۴ روز پیش از فروش.",
            },
        ),
        _optin(
            magnet,
            "چک‌لیست رایگان را دریافت کنید",
            "برایم بفرست",
            "چک‌لیست و ایمیل هفتگی را برایم بفرستید. هر زمان می‌توانم لغو کنم.",
            "launch-checklist, fa",
        ),
        ("rich_text", "<p>هر روز یک فهرست کوتاه؛ اول ایمیل‌های مفید، بعد پیشنهاد فروش.</p>"),
    ]


@transaction.atomic
def load(*, stdout) -> dict:
    magnet = _magnet()
    home = HomePage.objects.first()
    pages = {}
    for slug, title, seo, body in (
        (
            "launch-checklist",
            "Free Launch Checklist",
            "The Launch Checklist — free download",
            _english_body(magnet),
        ),
        ("fa-checklist", "چک‌لیست راه‌اندازی", "چک‌لیست رایگان راه‌اندازی", _persian_body(magnet)),
    ):
        page = LandingPage.objects.filter(slug=slug).first()
        if page is None:
            page = LandingPage(title=title, slug=slug, seo_title=seo, body=body)
            home.add_child(instance=page)
            page.save_revision().publish()
        pages[slug] = page
    if home.call_to_action_page_id is None:
        home.call_to_action_label = "Get the free checklist"
        home.call_to_action_page = pages["launch-checklist"]
        home.save_revision().publish()
    from . import demo_sequences

    demo_sequences.load(stdout=stdout)
    stdout.write(f"  landing pages: {', '.join(p.url for p in pages.values())}")
    return {"landing_page_url": pages["launch-checklist"].url}
