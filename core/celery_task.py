"""The base class of every Lodestone task: Celery's DjangoTask, with on-commit queueing that
cannot break the request that committed.

``task.delay_on_commit()`` runs ``delay()`` after the transaction commits. With the broker
down that ``delay()`` raises, and Django would turn the error into a 500 for a visitor whose
sign-up or order is already stored. Here the failure is logged instead: the stored row (an
outbox email, an unsynced subscriber, a pending offer) is what a beat sweep re-queues once
the broker is back, so nothing is lost and the visitor gets their answer.
"""

import functools
import logging
from collections.abc import Iterable

from celery.contrib.django.task import DjangoTask
from django.db import transaction

logger = logging.getLogger(__name__)


class OutboxTask(DjangoTask):
    def _publish_or_log(self, *args, **kwargs):
        try:
            return self.apply_async(*args, **kwargs)
        except Exception as exc:
            logger.warning(
                "Could not queue %s after commit (%r); the periodic sweep will re-queue it.",
                self.name,
                exc,
            )
            return None

    def delay_or_log(self, *args, **kwargs):
        """``delay()`` from code that already runs after the commit (an on_commit callback):
        a broker outage is logged, and the stored row waits for its sweep."""
        return self._publish_or_log(args, kwargs)

    def requeue(self, ids: Iterable) -> int:
        """The publishing half of every outbox sweep: queue this task once per id of a row
        that was committed but never handled. Stops at the first broker failure (the next
        sweep starts over from the rows) and returns how many were queued.

        Safe to repeat: every outbox task re-reads its row and does nothing twice."""
        queued = 0
        for pk in ids:
            try:
                self.apply_async((pk,))
            except Exception as exc:
                logger.warning(
                    "Sweep: could not queue %s (%r) after %s; the rest waits for the next sweep.",
                    self.name,
                    exc,
                    queued,
                )
                break
            queued += 1
        return queued

    def delay_on_commit(self, *args, **kwargs) -> None:
        transaction.on_commit(functools.partial(self._publish_or_log, args, kwargs))

    def apply_async_on_commit(self, args=None, kwargs=None, **options) -> None:
        transaction.on_commit(functools.partial(self._publish_or_log, args, kwargs, **options))
