"""Reads for sequences and broadcasts: who bought what, segments, figures, timelines."""

from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from funnels.models import (
    Broadcast,
    DripDelivery,
    Enrolment,
    Sequence,
    SequenceStep,
    Subscriber,
    SubscriberTag,
)


def tag_list(value: str) -> list[str]:
    return [tag.strip() for tag in (value or "").split(",") if tag.strip()]


def ordered_steps(sequence: Sequence | int) -> list[SequenceStep]:
    sequence_id = sequence if isinstance(sequence, int) else sequence.pk
    return list(SequenceStep.objects.filter(sequence_id=sequence_id).order_by("sort_order", "pk"))


def step_after(steps: list[SequenceStep], step: SequenceStep) -> SequenceStep | None:
    key = (step.sort_order or 0, step.pk)
    later = [s for s in steps if (s.sort_order or 0, s.pk) > key]
    return later[0] if later else None


def owners_among(emails: list[str], product_ids, *, at: datetime | None = None) -> set[str]:
    """The addresses among ``emails`` that hold an active entitlement to one of
    ``product_ids`` — the same rule as payments.selectors.has_access, for a whole batch
    in one query (buyers' accounts are keyed by email)."""
    from payments.models import Entitlement

    product_ids = list(product_ids)
    if not emails or not product_ids:
        return set()
    lowered = sorted({e.lower() for e in emails})
    return {
        email.lower()
        for email in Entitlement.objects.active(at)
        .filter(product_id__in=product_ids, user__email__in=lowered)
        .values_list("user__email", flat=True)
    }


def owns_any(subscriber: Subscriber, product_ids) -> bool:
    return bool(owners_among([subscriber.email], product_ids))


def target_product_ids(sequence_ids) -> dict[int, set[int]]:
    through = Sequence.target_products.through
    result: dict[int, set[int]] = {}
    for sequence_id, product_id in through.objects.filter(
        sequence_id__in=list(sequence_ids)
    ).values_list("sequence_id", "product_id"):
        result.setdefault(sequence_id, set()).add(product_id)
    return result


def tags_of(subscriber_ids) -> dict[int, set[str]]:
    result: dict[int, set[str]] = {}
    for subscriber_id, name in SubscriberTag.objects.filter(
        content_object_id__in=list(subscriber_ids)
    ).values_list("content_object_id", "tag__name"):
        result.setdefault(subscriber_id, set()).add(name.lower())
    return result


# --- Broadcast segments -------------------------------------------------------------------


def broadcast_audience(broadcast: Broadcast) -> QuerySet[Subscriber]:
    """Everyone the broadcast is for: confirmed subscribers matching its segment."""
    from payments.models import Entitlement

    qs = Subscriber.objects.filter(status=Subscriber.Status.CONFIRMED)
    if tags := tag_list(broadcast.tags):
        qs = qs.filter(
            Exists(
                SubscriberTag.objects.filter(content_object_id=OuterRef("pk"), tag__name__in=tags)
            )
        )
    if exclude := tag_list(broadcast.exclude_tags):
        qs = qs.exclude(
            Exists(
                SubscriberTag.objects.filter(
                    content_object_id=OuterRef("pk"), tag__name__in=exclude
                )
            )
        )
    if broadcast.landing_page_id:
        qs = qs.filter(first_touch__landing_page_id=broadcast.landing_page_id)
    if broadcast.utm_source:
        qs = qs.filter(first_touch__utm_source=broadcast.utm_source)
    if broadcast.product_id and broadcast.bought:
        owners = Entitlement.objects.active().filter(
            product_id=broadcast.product_id, user__email__iexact=OuterRef("email")
        )
        qs = (
            qs.filter(Exists(owners))
            if broadcast.bought == "bought"
            else qs.exclude(Exists(owners))
        )
    return qs


# --- Figures for the creator ----------------------------------------------------------------


@dataclass(frozen=True)
class StepFigures:
    step: SequenceStep
    sent: int
    clicked: int
    opened: int
    unsubscribed: int
    converted: int
    skipped: int
    failed: int
    pending: int

    @property
    def click_rate(self) -> float:
        return self.clicked / self.sent if self.sent else 0.0

    @property
    def conversion_rate(self) -> float:
        return self.converted / self.sent if self.sent else 0.0


def step_figures(sequence: Sequence) -> list[StepFigures]:
    """Per step: sent, clicked, opened; and the unsubscribes and purchases that came while
    it was the last email the subscriber had from this sequence."""
    steps = ordered_steps(sequence)
    deliveries = {
        row["step"]: row
        for row in DripDelivery.objects.filter(step__sequence=sequence)
        .values("step")
        .annotate(
            sent=Count("pk", filter=Q(status=DripDelivery.Status.SENT)),
            clicked=Count("pk", filter=Q(clicked_at__isnull=False)),
            opened=Count("pk", filter=Q(opened_at__isnull=False)),
            skipped=Count("pk", filter=Q(status=DripDelivery.Status.SKIPPED)),
            failed=Count("pk", filter=Q(status=DripDelivery.Status.FAILED)),
            pending=Count("pk", filter=Q(status__in=DripDelivery.PENDING)),
        )
        .order_by()
    }
    exits = {
        (row["last_step"], row["exit_reason"]): row["n"]
        for row in Enrolment.objects.filter(
            sequence=sequence, status=Enrolment.Status.EXITED, last_step__isnull=False
        )
        .values("last_step", "exit_reason")
        .annotate(n=Count("pk"))
        .order_by()
    }
    figures = []
    for step in steps:
        row = deliveries.get(step.pk, {})
        figures.append(
            StepFigures(
                step=step,
                sent=row.get("sent", 0),
                clicked=row.get("clicked", 0),
                opened=row.get("opened", 0),
                skipped=row.get("skipped", 0),
                failed=row.get("failed", 0),
                pending=row.get("pending", 0),
                unsubscribed=exits.get((step.pk, Enrolment.ExitReason.UNSUBSCRIBED), 0),
                converted=exits.get((step.pk, Enrolment.ExitReason.PURCHASED), 0),
            )
        )
    return figures


def enrolment_counts(sequence: Sequence) -> dict[str, int]:
    counts = dict(
        Enrolment.objects.filter(sequence=sequence)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    return {status: counts.get(status, 0) for status, _label in Enrolment.Status.choices}


@dataclass(frozen=True)
class Warning:
    step: SequenceStep | None
    message: str


def sequence_warnings(sequence: Sequence, steps: list[SequenceStep] | None = None) -> list[Warning]:
    """Advice for the creator: offers back to back, long subjects, a step that failed to
    render, and nothing to stop selling at."""
    from funnels.models_sequences import SHORT_SUBJECT

    steps = ordered_steps(sequence) if steps is None else steps
    warnings = []
    for previous, step in pairwise(steps):
        if previous.kind == SequenceStep.Kind.OFFER and step.kind == SequenceStep.Kind.OFFER:
            warnings.append(
                Warning(
                    step,
                    f"“{step.subject}” is an offer right after another offer. Put a useful "
                    "content email between them: readers who only get asks stop opening.",
                )
            )
    if steps and steps[0].kind == SequenceStep.Kind.OFFER:
        warnings.append(
            Warning(steps[0], "The first email is an offer; lead with something useful.")
        )
    for step in steps:
        if len(step.subject) > SHORT_SUBJECT:
            warnings.append(
                Warning(
                    step,
                    f"“{step.subject}” is {len(step.subject)} characters; subjects of "
                    f"{SHORT_SUBJECT} or fewer open better on phones.",
                )
            )
        if step.render_error:
            warnings.append(
                Warning(step, f"“{step.subject}” could not be sent: {step.render_error}")
            )
    if (
        sequence.pk
        and any(s.kind == SequenceStep.Kind.OFFER for s in steps)
        and not sequence.target_products.exists()
    ):
        warnings.append(
            Warning(
                None,
                "No product is chosen as what this sequence sells, so buyers keep getting "
                "its offers.",
            )
        )
    return warnings


# --- A subscriber's timeline ------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str
    title: str
    detail: str = ""


def subscriber_timeline(subscriber: Subscriber) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []
    for enrolment in subscriber.enrolments.select_related("sequence", "last_step"):
        entries.append(
            TimelineEntry(
                enrolment.enrolled_at,
                "enrolled",
                f"Entered “{enrolment.sequence.name}”",
                enrolment.get_source_display(),
            )
        )
        if enrolment.finished_at:
            entries.append(
                TimelineEntry(
                    enrolment.finished_at,
                    enrolment.status,
                    (
                        f"Finished “{enrolment.sequence.name}”"
                        if enrolment.status == Enrolment.Status.COMPLETED
                        else f"Left “{enrolment.sequence.name}”"
                    ),
                    enrolment.get_exit_reason_display() if enrolment.exit_reason else "",
                )
            )
    for delivery in subscriber.drip_deliveries.select_related(
        "step__sequence", "broadcast"
    ).order_by("created_at"):
        source = (
            f"Broadcast “{delivery.broadcast.name}”"
            if delivery.broadcast_id
            else (f"“{delivery.step.sequence.name}”" if delivery.step_id else "A deleted step")
        )
        subject = delivery.subject or (delivery.step.subject if delivery.step_id else "")
        at = delivery.sent_at or delivery.due_at
        detail = delivery.get_status_display()
        if delivery.note:
            detail += f": {delivery.note}"
        entries.append(
            TimelineEntry(at, f"email-{delivery.status}", f"{source}: {subject}", detail)
        )
        if delivery.opened_at:
            entries.append(TimelineEntry(delivery.opened_at, "opened", f"Opened “{subject}”"))
        if delivery.clicked_at:
            entries.append(
                TimelineEntry(
                    delivery.clicked_at, "clicked", f"Clicked in “{subject}”", f"{delivery.clicks}×"
                )
            )
    for consent in subscriber.consents.all():
        entries.append(
            TimelineEntry(
                consent.created_at, "consent", consent.get_action_display(), consent.consent_text
            )
        )
    return sorted(entries, key=lambda e: e.at or timezone.now())
