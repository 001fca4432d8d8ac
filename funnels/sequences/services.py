"""Writes for sequences and broadcasts: enrol, exit, advance, pause, schedule, suppress.

Entry points other code calls:
    enrol_on_confirm         funnels.services._confirm (an address was confirmed)
    subscriber_left          funnels.services.subscriber_unsubscribe, ESP bounces/complaints
    purchase_recorded        payments.signals.purchase_completed
    enrol_on_tags            a tag was added to a subscriber
    enrol_webinar_registrant the webinar app, when someone registers
"""

import logging
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core.services import brand_settings
from funnels.models import (
    Broadcast,
    DripDelivery,
    Enrolment,
    LandingPage,
    Sequence,
    SequenceStep,
    Subscriber,
    Suppression,
)

from . import selectors
from .windows import Window, next_opening, zone_for

logger = logging.getLogger(__name__)


class SequenceError(Exception):
    """A creator-facing problem with a sequence or broadcast action."""


def subscriber_zone(subscriber: Subscriber):
    return zone_for(subscriber.time_zone, fallback=brand_settings().default_time_zone)


def step_due(
    *, step: SequenceStep, enrolment: Enrolment, after: datetime, zone, window: Window
) -> datetime:
    """When ``step`` goes out: its delay from enrolment or from ``after`` (the previous
    step), never before ``after``, moved into the window in the subscriber's zone."""
    base = enrolment.enrolled_at if step.delay_from == SequenceStep.DelayFrom.ENROLMENT else after
    return next_opening(max(base + step.delay, after), zone, window)


# --- Enrolment ----------------------------------------------------------------------------


@transaction.atomic
def enrolment_start(
    *,
    sequence: Sequence,
    subscriber: Subscriber,
    source: str,
    now: datetime | None = None,
) -> Enrolment | None:
    """Put a confirmed subscriber into a sequence, or return None when the rules say no:
    not confirmed, already in it, re-entry not allowed, or already owns what it sells."""
    now = now or timezone.now()
    if subscriber.status != Subscriber.Status.CONFIRMED:
        return None
    steps = selectors.ordered_steps(sequence)
    if not steps:
        return None
    earlier = Enrolment.objects.filter(sequence=sequence, subscriber=subscriber)
    if earlier.filter(status__in=Enrolment.OPEN).exists():
        return None
    if sequence.reentry == Sequence.Reentry.ONCE and earlier.exists():
        return None
    targets = selectors.target_product_ids([sequence.pk]).get(sequence.pk, set())
    if targets and selectors.owns_any(subscriber, targets):
        return None
    enrolment = Enrolment(
        sequence=sequence,
        subscriber=subscriber,
        source=source,
        status=Enrolment.Status.PAUSED if sequence.is_paused else Enrolment.Status.ACTIVE,
        next_step=steps[0],
        enrolled_at=now,
    )
    enrolment.next_send_at = step_due(
        step=steps[0],
        enrolment=enrolment,
        after=now,
        zone=subscriber_zone(subscriber),
        window=Window.of(sequence),
    )
    try:
        with transaction.atomic():
            enrolment.save()
    except IntegrityError:
        return None  # a concurrent enrolment of the same subscriber won
    return enrolment


def _form_sequence(landing_page: LandingPage | None, form_id: str, subscriber: Subscriber):
    if landing_page is None:
        return None
    forms = landing_page.optin_forms()
    if not form_id:
        # A confirmation link knows the page, not the form: the sign-up it answers is
        # the subscriber's last touch on that page.
        touch = subscriber.last_touch
        if touch is not None and touch.landing_page_id == landing_page.pk:
            form_id = touch.form_id
    form = forms.get(form_id) if form_id else None
    return form.get("sequence") if form else None


def enrol_on_confirm(
    *, subscriber: Subscriber, landing_page: LandingPage | None, form_id: str = ""
) -> list[Enrolment]:
    """An address was confirmed: enrol it in the opt-in form's sequence, and in every
    sequence triggered by a tag it already has (tags from a form arrive while pending)."""
    enrolments = []
    sequence = _form_sequence(landing_page, form_id, subscriber)
    if sequence is not None:
        enrolments.append(enrolment_start(sequence=sequence, subscriber=subscriber, source="optin"))
    enrolments += enrol_on_tags(subscriber=subscriber, tag_names=list(subscriber.tags.names()))
    return [e for e in enrolments if e is not None]


def enrol_on_tags(*, subscriber: Subscriber, tag_names: list[str]) -> list[Enrolment]:
    if subscriber.status != Subscriber.Status.CONFIRMED or not tag_names:
        return []
    query = Q()
    for name in tag_names:
        query |= Q(enrol_tag__iexact=name)
    result = []
    for sequence in Sequence.objects.filter(query).exclude(enrol_tag=""):
        enrolment = enrolment_start(sequence=sequence, subscriber=subscriber, source="tag")
        if enrolment is not None:
            result.append(enrolment)
    return result


def enrol_webinar_registrant(*, email: str, product) -> list[Enrolment]:
    """For the webinar app: someone registered for the webinar sold as ``product`` (a
    payments Product). Enrols them, if they are a confirmed subscriber, in every sequence
    that lists the product under "enrol buyers or registrants of"."""
    subscriber = Subscriber.objects.filter(email__iexact=(email or "").strip()).first()
    if subscriber is None:
        return []
    result = []
    for sequence in Sequence.objects.filter(enrol_products=product).distinct():
        enrolment = enrolment_start(sequence=sequence, subscriber=subscriber, source="webinar")
        if enrolment is not None:
            result.append(enrolment)
    return result


# --- Leaving ----------------------------------------------------------------------------------


def _exit(enrolments, *, reason: str, now: datetime) -> int:
    ids = list(enrolments.filter(status__in=Enrolment.OPEN).values_list("pk", flat=True))
    if not ids:
        return 0
    Enrolment.objects.filter(pk__in=ids, status__in=Enrolment.OPEN).update(
        status=Enrolment.Status.EXITED,
        exit_reason=reason,
        finished_at=now,
        next_send_at=None,
        claimed_at=None,
    )
    # Not yet handed to SMTP: cancelled. One already "sending" finishes; the sender checks
    # the subscriber and enrolment again right before each email.
    DripDelivery.objects.filter(enrolment_id__in=ids, status=DripDelivery.Status.QUEUED).update(
        status=DripDelivery.Status.CANCELLED, note=f"Left the sequence ({reason})."
    )
    return len(ids)


@transaction.atomic
def subscriber_left(*, subscriber: Subscriber, reason: str, now: datetime | None = None) -> int:
    """Unsubscribe, bounce or complaint: end every sequence and pending broadcast email."""
    now = now or timezone.now()
    exited = _exit(Enrolment.objects.filter(subscriber_id=subscriber.pk), reason=reason, now=now)
    DripDelivery.objects.filter(
        subscriber_id=subscriber.pk,
        broadcast__isnull=False,
        status=DripDelivery.Status.QUEUED,
    ).update(status=DripDelivery.Status.CANCELLED, note=f"Subscriber left ({reason}).")
    return exited


@transaction.atomic
def purchase_recorded(*, order, products) -> None:
    """A paid order: end the sequences selling what was bought, start those that follow
    a purchase of it. The order names its subscriber, or at least an email address."""
    product_ids = {p.pk for p in products}
    if not product_ids:
        return
    subscriber = None
    if order.subscriber_id:
        subscriber = Subscriber.objects.filter(pk=order.subscriber_id).first()
    if subscriber is None and order.email:
        subscriber = Subscriber.objects.filter(email__iexact=order.email).first()
    if subscriber is None:
        return
    _exit(
        Enrolment.objects.filter(
            subscriber=subscriber, sequence__target_products__in=product_ids
        ).distinct(),
        reason=Enrolment.ExitReason.PURCHASED,
        now=timezone.now(),
    )
    for sequence in Sequence.objects.filter(enrol_products__in=product_ids).distinct():
        enrolment_start(sequence=sequence, subscriber=subscriber, source="purchase")


@transaction.atomic
def enrolment_remove(*, enrolment: Enrolment) -> None:
    _exit(
        Enrolment.objects.filter(pk=enrolment.pk),
        reason=Enrolment.ExitReason.REMOVED,
        now=timezone.now(),
    )


@transaction.atomic
def address_suppress(*, email: str, reason: str) -> Subscriber | None:
    """A hard bounce or a spam complaint reported by the email provider: never mail the
    address again, mark the subscriber, and end their sequences."""
    from funnels.services import email_hash

    email = (email or "").strip().lower()
    if not email:
        return None
    Suppression.objects.get_or_create(email_hash=email_hash(email), defaults={"reason": reason})
    subscriber = Subscriber.objects.select_for_update().filter(email__iexact=email).first()
    if subscriber is None:
        return None
    status = {
        "bounced": Subscriber.Status.BOUNCED,
        "complained": Subscriber.Status.COMPLAINED,
    }[reason]
    # A complaint outranks a bounce; an unsubscribe stays as the subscriber chose.
    if subscriber.status in (Subscriber.Status.CONFIRMED, Subscriber.Status.PENDING) or (
        status == Subscriber.Status.COMPLAINED and subscriber.status == Subscriber.Status.BOUNCED
    ):
        subscriber.status = status
        subscriber.save(update_fields=["status"])
    subscriber_left(subscriber=subscriber, reason=reason)
    return subscriber


# --- The creator's controls -------------------------------------------------------------------


@transaction.atomic
def sequence_pause(*, sequence: Sequence) -> int:
    """Hold every email of the sequence. Emails not yet handed to SMTP are withdrawn; the
    enrolments keep their place and carry on from it on resume."""
    sequence = Sequence.objects.select_for_update().get(pk=sequence.pk)
    if sequence.paused_at is None:
        sequence.paused_at = timezone.now()
        sequence.save(update_fields=["paused_at"])
    paused = Enrolment.objects.filter(sequence=sequence, status=Enrolment.Status.ACTIVE).update(
        status=Enrolment.Status.PAUSED, claimed_at=None
    )
    DripDelivery.objects.filter(
        enrolment__sequence=sequence, status=DripDelivery.Status.QUEUED
    ).delete()
    return paused


@transaction.atomic
def sequence_resume(*, sequence: Sequence, now: datetime | None = None) -> int:
    """Carry on: anything that fell due while paused goes out at the next window opening."""
    now = now or timezone.now()
    sequence = Sequence.objects.select_for_update().get(pk=sequence.pk)
    sequence.paused_at = None
    sequence.save(update_fields=["paused_at"])
    window = Window.of(sequence)
    resumed = 0
    enrolments = (
        Enrolment.objects.filter(sequence=sequence, status=Enrolment.Status.PAUSED)
        .select_related("subscriber")
        .only("pk", "next_send_at", "subscriber__time_zone")
    )
    batch = []
    for enrolment in enrolments.iterator(chunk_size=2000):
        due = max(enrolment.next_send_at or now, now)
        enrolment.next_send_at = next_opening(due, subscriber_zone(enrolment.subscriber), window)
        enrolment.status = Enrolment.Status.ACTIVE
        batch.append(enrolment)
        if len(batch) >= 2000:
            Enrolment.objects.bulk_update(batch, ["next_send_at", "status"])
            resumed += len(batch)
            batch = []
    if batch:
        Enrolment.objects.bulk_update(batch, ["next_send_at", "status"])
        resumed += len(batch)
    return resumed


@transaction.atomic
def sequence_steps_reconcile(*, sequence: Sequence) -> int:
    """After the creator edited the steps: an enrolment whose next step was deleted moves
    to the step now at the same position, or finishes when there is none."""
    steps = selectors.ordered_steps(sequence)
    fixed = 0
    for enrolment in Enrolment.objects.select_for_update().filter(
        sequence=sequence, status__in=Enrolment.OPEN, next_step__isnull=True
    ):
        if enrolment.steps_done < len(steps):
            enrolment.next_step = steps[enrolment.steps_done]
            enrolment.next_send_at = max(enrolment.next_send_at or timezone.now(), timezone.now())
            enrolment.save(update_fields=["next_step", "next_send_at"])
        else:
            enrolment.status = Enrolment.Status.COMPLETED
            enrolment.finished_at = timezone.now()
            enrolment.next_send_at = None
            enrolment.save(update_fields=["status", "finished_at", "next_send_at"])
        fixed += 1
    SequenceStep.objects.filter(sequence=sequence).exclude(render_error="").update(render_error="")
    return fixed


# --- Broadcasts ---------------------------------------------------------------------------------


@transaction.atomic
def broadcast_schedule(*, broadcast: Broadcast, send_at: datetime | None = None) -> Broadcast:
    """Queue a broadcast for ``send_at`` (now by default); each subscriber gets it at the
    first moment of the window in their own time zone from then on."""
    broadcast = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
    if broadcast.status not in (Broadcast.Status.DRAFT, Broadcast.Status.CANCELLED):
        raise SequenceError("This broadcast has already been scheduled.")
    from .rendering import template_problems

    if template_problems(
        subject=broadcast.subject, preheader=broadcast.preheader, body=broadcast.body
    ):
        raise SequenceError("Fix the template errors before scheduling.")
    broadcast.status = Broadcast.Status.SCHEDULED
    broadcast.send_at = send_at or timezone.now()
    broadcast.save(update_fields=["status", "send_at"])
    return broadcast


@transaction.atomic
def broadcast_cancel(*, broadcast: Broadcast) -> int:
    broadcast = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
    if broadcast.status in (Broadcast.Status.SENT, Broadcast.Status.CANCELLED):
        return 0
    broadcast.status = Broadcast.Status.CANCELLED
    broadcast.save(update_fields=["status"])
    return broadcast.deliveries.filter(status=DripDelivery.Status.QUEUED).update(
        status=DripDelivery.Status.CANCELLED, note="Broadcast cancelled."
    )


def _broadcast_materialise(broadcast: Broadcast, now: datetime) -> int:
    """One queued delivery per audience member, due at the window opening in their zone.

    Set-based: one INSERT … SELECT per time zone present in the audience (a few hundred
    at most), so a million recipients never pass through Python. Unknown zone names use
    the fallback zone."""
    from .windows import _zone

    window = Window.of(broadcast)
    audience = selectors.broadcast_audience(broadcast)
    zones = list(audience.order_by().values_list("time_zone", flat=True).distinct())
    fallback = subscriber_zone(Subscriber(time_zone=""))
    created = 0
    for name in zones:
        zone = _zone(name) if name else None
        due = next_opening(now, zone or fallback, window)
        rows = [
            DripDelivery(
                broadcast=broadcast,
                subscriber_id=subscriber_id,
                due_at=due,
                subject=broadcast.subject[:998],
                created_at=now,
            )
            for subscriber_id in audience.filter(time_zone=name).values_list("pk", flat=True)
        ]
        for start in range(0, len(rows), 5000):
            DripDelivery.objects.bulk_create(rows[start : start + 5000], ignore_conflicts=True)
        created += len(rows)
    return created


def broadcasts_start_due(*, now: datetime) -> int:
    """Turn scheduled broadcasts whose time has come into queued deliveries."""
    started = 0
    for broadcast_id in Broadcast.objects.filter(
        status=Broadcast.Status.SCHEDULED, send_at__lte=now
    ).values_list("pk", flat=True):
        with transaction.atomic():
            broadcast = (
                Broadcast.objects.select_for_update(skip_locked=True)
                .filter(pk=broadcast_id, status=Broadcast.Status.SCHEDULED)
                .first()
            )
            if broadcast is None:
                continue
            broadcast.recipients = _broadcast_materialise(broadcast, now)
            broadcast.status = Broadcast.Status.SENDING
            broadcast.save(update_fields=["recipients", "status"])
            started += 1
    Broadcast.objects.filter(status=Broadcast.Status.SENDING).exclude(
        deliveries__status__in=DripDelivery.PENDING
    ).update(status=Broadcast.Status.SENT)
    return started


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(60 * 2 ** max(0, attempts - 1), 3600))
