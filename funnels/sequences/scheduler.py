"""The scheduler: find due sends with set-based queries, claim them, hand them to workers.

Run every minute by beat (funnels.tasks_sequences.drip_schedule); any number may run at
once. Two kinds of work:

1. Due enrolments. One statement per batch (PostgreSQL) selects active enrolments whose
   ``next_send_at`` has passed through the partial index ``funnels_enrolment_due``, locks
   them with FOR UPDATE SKIP LOCKED (a concurrent scheduler skips them instead of
   waiting), pushes their ``next_send_at`` forward by the claim timeout, and inserts one
   queued delivery per (enrolment, step) — ON CONFLICT DO NOTHING against the unique
   constraint, so a repeated claim never makes a second delivery. If the worker dies, the
   enrolment is due again when the timeout ends.
2. Pending deliveries. Broadcast rows whose window has opened, rows a sender deferred
   (window, rate limit, SMTP trouble) and claims older than the timeout (a worker that
   died) are claimed the same way and queued again.

Claimed delivery ids go to ``drip_send_batch`` tasks after the claim commits.
"""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from funnels.models import DripDelivery, Enrolment

from . import limits
from .services import broadcasts_start_due

logger = logging.getLogger(__name__)

CLAIM_TIMEOUT = timedelta(minutes=15)
BATCH_SIZE = 1000
TASK_SIZE = 100
MAX_BATCHES = 500


@dataclass
class ScheduleResult:
    claimed: int = 0
    deliveries: int = 0
    requeued: int = 0
    tasks: int = 0
    broadcasts_started: int = 0
    # Filled only with dispatch=False: (claim token, delivery ids) for the caller to send.
    batches: list = field(default_factory=list)


CLAIM_ENROLMENTS_SQL = """
WITH due AS (
    SELECT id FROM funnels_enrolment
    WHERE status = 'active' AND next_send_at <= %(now)s AND next_step_id IS NOT NULL
    ORDER BY next_send_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE funnels_enrolment AS e
    SET next_send_at = %(until)s, claimed_at = %(now)s
    WHERE e.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING e.id, e.subscriber_id, e.next_step_id
), inserted AS (
    INSERT INTO funnels_dripdelivery (
        enrolment_id, step_id, subscriber_id, status, due_at, claimed_at, claim_token,
        attempts, subject, message_id, note, clicks, created_at
    )
    SELECT id, next_step_id, subscriber_id, 'queued', %(now)s, %(now)s, %(token)s,
           0, '', '', '', 0, %(now)s
    FROM claimed
    ON CONFLICT (enrolment_id, step_id)
        WHERE enrolment_id IS NOT NULL AND step_id IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM claimed), ARRAY(SELECT id FROM inserted ORDER BY id)
"""

CLAIM_PENDING_SQL = """
WITH waiting AS (
    SELECT id FROM funnels_dripdelivery
    WHERE status = 'queued' AND claimed_at IS NULL AND due_at <= %(now)s
    ORDER BY due_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), abandoned AS (
    SELECT id FROM funnels_dripdelivery
    WHERE status IN ('queued', 'sending') AND claimed_at IS NOT NULL AND claimed_at < %(stale)s
    ORDER BY claimed_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE funnels_dripdelivery AS d
SET status = 'queued', claimed_at = %(now)s, claim_token = %(token)s
WHERE d.id = ANY(ARRAY(SELECT id FROM waiting UNION SELECT id FROM abandoned))
RETURNING d.id
"""


def _claim_enrolments_pg(*, now: datetime, limit: int, token: uuid.UUID) -> tuple[int, list[int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            CLAIM_ENROLMENTS_SQL,
            {"now": now, "until": now + CLAIM_TIMEOUT, "limit": limit, "token": token},
        )
        claimed, ids = cursor.fetchone()
    return claimed, list(ids)


def _claim_enrolments_orm(*, now: datetime, limit: int, token: uuid.UUID) -> tuple[int, list[int]]:
    # The same claim for databases without data-modifying CTEs (SQLite in the demo, where
    # a write transaction already excludes every other writer).
    rows = list(
        Enrolment.objects.select_for_update(skip_locked=True)
        .filter(status=Enrolment.Status.ACTIVE, next_send_at__lte=now, next_step__isnull=False)
        .order_by("next_send_at")
        .values_list("pk", "subscriber_id", "next_step_id")[:limit]
    )
    if not rows:
        return 0, []
    Enrolment.objects.filter(pk__in=[r[0] for r in rows]).update(
        next_send_at=now + CLAIM_TIMEOUT, claimed_at=now
    )
    DripDelivery.objects.bulk_create(
        [
            DripDelivery(
                enrolment_id=pk,
                step_id=step_id,
                subscriber_id=subscriber_id,
                due_at=now,
                claimed_at=now,
                claim_token=token,
                created_at=now,
            )
            for pk, subscriber_id, step_id in rows
        ],
        ignore_conflicts=True,
    )
    ids = list(
        DripDelivery.objects.filter(claim_token=token, enrolment_id__in=[r[0] for r in rows])
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return len(rows), ids


def _claim_pending_pg(*, now: datetime, limit: int, token: uuid.UUID) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            CLAIM_PENDING_SQL,
            {"now": now, "stale": now - CLAIM_TIMEOUT, "limit": limit, "token": token},
        )
        return sorted(row[0] for row in cursor.fetchall())


def _claim_pending_orm(*, now: datetime, limit: int, token: uuid.UUID) -> list[int]:
    waiting = list(
        DripDelivery.objects.select_for_update(skip_locked=True)
        .filter(status=DripDelivery.Status.QUEUED, claimed_at__isnull=True, due_at__lte=now)
        .order_by("due_at")
        .values_list("pk", flat=True)[:limit]
    )
    abandoned = list(
        DripDelivery.objects.select_for_update(skip_locked=True)
        .filter(
            status__in=DripDelivery.PENDING,
            claimed_at__isnull=False,
            claimed_at__lt=now - CLAIM_TIMEOUT,
        )
        .order_by("claimed_at")
        .values_list("pk", flat=True)[:limit]
    )
    ids = sorted(set(waiting) | set(abandoned))
    DripDelivery.objects.filter(pk__in=ids).update(
        status=DripDelivery.Status.QUEUED, claimed_at=now, claim_token=token
    )
    return ids


def _use_sql() -> bool:
    return connection.vendor == "postgresql"


def claim_due_enrolments(*, now: datetime, limit: int) -> tuple[uuid.UUID, int, list[int]]:
    """Claim up to ``limit`` due enrolments; returns the claim token, how many were
    claimed, and the ids of the deliveries made for them."""
    token = uuid.uuid4()
    claim = _claim_enrolments_pg if _use_sql() else _claim_enrolments_orm
    claimed, ids = claim(now=now, limit=limit, token=token)
    return token, claimed, ids


def claim_pending_deliveries(*, now: datetime, limit: int) -> tuple[uuid.UUID, list[int]]:
    token = uuid.uuid4()
    claim = _claim_pending_pg if _use_sql() else _claim_pending_orm
    return token, claim(now=now, limit=limit, token=token)


def in_flight() -> int:
    """Deliveries handed to workers and not finished: what the rate limits still owe."""
    return DripDelivery.objects.filter(
        status__in=DripDelivery.PENDING, claimed_at__isnull=False
    ).count()


def _dispatch(ids: list[int], token: uuid.UUID, now: datetime | None) -> int:
    from funnels.tasks_sequences import drip_send_batch

    chunks = [ids[i : i + TASK_SIZE] for i in range(0, len(ids), TASK_SIZE)]
    now_arg = now.isoformat() if now is not None else None
    for chunk in chunks:
        transaction.on_commit(lambda chunk=chunk: drip_send_batch.delay(chunk, str(token), now_arg))
    return len(chunks)


def drip_schedule_due(
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    max_batches: int = MAX_BATCHES,
    respect_limits: bool = True,
    dispatch: bool = True,
) -> ScheduleResult:
    """Claim what is due at ``now`` and queue it for sending.

    ``now`` is injectable so tests and simulations move time instead of waiting; when
    given, it is passed on to the send tasks too. ``respect_limits`` claims no more than
    the global and warm-up limits allow minus what workers still hold, so a launch-day
    backlog waits in the database rather than in the broker.
    """
    explicit_now = now
    now = now or timezone.now()
    result = ScheduleResult(broadcasts_started=broadcasts_start_due(now=now))
    budget = None
    if respect_limits:
        budget = max(0, limits.allowance(now) - in_flight())

    def room() -> int:
        return batch_size if budget is None else min(batch_size, budget - result.deliveries)

    for _ in range(max_batches):
        if room() <= 0:
            break
        with transaction.atomic():
            token, claimed, ids = claim_due_enrolments(now=now, limit=room())
            result.claimed += claimed
            result.deliveries += len(ids)
            if ids and dispatch:
                result.tasks += _dispatch(ids, token, explicit_now)
            elif ids:
                result.batches.append((str(token), ids))
        if claimed < batch_size:
            break
    for _ in range(max_batches):
        if room() <= 0:
            break
        with transaction.atomic():
            token, ids = claim_pending_deliveries(now=now, limit=room())
            result.requeued += len(ids)
            result.deliveries += len(ids)
            if ids and dispatch:
                result.tasks += _dispatch(ids, token, explicit_now)
            elif ids:
                result.batches.append((str(token), ids))
        if len(ids) < batch_size:
            break
    if result.deliveries:
        logger.info(
            "drip scheduler: %s enrolments claimed, %s deliveries queued (%s re-queued)",
            result.claimed,
            result.deliveries,
            result.requeued,
        )
    return result
