"""The scheduler: find due sends with set-based queries, claim them, hand them to workers.

Run every minute by beat (funnels.tasks_sequences.drip_schedule); any number may run at
once. Two kinds of work:

1. Due enrolments. One statement per batch (PostgreSQL) selects active enrolments whose
   ``next_send_at`` has passed through the partial index ``funnels_enrolment_due``, locks
   them with FOR UPDATE SKIP LOCKED (a concurrent scheduler skips them instead of
   waiting) and pushes their ``next_send_at`` forward by the claim timeout. That is the
   whole claim: the (enrolment, step) pairs go to the send tasks, and the worker writes
   the queued delivery rows itself (sending.py) — ON CONFLICT DO NOTHING against the
   unique constraint, so a repeated claim or a duplicate task never makes a second
   delivery. If the worker dies, the enrolment is due again when the timeout ends.
2. Pending deliveries. Broadcast rows whose window has opened, rows a sender deferred
   (window, rate limit, SMTP trouble) and claims older than the timeout (a worker that
   died) are claimed the same way and queued again.

The claims go to ``drip_send_batch`` tasks after the claim commits.

The claim's commit does not wait for the disk (synchronous_commit off, for that
transaction only). If the database crashed right after it, the claim would be gone and
the enrolments due again: claimed a second time, their send tasks meet the delivery row
the first task wrote, so nothing goes out twice.
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
# Bigger batches mean fewer commits; 5,000 rows stay locked for a few tens of milliseconds.
BATCH_SIZE = 5000
TASK_SIZE = 100
MAX_BATCHES = 500

EnrolmentClaim = tuple[int, int]  # (enrolment id, step id)


@dataclass
class ClaimedBatch:
    """What one send task gets: a claim token and either the (enrolment, step) pairs
    whose deliveries it writes, or the ids of existing deliveries claimed again."""

    token: str
    delivery_ids: list[int] = field(default_factory=list)
    enrolments: list[EnrolmentClaim] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.delivery_ids) + len(self.enrolments)


@dataclass
class ScheduleResult:
    claimed: int = 0
    deliveries: int = 0
    requeued: int = 0
    tasks: int = 0
    broadcasts_started: int = 0
    # Filled only with dispatch=False: the claimed batches, for the caller to send.
    batches: list[ClaimedBatch] = field(default_factory=list)


# The claim writes nothing but the enrolment's own row: the delivery rows are the send
# task's (see the module docstring). ORDER BY the partial index keeps the scan cheap, and
# ``= ANY(ARRAY(...))`` makes PostgreSQL run the locking subquery once.
CLAIM_ENROLMENTS_SQL = """
WITH due AS (
    SELECT id FROM funnels_enrolment
    WHERE status = 'active' AND next_send_at <= %(now)s AND next_step_id IS NOT NULL
    ORDER BY next_send_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE funnels_enrolment AS e
SET next_send_at = %(until)s, claimed_at = %(now)s
WHERE e.id = ANY(ARRAY(SELECT id FROM due))
RETURNING e.id, e.next_step_id
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


def _claim_enrolments_pg(*, now: datetime, limit: int) -> list[EnrolmentClaim]:
    with connection.cursor() as cursor:
        # Only this transaction's commit skips the wait for the disk (module docstring).
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(
            CLAIM_ENROLMENTS_SQL, {"now": now, "until": now + CLAIM_TIMEOUT, "limit": limit}
        )
        return sorted(cursor.fetchall())


def _claim_enrolments_orm(*, now: datetime, limit: int) -> list[EnrolmentClaim]:
    # The same claim for databases without UPDATE … RETURNING over a locking subquery
    # (SQLite in the demo, where a write transaction already excludes every other writer).
    rows = list(
        Enrolment.objects.select_for_update(skip_locked=True)
        .filter(status=Enrolment.Status.ACTIVE, next_send_at__lte=now, next_step__isnull=False)
        .order_by("next_send_at")
        .values_list("pk", "next_step_id")[:limit]
    )
    if rows:
        Enrolment.objects.filter(pk__in=[r[0] for r in rows]).update(
            next_send_at=now + CLAIM_TIMEOUT, claimed_at=now
        )
    return sorted(rows)


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


def claim_due_enrolments(*, now: datetime, limit: int) -> ClaimedBatch:
    """Claim up to ``limit`` due enrolments (inside the caller's transaction); the batch
    holds a fresh claim token and the (enrolment, step) pairs claimed."""
    claim = _claim_enrolments_pg if _use_sql() else _claim_enrolments_orm
    return ClaimedBatch(token=str(uuid.uuid4()), enrolments=claim(now=now, limit=limit))


def claim_pending_deliveries(*, now: datetime, limit: int) -> ClaimedBatch:
    token = uuid.uuid4()
    claim = _claim_pending_pg if _use_sql() else _claim_pending_orm
    return ClaimedBatch(token=str(token), delivery_ids=claim(now=now, limit=limit, token=token))


def in_flight(now: datetime) -> int:
    """Sends handed to workers and not finished: what the rate limits still owe.

    A claimed enrolment keeps ``claimed_at`` until its email is settled and sits at most
    the claim timeout ahead, so the count walks the due index over that stretch only;
    claimed broadcast deliveries are counted through their own partial index."""
    enrolments = Enrolment.objects.filter(
        status=Enrolment.Status.ACTIVE,
        next_send_at__gt=now,
        next_send_at__lte=now + CLAIM_TIMEOUT,
        claimed_at__isnull=False,
    ).count()
    broadcasts = DripDelivery.objects.filter(
        status__in=DripDelivery.PENDING, claimed_at__isnull=False, enrolment__isnull=True
    ).count()
    return enrolments + broadcasts


def _dispatch(batch: ClaimedBatch, now: datetime | None) -> int:
    from funnels.tasks_sequences import drip_send_batch

    now_arg = now.isoformat() if now is not None else None
    tasks = 0
    for i in range(0, len(batch.delivery_ids), TASK_SIZE):
        chunk = batch.delivery_ids[i : i + TASK_SIZE]
        transaction.on_commit(
            lambda chunk=chunk: drip_send_batch.delay(chunk, batch.token, now_arg)
        )
        tasks += 1
    for i in range(0, len(batch.enrolments), TASK_SIZE):
        pairs = [list(pair) for pair in batch.enrolments[i : i + TASK_SIZE]]
        transaction.on_commit(
            lambda pairs=pairs: drip_send_batch.delay([], batch.token, now_arg, enrolments=pairs)
        )
        tasks += 1
    return tasks


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
        budget = max(0, limits.allowance(now) - in_flight(now))

    def room() -> int:
        return batch_size if budget is None else min(batch_size, budget - result.deliveries)

    def hand_over(batch: ClaimedBatch) -> None:
        if batch and dispatch:
            result.tasks += _dispatch(batch, explicit_now)
        elif batch:
            result.batches.append(batch)

    for _ in range(max_batches):
        limit = room()
        if limit <= 0:
            break
        with transaction.atomic():
            batch = claim_due_enrolments(now=now, limit=limit)
            result.claimed += len(batch.enrolments)
            result.deliveries += len(batch.enrolments)
            hand_over(batch)
        if len(batch) < limit:
            break
    for _ in range(max_batches):
        limit = room()
        if limit <= 0:
            break
        with transaction.atomic():
            batch = claim_pending_deliveries(now=now, limit=limit)
            result.requeued += len(batch.delivery_ids)
            result.deliveries += len(batch.delivery_ids)
            hand_over(batch)
        if len(batch) < limit:
            break
    if result.deliveries:
        logger.info(
            "drip scheduler: %s enrolments claimed, %s sends queued (%s re-queued)",
            result.claimed,
            result.deliveries,
            result.requeued,
        )
    return result
