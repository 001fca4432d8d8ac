"""The demo: its landing pages' opt-in forms carry the follow-up sequence, and someone who
signs up there and confirms gets its first email."""

import io
import re

import pytest
from django.core import mail

from core.models import OutboundEmail
from funnels import demo, demo_sequences
from funnels import services as funnel_services
from funnels.models import Enrolment, LandingPage, Sequence
from tests.harness.wagtail_pages import home_page_install

from .test_sequences_support import at, run_due

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_loaded(protected_dir, settings):
    settings.DRIP_WARMUP_PER_HOUR = 0
    home_page_install(title="Northwind Academy")
    demo.load(stdout=io.StringIO())
    demo.load(stdout=io.StringIO())  # the loader runs on every `make run`


def test_the_demo_landing_pages_carry_the_follow_up_sequence(demo_loaded):
    [sequence] = Sequence.objects.all()  # loaded twice, made once

    assert sequence.name == demo_sequences.NAME
    assert sequence.steps.count() == len(demo_sequences.STEPS)
    assert list(sequence.target_products.values_list("slug", flat=True)) == [
        demo_sequences.PRODUCT_SLUG
    ]
    for slug in demo_sequences.LANDING_PAGES:
        page = LandingPage.objects.get(slug=slug).get_latest_revision_as_object()
        forms = page.optin_forms()
        assert forms, slug
        assert {form["sequence"] for form in forms.values()} == {sequence}


def test_signing_up_on_the_demo_page_starts_the_sequence(demo_loaded):
    page = LandingPage.objects.get(slug="launch-checklist").specific
    form_id = next(iter(page.optin_forms()))
    funnel_services.optin_submit(
        landing_page=page,
        form_id=form_id,
        email="aino@lodestone-mail.fi",
        name="Aino",
        consent=True,
        visitor=funnel_services.Visitor(time_zone="Europe/Helsinki"),
        attribution=funnel_services.Attribution(),
    )
    confirmation = OutboundEmail.objects.get(kind="funnels:confirm")
    token = re.search(r"/f/confirm/([^/\s]+)/", confirmation.text_body).group(1)

    funnel_services.subscriber_confirm(token=token, visitor=funnel_services.Visitor())

    enrolment = Enrolment.objects.get(subscriber__email="aino@lodestone-mail.fi")
    assert (enrolment.sequence.name, enrolment.source) == (demo_sequences.NAME, "optin")
    run_due(at("2030-01-01 10:00"))  # noon in Helsinki, long after the first step's delay
    assert [m.subject for m in mail.outbox] == ["Your checklist, Aino"]
