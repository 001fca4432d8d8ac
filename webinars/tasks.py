from datetime import datetime

from celery import shared_task

from . import services


@shared_task(acks_late=True)
def webinar_reminders_send(now: str | None = None) -> dict:
    """Every minute (beat): send the reminders that are due. ``now`` (ISO 8601) moves the
    clock for simulations and tests; production passes nothing."""
    run = services.reminders_send_due(now=datetime.fromisoformat(now) if now else None)
    return dict(run.__dict__)
