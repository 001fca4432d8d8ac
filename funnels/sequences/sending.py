"""Send a claimed batch of deliveries over one SMTP connection.

Why not the core outbox (one OutboundEmail row and one task per email)? At launch volume
that is a stored copy of every HTML body (gigabytes for a million sends), a broker message
and a fresh SMTP connection per email. Here the delivery row is the ledger (small, unique
per enrolment and step), the email is rendered from the step when it is sent, and one task
sends up to a hundred emails over one reused connection. One-off emails (a creator's test
send) still go through the outbox.

A batch of claimed enrolments starts by writing its queued delivery rows, one INSERT …
ON CONFLICT DO NOTHING for the batch (the scheduler only claims, see scheduler.py). A pair
whose row already exists — a duplicate task, or a row another claim wrote — is left to
whoever owns that row.

Per email, right before it goes out: the subscriber is still confirmed and not
suppressed, the enrolment is still active and still at this step, the buyer does not own
what the sequence sells, the step's conditions hold, the local time is inside the window,
and the rate limits allow it. Then the batch's rows move "queued" → "sending" in one
commit — for each row only one worker can make that move — and after the server's reply
each moves to "sent" together with the enrolment's next step, one statement per email,
sent to the database before the next email starts and answered while it goes out
(_SentRecorder). A worker that dies leaves at most the one row it was sending in
"sending"; the scheduler re-queues it after the claim timeout and it goes out again with
the same Message-ID (the SMTP reply may have been lost, RFC 5321 §6.3).

Those per-email "sent" commits do not wait for the disk (synchronous_commit off for the
sending loop only): they are visible to every other session at once and survive the
worker dying, and only a crash of the database server itself could lose the last fraction
of a second of them — the emails concerned would go out again after the claim timeout,
as after a lost SMTP reply. Waiting for the disk instead costs one flush per email:
0.4 ms on this project's machines when quiet, 6-7 ms when busy — more than all the rest
of an email's work (BENCHMARKS.md).
"""

import hashlib
import logging
import re
import select
import smtplib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from urllib.parse import quote

from anymail.exceptions import AnymailRequestsAPIError
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from django.db import DatabaseError, IntegrityError, transaction
from django.db import connection as db
from django.db.models import F
from django.utils import timezone
from psycopg import pq

from core.services import brand_settings, default_from_email
from funnels.models import (
    Broadcast,
    DripDelivery,
    Enrolment,
    Sequence,
    SequenceStep,
    Subscriber,
    Suppression,
)
from funnels.services import email_hash

from . import limits, mime, rendering, selectors, tracking
from .services import retry_delay, step_due, subscriber_zone
from .windows import Window, in_window, next_opening

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
RENDER_RETRY = timedelta(hours=1)

# The claimed (enrolment, step) pairs become queued deliveries of this claim. Joined with
# the enrolment (for its subscriber) and the step, so a pair whose enrolment or step was
# deleted since the claim is dropped instead of failing the batch.
MATERIALISE_SQL = """
INSERT INTO funnels_dripdelivery (
    enrolment_id, step_id, subscriber_id, status, due_at, claimed_at, claim_token,
    attempts, subject, message_id, note, clicks, created_at
)
SELECT e.id, st.id, e.subscriber_id, 'queued', %(now)s, %(now)s, %(token)s,
       0, '', '', '', 0, %(now)s
FROM unnest(%(enrolments)s::bigint[], %(steps)s::bigint[]) AS c(enrolment_id, step_id)
JOIN funnels_enrolment AS e ON e.id = c.enrolment_id
JOIN funnels_sequencestep AS st ON st.id = c.step_id
ORDER BY e.id
ON CONFLICT (enrolment_id, step_id)
    WHERE enrolment_id IS NOT NULL AND step_id IS NOT NULL DO NOTHING
"""
# Only the target row's own columns decide who wins (status, claim token): PostgreSQL
# re-checks those on a row another worker changed meanwhile, so two takers never both win.
TAKE_SQL = """
UPDATE funnels_dripdelivery AS d
SET status = 'sending', attempts = d.attempts + 1
WHERE d.id = ANY(%(ids)s) AND d.status = 'queued' AND d.claim_token = %(token)s
  AND EXISTS (
      SELECT 1 FROM funnels_subscriber AS s
      WHERE s.id = d.subscriber_id AND s.status = 'confirmed'
  )
  AND (d.enrolment_id IS NULL OR EXISTS (
      SELECT 1 FROM funnels_enrolment AS e
      WHERE e.id = d.enrolment_id AND e.status = 'active' AND e.next_step_id = d.step_id
  ))
RETURNING d.id
"""
MARK_SENT_SQL = """
UPDATE funnels_dripdelivery
SET status = 'sent', sent_at = %(now)s, subject = %(subject)s, message_id = %(message_id)s,
    note = '', claimed_at = NULL
WHERE id = %(id)s AND status = 'sending'
"""
# Constant text only (no input is formatted in): the statement above, as a CTE.
MARK_SENT_AND_ADVANCE_SQL = f"""
WITH sent AS ({MARK_SENT_SQL} RETURNING id)
UPDATE funnels_enrolment
SET steps_done = steps_done + 1, claimed_at = NULL, last_step_id = %(step)s,
    last_sent_at = %(now)s, next_step_id = %(next_step)s, next_send_at = %(next_send_at)s,
    finished_at = %(finished_at)s,
    status = CASE WHEN %(next_step)s::bigint IS NULL THEN 'completed' ELSE status END
WHERE id = %(enrolment)s AND status IN ('active', 'paused') AND next_step_id = %(step)s
  AND EXISTS (SELECT 1 FROM sent)
"""  # noqa: S608


@dataclass
class BatchResult:
    sent: int = 0
    skipped: int = 0
    cancelled: int = 0
    deferred: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class _Abort(Exception):
    """The connection is unusable: stop the batch and give the rest back."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, AnymailRequestsAPIError):
        # The email provider's API (Postmark through anymail): no answer, throttled, or
        # its own trouble is worth another try; a refusal of the message is not.
        status = exc.status_code
        return status is None or status == 429 or status >= 500
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _msg in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, smtplib.SMTPServerDisconnected | OSError)


def breaks_connection(exc: BaseException) -> bool:
    # SMTPException subclasses OSError; a refusal leaves the connection usable (smtplib
    # resets the transaction), a disconnect or a socket error does not. The provider's API
    # refusing one message says nothing about the next; not reaching it at all does.
    if isinstance(exc, AnymailRequestsAPIError):
        return exc.status_code is None
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def _sender_domain() -> str:
    address = default_from_email()
    return address.rsplit("@", 1)[-1].strip(" >") or "localhost"


def message_id_for(delivery_id: int) -> str:
    # The same id on every attempt: a resend after a lost reply is recognisably the same
    # email to the receiving side.
    salt = hashlib.sha256(f"{settings.SECRET_KEY}:{delivery_id}".encode()).hexdigest()[:12]
    return f"<drip.{delivery_id}.{salt}@{_sender_domain()}>"


def unsubscribe_mailto(unsubscribe_link: str) -> str:
    address = getattr(settings, "DRIP_UNSUBSCRIBE_MAILTO", "") or f"unsubscribe@{_sender_domain()}"
    token = unsubscribe_link.rstrip("/").rsplit("/", 1)[-1]
    return f"mailto:{address}?subject={quote('unsubscribe ' + token)}"


def list_headers(unsubscribe_link: str) -> dict[str, str]:
    return {
        "List-Unsubscribe": f"<{unsubscribe_link}>, <{unsubscribe_mailto(unsubscribe_link)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def _materialise(enrolments: list[tuple[int, int]], token: str, now: datetime) -> None:
    """Write the queued delivery rows of claimed (enrolment, step) pairs, once each."""
    if db.vendor == "postgresql":
        params = {
            "enrolments": [e for e, _s in enrolments],
            "steps": [s for _e, s in enrolments],
            "token": token,
            "now": now,
        }
        try:
            with transaction.atomic(), db.cursor() as cursor:
                cursor.execute(MATERIALISE_SQL, params)
        except IntegrityError:
            # An enrolment or step deleted between the join and the commit (the foreign
            # keys are checked at commit): the join leaves it out the second time.
            with db.cursor() as cursor:
                cursor.execute(MATERIALISE_SQL, params)
        return
    pairs = dict(enrolments)
    subscribers = dict(Enrolment.objects.filter(pk__in=pairs).values_list("pk", "subscriber_id"))
    steps = set(SequenceStep.objects.filter(pk__in=pairs.values()).values_list("pk", flat=True))
    DripDelivery.objects.bulk_create(
        [
            DripDelivery(
                enrolment_id=enrolment_id,
                step_id=step_id,
                subscriber_id=subscribers[enrolment_id],
                due_at=now,
                claimed_at=now,
                claim_token=token,
                created_at=now,
            )
            for enrolment_id, step_id in sorted(pairs.items())
            if enrolment_id in subscribers and step_id in steps
        ],
        ignore_conflicts=True,
    )


# What the checks, the rendering and the bookkeeping read: a row, its subscriber and its
# enrolment without the columns nobody here looks at (the timestamps cost the most to load).
ROW_FIELDS = (
    "enrolment",
    "step",
    "broadcast",
    "subscriber",
    "status",
    "attempts",
    "claim_token",
    "subscriber__email",
    "subscriber__name",
    "subscriber__time_zone",
    "subscriber__status",
    "enrolment__sequence",
    "enrolment__subscriber",
    "enrolment__status",
    "enrolment__next_step",
    "enrolment__enrolled_at",
)


def _with_sources(rows: list[DripDelivery]) -> list[DripDelivery]:
    """Attach each row's step, sequence and broadcast, loaded once per batch rather than
    joined into every row (a batch has one step or a few)."""
    steps = SequenceStep.objects.in_bulk({row.step_id for row in rows if row.step_id})
    sequences = Sequence.objects.in_bulk(
        {row.enrolment.sequence_id for row in rows if row.enrolment_id}
    )
    broadcasts = Broadcast.objects.in_bulk({row.broadcast_id for row in rows if row.broadcast_id})
    kept = []
    for row in rows:
        if row.step_id:
            # None when the step was deleted just now: the checks cancel such a row.
            row.step = steps.get(row.step_id)
        if row.enrolment_id:
            if row.enrolment.sequence_id not in sequences:
                continue  # the sequence is being deleted, and its deliveries with it
            row.enrolment.sequence = sequences[row.enrolment.sequence_id]
        if row.broadcast_id:
            if row.broadcast_id not in broadcasts:
                continue  # likewise the broadcast
            row.broadcast = broadcasts[row.broadcast_id]
        kept.append(row)
    return kept


class _Batch:
    def __init__(
        self,
        *,
        delivery_ids: list[int],
        enrolments: list[tuple[int, int]],
        token: str,
        now: datetime | None,
        connection,
    ):
        self.token = token
        self.fixed_now = now
        self.connection = connection
        self.smtp = None
        self.result = BatchResult()
        rows = DripDelivery.objects.filter(claim_token=token, status=DripDelivery.Status.QUEUED)
        if enrolments:
            _materialise(enrolments, token, self.now())
            # Rows this claim wrote; a pair whose row existed already is someone else's.
            rows = rows.filter(enrolment_id__in=[e for e, _s in enrolments])
            if delivery_ids:
                rows = rows | DripDelivery.objects.filter(
                    pk__in=delivery_ids, claim_token=token, status=DripDelivery.Status.QUEUED
                )
        else:
            rows = rows.filter(pk__in=delivery_ids)
        self.rows = _with_sources(
            list(rows.select_related("subscriber", "enrolment").only(*ROW_FIELDS).order_by("pk"))
        )
        self.brand = brand_settings()
        self.from_email = default_from_email()
        self.layout = None
        self.steps: dict[int, list[SequenceStep]] = {}

    def now(self) -> datetime:
        return self.fixed_now or timezone.now()

    # --- Loading what the checks need, once per batch -------------------------------------

    def prepare(self) -> None:
        subscribers = {row.subscriber_id: row.subscriber for row in self.rows}
        hashes = {sid: email_hash(s.email.lower()) for sid, s in subscribers.items()}
        suppressed = set(
            Suppression.objects.filter(email_hash__in=hashes.values()).values_list(
                "email_hash", flat=True
            )
        )
        self.suppressed = {sid for sid, h in hashes.items() if h in suppressed}
        sequence_ids = {row.enrolment.sequence_id for row in self.rows if row.enrolment_id}
        self.targets = selectors.target_product_ids(sequence_ids)
        products = set().union(*self.targets.values()) if self.targets else set()
        products |= {row.step.skip_if_owns_id for row in self.rows if row.step_id} - {None}
        self.owned = _owned_products([s.email for s in subscribers.values()], products)
        needs_tags = any(row.step_id and row.step.skip_if_tags for row in self.rows)
        self.tags = selectors.tags_of(subscribers) if needs_tags else {}
        for sequence_id in sequence_ids:
            self.steps[sequence_id] = selectors.ordered_steps(sequence_id)

    def compiled_for(self, row) -> rendering.CompiledEmail:
        return rendering.compiled(row.step if row.step_id else row.broadcast)

    # --- Outcomes ---------------------------------------------------------------------------

    def _finish(self, row, *, status: str, note: str = "", was: str = "queued") -> bool:
        # ``was``: a row this worker has not taken is settled only while still "queued", so
        # a duplicate task never touches a row another worker is sending.
        updated = DripDelivery.objects.filter(pk=row.pk, status=was, claim_token=self.token).update(
            status=status, note=note[:2000], claimed_at=None
        )
        return bool(updated)

    def cancel(self, row, note: str, *, exit_reason: str = "") -> None:
        with transaction.atomic():
            if self._finish(row, status=DripDelivery.Status.CANCELLED, note=note):
                self.result.cancelled += 1
            if exit_reason and row.enrolment_id:
                Enrolment.objects.filter(pk=row.enrolment_id, status__in=Enrolment.OPEN).update(
                    status=Enrolment.Status.EXITED,
                    exit_reason=exit_reason,
                    finished_at=self.now(),
                    next_send_at=None,
                )

    def skip(self, row, note: str) -> None:
        with transaction.atomic():
            if self._finish(row, status=DripDelivery.Status.SKIPPED, note=note):
                self.result.skipped += 1
                self.advance(row, sent=False)

    def defer(self, row, until: datetime, note: str = "", *, was: str = "queued") -> None:
        """Back to the waiting queue until ``until``; the scheduler picks it up then."""
        with transaction.atomic():
            updated = DripDelivery.objects.filter(
                pk=row.pk, status=was, claim_token=self.token
            ).update(
                status=DripDelivery.Status.QUEUED,
                due_at=until,
                claimed_at=None,
                claim_token=None,
                note=note[:2000],
            )
            if updated and row.enrolment_id:
                Enrolment.objects.filter(
                    pk=row.enrolment_id, status=Enrolment.Status.ACTIVE, next_step_id=row.step_id
                ).update(next_send_at=until, claimed_at=None)
        if updated:
            self.result.deferred += 1

    def fail_or_retry(self, row, exc: BaseException, attempts: int) -> None:
        note = f"{exc.__class__.__name__}: {exc}"
        sending = DripDelivery.Status.SENDING
        if is_transient(exc) and attempts < MAX_ATTEMPTS:
            self.defer(
                row, self.now() + retry_delay(attempts), note=f"Will retry: {note}", was=sending
            )
            return
        with transaction.atomic():
            if self._finish(row, status=DripDelivery.Status.FAILED, note=note, was=sending):
                self.result.failed += 1
                self.advance(row, sent=False)
        self.result.errors.append(note)

    def next_values(self, row) -> dict:
        """Where the enrolment goes after this step: its next step and when, or done."""
        enrolment = row.enrolment
        sequence = enrolment.sequence
        now = self.now()
        steps = self.steps.get(sequence.pk) or selectors.ordered_steps(sequence.pk)
        following = selectors.step_after(steps, row.step) if row.step_id else None
        if following is None:
            return {"next_step": None, "next_send_at": None, "finished_at": now}
        return {
            "next_step": following,
            "next_send_at": step_due(
                step=following,
                enrolment=enrolment,
                after=now,
                zone=subscriber_zone(row.subscriber),
                window=Window.of(sequence),
            ),
            "finished_at": None,
        }

    def advance(self, row, *, sent: bool) -> None:
        """Point the enrolment at its next step (or finish it). Only if it is still at
        this step: a concurrent exit or a repeated task changes nothing."""
        if not row.enrolment_id:
            return
        values = self.next_values(row)
        changes = {"steps_done": F("steps_done") + 1, "claimed_at": None}
        if sent:
            changes.update(last_step_id=row.step_id, last_sent_at=self.now())
        changes.update(next_step=values["next_step"], next_send_at=values["next_send_at"])
        if values["finished_at"] is not None:
            changes.update(status=Enrolment.Status.COMPLETED, finished_at=values["finished_at"])
        Enrolment.objects.filter(
            pk=row.enrolment_id, status__in=Enrolment.OPEN, next_step_id=row.step_id
        ).update(**changes)

    # --- The checks -----------------------------------------------------------------------

    def check(self, row) -> bool:
        """Settle a row that must not be sent now; True when it may go out."""
        subscriber = row.subscriber
        if subscriber.status != Subscriber.Status.CONFIRMED or row.subscriber_id in self.suppressed:
            reason = {
                Subscriber.Status.BOUNCED: Enrolment.ExitReason.BOUNCED,
                Subscriber.Status.COMPLAINED: Enrolment.ExitReason.COMPLAINED,
            }.get(subscriber.status, Enrolment.ExitReason.UNSUBSCRIBED)
            self.cancel(
                row, f"Not mailable ({subscriber.get_status_display()}).", exit_reason=reason
            )
            return False
        if row.broadcast_id:
            if row.broadcast.status == Broadcast.Status.CANCELLED:
                self.cancel(row, "Broadcast cancelled.")
                return False
            window = Window.of(row.broadcast)
        else:
            enrolment = row.enrolment
            if enrolment.status == Enrolment.Status.PAUSED:
                DripDelivery.objects.filter(
                    pk=row.pk, status=DripDelivery.Status.QUEUED, claim_token=self.token
                ).delete()
                return False
            if enrolment.status != Enrolment.Status.ACTIVE:
                self.cancel(row, f"Enrolment {enrolment.get_status_display().lower()}.")
                return False
            if row.step_id is None or enrolment.next_step_id != row.step_id:
                self.cancel(row, "The step is no longer next for this subscriber.")
                return False
            targets = self.targets.get(enrolment.sequence_id, set())
            owned = self.owned.get(subscriber.email.lower(), set())
            if targets & owned:
                self.cancel(
                    row,
                    "Bought what the sequence sells.",
                    exit_reason=Enrolment.ExitReason.PURCHASED,
                )
                return False
            step = row.step
            skip_tags = set(selectors.tag_list(step.skip_if_tags.lower()))
            if skip_tags & self.tags.get(row.subscriber_id, set()):
                self.skip(row, "Has a tag this step skips.")
                return False
            if step.skip_if_owns_id and step.skip_if_owns_id in owned:
                self.skip(row, "Owns the product this step skips for.")
                return False
            window = Window.of(enrolment.sequence)
        zone = subscriber_zone(subscriber)
        now = self.now()
        if not in_window(now, zone, window):
            self.defer(row, next_opening(now, zone, window), note="Waiting for the send window.")
            return False
        return True

    def take(self, row) -> bool:
        """Move the row to "sending" — only one worker can — and check, in the same
        transaction, that the subscriber is still confirmed and the enrolment still at this
        step: an unsubscribe that landed after this batch was loaded still stops the email.

        The conditional UPDATE filters on the delivery table alone on purpose: Django turns
        a filter across a join into ``WHERE id IN (subquery)``, and PostgreSQL does not
        re-run that subquery when it re-checks a row another worker just changed — two
        workers could then both win."""
        with transaction.atomic():
            taken = DripDelivery.objects.filter(
                pk=row.pk, status=DripDelivery.Status.QUEUED, claim_token=self.token
            ).update(status=DripDelivery.Status.SENDING, attempts=F("attempts") + 1)
            if not taken:
                return False
            still = Subscriber.objects.filter(
                pk=row.subscriber_id, status=Subscriber.Status.CONFIRMED
            ).exists()
            if still and row.enrolment_id:
                still = Enrolment.objects.filter(
                    pk=row.enrolment_id, status=Enrolment.Status.ACTIVE, next_step_id=row.step_id
                ).exists()
            if not still:
                transaction.set_rollback(True)
            return still

    def settle_changed(self, row) -> None:
        """The row could not move to "sending": another worker has it, it was withdrawn, or
        the subscriber or enrolment changed since the batch was loaded. Settle the last."""
        fresh = (
            DripDelivery.objects.filter(
                pk=row.pk, status=DripDelivery.Status.QUEUED, claim_token=self.token
            )
            .select_related("subscriber", "enrolment__sequence", "step", "broadcast")
            .first()
        )
        if fresh is not None and not self.check(fresh):
            return
        if fresh is not None:  # nothing wrong after all (a lost race); leave it for a retry
            self.defer(fresh, self.now(), note="Changed while queued; sent on the next pass.")

    # --- Sending ------------------------------------------------------------------------------

    def build(self, row) -> EmailMultiAlternatives:
        compiled = self.compiled_for(row)
        if self.layout is None:
            self.layout = rendering.Layout.build(brand=self.brand)
        subscriber = row.subscriber
        key = {"s": subscriber.pk, "e": email_hash(subscriber.email)[:16]}
        unsubscribe = tracking.subscriber_link("funnels:unsubscribe", key)
        track_opens = (
            row.broadcast.track_opens if row.broadcast_id else row.enrolment.sequence.track_opens
        )
        message = rendering.render_message(
            compiled,
            layout=self.layout,
            values=rendering.values_for(subscriber, self.brand),
            track=lambda url: tracking.click_url(row.pk, url),
            unsubscribe_url=unsubscribe,
            manage_url=tracking.subscriber_link("funnels:my_data", key),
            pixel_url=tracking.open_url(row.pk) if track_opens else None,
        )
        feedback = f"broadcast-{row.broadcast_id}" if row.broadcast_id else f"step-{row.step_id}"
        mail = EmailMultiAlternatives(
            subject=message.subject,
            body=message.text,
            from_email=self.from_email,
            to=[subscriber.email],
            headers={
                **list_headers(unsubscribe),
                "Message-ID": message_id_for(row.pk),
                "Feedback-ID": f"{feedback}:lodestone",
                "X-PM-Metadata-delivery": str(row.pk),
            },
            connection=self.connection,
        )
        mail.attach_alternative(message.html, "text/html")
        if stream := getattr(settings, "POSTMARK_BROADCAST_STREAM", "broadcast"):
            # Bulk and marketing email belongs on Postmark's broadcast message stream;
            # read by anymail's Postmark backend, ignored by every other one.
            mail.esp_extra = {"MessageStream": stream}
        return mail

    def build_or_hold(self, row) -> EmailMultiAlternatives | None:
        try:
            return self.build(row)
        except rendering.RenderError as exc:
            note = f"Template error: {exc}"
            if row.step_id:
                SequenceStep.objects.filter(pk=row.step_id).update(render_error=str(exc)[:2000])
            else:
                Broadcast.objects.filter(pk=row.broadcast_id).update(render_error=str(exc)[:2000])
            self.defer(row, self.now() + RENDER_RETRY, note=note)
            self.result.errors.append(note)
            return None

    def deliver(self, row, mail) -> None:
        """Hand one taken row's email to the server and record the outcome."""
        try:
            if self.smtp is not None:
                # Django's SMTP backend, connection open: write the bytes ourselves and
                # hand them to its smtplib connection (see mime.py for why).
                sender, recipients, data = mime.wire(mail)
                self.smtp.connection.sendmail(sender, recipients, data)
            else:
                self.connection.send_messages([mail])
        except Exception as exc:
            self.recorder.collect()
            self.fail_or_retry(row, exc, row.attempts + 1)
            if breaks_connection(exc) or (not is_transient(exc) and _config_error(exc)):
                raise _Abort(str(exc)) from exc
            return
        # The previous email's record was answered while this one went out; nothing else
        # may use the database connection while a record is in flight (_SentRecorder).
        self.recorder.collect()
        self.mark_sent(row, mail)
        self.result.sent += 1

    def mark_sent(self, row, mail) -> None:
        """ "sent" and the enrolment's next step, in one statement (one round trip, one
        commit) so the gap in which a dying worker could leave a sent email unrecorded
        stays as small as it can be."""
        now = self.now()
        fields = {
            "id": row.pk,
            "now": now,
            "subject": mail.subject[:998],
            "message_id": mail.extra_headers["Message-ID"],
        }
        if db.vendor != "postgresql":
            with transaction.atomic():
                DripDelivery.objects.filter(pk=row.pk, status=DripDelivery.Status.SENDING).update(
                    status=DripDelivery.Status.SENT,
                    sent_at=now,
                    subject=fields["subject"],
                    message_id=fields["message_id"],
                    note="",
                    claimed_at=None,
                )
                self.advance(row, sent=True)
            return
        if not row.enrolment_id:
            self.recorder.send(MARK_SENT_SQL, fields)
            return
        values = self.next_values(row)
        self.recorder.send(
            MARK_SENT_AND_ADVANCE_SQL,
            {
                **fields,
                "enrolment": row.enrolment_id,
                "step": row.step_id,
                "next_step": values["next_step"].pk if values["next_step"] else None,
                "next_send_at": values["next_send_at"],
                "finished_at": values["finished_at"],
            },
        )

    def take_all(self, rows) -> set[int]:
        """Move the rows to "sending" — for each, only one worker can — if the subscriber
        is still confirmed and the enrolment still at this step: an unsubscribe that landed
        after this batch was loaded still stops its email."""
        if not rows:
            return set()
        if db.vendor != "postgresql":
            return {row.pk for row in rows if self.take(row)}
        with db.cursor() as cursor:
            cursor.execute(TAKE_SQL, {"ids": [row.pk for row in rows], "token": self.token})
            return {pk for (pk,) in cursor.fetchall()}

    def run(self) -> BatchResult:
        if not self.rows:
            return self.result
        self.prepare()
        ready = [row for row in self.rows if self.check(row)]
        wanted = Counter(row.subscriber.email.rsplit("@", 1)[-1].lower() for row in ready)
        granted = limits.reserve(dict(wanted), self.now())
        later = limits.retry_at(self.now())
        sendable = []
        for row in ready:
            domain = row.subscriber.email.rsplit("@", 1)[-1].lower()
            if granted.get(domain, 0) > 0:
                granted[domain] -= 1
                sendable.append(row)
            else:
                self.defer(row, later, note="Held back by the sending rate limits.")
        if not sendable:
            return self.result
        built = [(row, mail) for row in sendable if (mail := self.build_or_hold(row))]
        taken = self.take_all([row for row, _mail in built])
        for row, _mail in built:
            if row.pk not in taken:
                self.settle_changed(row)
        built = [(row, mail) for row, mail in built if row.pk in taken]
        if not built:
            return self.result
        sending = DripDelivery.Status.SENDING
        try:
            self.connection.open()
            self.smtp = (
                self.connection
                if isinstance(self.connection, SmtpBackend) and self.connection.connection
                else None
            )
        except (smtplib.SMTPException, OSError) as exc:
            # The connection could not even be opened: nothing was handed over.
            for row, _mail in built:
                self.defer(
                    row,
                    self.now() + timedelta(minutes=1),
                    note=f"SMTP unavailable: {exc!r}",
                    was=sending,
                )
            self.result.errors.append(repr(exc))
            return self.result
        try:
            with _commits_not_waiting_for_disk():
                self.recorder = _SentRecorder()
                try:
                    for index, (row, mail) in enumerate(built):
                        try:
                            self.deliver(row, mail)
                        except _Abort:
                            for rest, _mail in built[index + 1 :]:
                                self.defer(
                                    rest,
                                    self.now() + timedelta(minutes=1),
                                    note="SMTP unavailable.",
                                    was=sending,
                                )
                            break
                finally:
                    self.recorder.collect()
        finally:
            try:
                self.connection.close()
            except Exception:  # closing a broken connection must not hide the real error
                logger.debug("closing the SMTP connection failed", exc_info=True)
        for step_id in {
            row.step_id for row, _mail in built if row.step_id and row.step.render_error
        }:
            SequenceStep.objects.filter(pk=step_id).update(render_error="")
        return self.result


@contextmanager
def _commits_not_waiting_for_disk():
    """synchronous_commit off for this session while the block runs (module docstring)."""
    if db.vendor != "postgresql":
        yield
        return
    with db.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO OFF")
    try:
        yield
    finally:
        try:
            with db.cursor() as cursor:
                cursor.execute("RESET synchronous_commit")
        except DatabaseError:  # a broken connection is closed and the setting with it
            logger.debug("resetting synchronous_commit failed", exc_info=True)


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@lru_cache(maxsize=8)
def _numbered(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """A statement with %(name)s placeholders as libpq wants it: $1, $2… and the names."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _PLACEHOLDER.sub(number, sql).encode(), tuple(names)


def _text(value) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat().encode()
    return str(value).encode()


class _SentRecorder:
    """Writes each "sent" record to PostgreSQL without waiting for the answer, and reads
    the answer while the next email's SMTP conversation runs: the database's round trip
    and its work overlap the SMTP server's instead of adding to them.

    What survives a dying worker does not change: the statement is on its way to the
    server — flushed to the socket — before the next email's first SMTP command, and the
    server carries out a statement it has received even if the client is gone. The answer
    is read before the connection is used for anything else, so an error surfaces one
    email later than it would otherwise, and is raised all the same."""

    def __init__(self):
        self.pgconn = None
        self.pending = False
        if db.vendor == "postgresql":
            db.ensure_connection()
            self.pgconn = db.connection.pgconn

    def send(self, sql: str, params: dict) -> None:
        self.collect()
        if self.pgconn is None:
            with db.cursor() as cursor:
                cursor.execute(sql, params)
            return
        command, names = _numbered(sql)
        self.pgconn.send_query_params(command, [_text(params[name]) for name in names])
        self.pending = True
        while self.pgconn.flush():  # the connection is non-blocking: wait until all is sent
            select.select([], [self.pgconn.socket], [])

    def collect(self) -> None:
        """Read the answer to the statement in flight; raise if it failed."""
        if not self.pending:
            return
        self.pending = False
        errors = []
        while True:
            self.pgconn.consume_input()
            if self.pgconn.is_busy():
                select.select([self.pgconn.socket], [], [])
                continue
            result = self.pgconn.get_result()
            if result is None:
                break
            if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                errors.append((result.error_message or b"").decode(errors="replace"))
        if errors:
            raise DatabaseError(f"Recording a sent email failed: {errors[0]}")


def _config_error(exc: BaseException) -> bool:
    # Our sender address refused: every other email of the batch would fail the same way.
    return isinstance(exc, smtplib.SMTPSenderRefused)


def _owned_products(emails: list[str], product_ids: set[int]) -> dict[str, set[int]]:
    from payments.models import Entitlement

    if not emails or not product_ids:
        return {}
    owned: dict[str, set[int]] = {}
    for email, product_id in (
        Entitlement.objects.active()
        .filter(product_id__in=product_ids, user__email__in=sorted({e.lower() for e in emails}))
        .values_list("user__email", "product_id")
    ):
        owned.setdefault(email.lower(), set()).add(product_id)
    return owned


def deliveries_send(
    *,
    token: str,
    delivery_ids: list[int] = (),
    enrolments: list[tuple[int, int]] = (),
    now: datetime | None = None,
    connection=None,
) -> BatchResult:
    """Send what was claimed with ``token``: existing deliveries by id, and claimed
    (enrolment, step) pairs, whose delivery rows are written first. ``now`` only in
    simulations and tests."""
    connection = connection or get_connection(fail_silently=False)
    return _Batch(
        delivery_ids=list(delivery_ids),
        enrolments=list(enrolments),
        token=token,
        now=now,
        connection=connection,
    ).run()
