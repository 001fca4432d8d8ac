"""Shared helpers for the sequence tests (no tests here): sequences, subscribers, and a
scheduler run that sends in this process at an explicit "now"."""

import datetime

from django.core import mail
from wagtail.models import Site

from core.models import BrandSettings
from core.services import brand_settings_forget
from funnels.models import Sequence, SequenceStep, Subscriber
from funnels.sequences import scheduler, sending

UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def brand_install(**fields) -> BrandSettings:
    """The default site's brand: a sender on our own domain and a postal address."""
    site = Site.objects.filter(is_default_site=True).first()
    brand = BrandSettings.for_site(site)
    values = {
        "brand_name": "Northwind Academy",
        "sender_name": "Maya",
        "sender_email": "maya@northwind.example",
        "postal_address": "Kauppakatu 1\n00100 Helsinki",
        **fields,
    }
    for name, value in values.items():
        setattr(brand, name, value)
    brand.save()
    brand_settings_forget()
    return brand


STEPS = [
    (
        "content",
        0,
        0,
        "Welcome, {{ first_name|default:'friend' }}",
        "Hi {{ first_name }},\n\nHere is the plan: https://northwind.example/plan",
    ),
    (
        "content",
        1,
        0,
        "The one mistake",
        "Most launches fail at [the checklist](https://northwind.example/check).",
    ),
    ("offer", 2, 0, "Doors are open", "The course is open, {{ first_name }}."),
]


def make_sequence(name="Launch sequence", steps=STEPS, **fields) -> Sequence:
    sequence = Sequence.objects.create(name=name, **fields)
    for order, (kind, days, hours, subject, body) in enumerate(steps):
        SequenceStep.objects.create(
            sequence=sequence,
            sort_order=order,
            kind=kind,
            delay_days=days,
            delay_hours=hours,
            subject=subject,
            body=body,
        )
    return sequence


def confirmed(email, *, time_zone="Europe/Helsinki", name="Leila Ahmadi", **fields) -> Subscriber:
    return Subscriber.objects.create(
        email=email, name=name, time_zone=time_zone, status=Subscriber.Status.CONFIRMED, **fields
    )


def run_due(now: datetime.datetime, connection=None, **kwargs) -> list[sending.BatchResult]:
    """One scheduler pass at ``now``, its batches sent here rather than by a worker."""
    result = scheduler.drip_schedule_due(now=now, dispatch=False, **kwargs)
    outcomes = []
    size = scheduler.TASK_SIZE
    for batch in result.batches:
        for start in range(0, len(batch), size):
            outcomes.append(
                sending.deliveries_send(
                    delivery_ids=batch.delivery_ids[start : start + size],
                    enrolments=batch.enrolments[start : start + size],
                    token=batch.token,
                    now=now,
                    connection=connection,
                )
            )
    return outcomes


def sent_to(address: str) -> list:
    return [m for m in mail.outbox if address in m.to]
