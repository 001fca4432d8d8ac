"""Celery tasks of drip sequences and broadcasts; imported by funnels/tasks.py so
autodiscovery registers them."""

from datetime import datetime

from celery import shared_task

from .sequences import scheduler, sending


def _parse(now: str | None) -> datetime | None:
    return datetime.fromisoformat(now) if now else None


@shared_task(acks_late=True)
def drip_schedule(now: str | None = None) -> dict:
    """Every minute (beat): claim due sends and queue them. ``now`` (ISO 8601) moves the
    clock for simulations and tests; production passes nothing."""
    result = scheduler.drip_schedule_due(now=_parse(now))
    return {k: v for k, v in result.__dict__.items() if k != "batches"}


@shared_task(acks_late=True)
def drip_send_batch(
    delivery_ids: list[int],
    token: str,
    now: str | None = None,
    enrolments: list[list[int]] | None = None,
) -> dict:
    """Send one claimed batch: existing deliveries claimed again (``delivery_ids``), or
    claimed enrolments as [enrolment id, step id] pairs whose delivery rows this task
    writes. No Celery retries: each delivery row carries its own retry time and attempt
    count, and a repeated task finds its rows already written or moved on."""
    result = sending.deliveries_send(
        delivery_ids=delivery_ids,
        token=token,
        now=_parse(now),
        enrolments=[(e, s) for e, s in enrolments or ()],
    )
    return {k: v for k, v in result.__dict__.items() if k != "errors"} | {
        "errors": result.errors[:5]
    }
