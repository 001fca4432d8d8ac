"""The Celery application. Tasks subclass DjangoTask, so `task.delay_on_commit()` queues
only once the surrounding transaction commits (a rolled-back write queues nothing)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

# core.celery_task.OutboxTask: DjangoTask whose on-commit queueing logs a broker outage
# instead of failing the committed request (a beat sweep re-queues from the stored rows).
app = Celery("lodestone", task_cls="core.celery_task:OutboxTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _ensure_filesystem_broker_folders() -> None:
    # The demo's folder broker: publishing into a missing folder would lose the message.
    from pathlib import Path

    from django.conf import settings

    if not settings.configured or not str(settings.CELERY_BROKER_URL).startswith("filesystem"):
        return
    for folder in settings.CELERY_BROKER_TRANSPORT_OPTIONS.values():
        if isinstance(folder, str):
            Path(folder).mkdir(parents=True, exist_ok=True)


app.on_after_configure.connect(
    lambda sender, **kwargs: _ensure_filesystem_broker_folders(), weak=False
)
