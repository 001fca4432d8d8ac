"""The Celery application. Tasks subclass DjangoTask, so `task.delay_on_commit()` queues
only once the surrounding transaction commits (a rolled-back write queues nothing)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("lodestone", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
