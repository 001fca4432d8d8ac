"""Writes: a webinar's product, its occasions, registrations (seats), reminders.

Seats: ``registration_place`` locks the occasion row (SELECT … FOR UPDATE) and counts the
seats taken inside that lock, so concurrent registrations for the last seats queue on
the lock and never oversell; one registration per webinar and address is a database
constraint.

Consent: a free registration is a request for the webinar, so its own emails
(confirmation, reminders, changes, replay) go out at once. The registrant also becomes a
funnel subscriber with the consent they ticked recorded in the ledger; marketing (drip
sequences) still waits for the double opt-in: a subscriber who has not confirmed gets a
confirmation link in the registration email, and is enrolled in the webinar's sequences
only once confirmed.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.text import slugify
from django.utils.translation import gettext as _

from payments.models import Product

from . import emails, exceptions, selectors
from .models import Occasion, Registration, Reminder, WebinarPage, WebinarSession, new_key

logger = logging.getLogger(__name__)

REMINDER_BATCH = 200


def _now(now: datetime | None) -> datetime:
    return now or timezone.now()


# --- The product --------------------------------------------------------------------------


def _product_slug_candidates(page: WebinarPage):
    base = slugify(f"webinar-{page.slug}")[:90].strip("-")
    if base == "webinar":
        base = f"webinar-{page.pk}"
    yield base
    for number in range(2, 20):
        yield f"{base}-{number}"
    yield f"{base}-{get_random_string(8).lower()}"


def webinar_products_ensure_below(*, page) -> list[Product]:
    """Products for every webinar at or under ``page`` that has none (a copied tree)."""
    return [
        webinar_product_ensure(page=webinar)
        for webinar in WebinarPage.objects.descendant_of(page, inclusive=True).filter(
            product__isnull=True
        )
    ]


@transaction.atomic
def webinar_product_ensure(*, page: WebinarPage) -> Product:
    """The product a ticket grants and sequences enrol on, created on first need (as
    courses.services.course_product_ensure does for a course, revisions included)."""
    locked = WebinarPage.objects.select_for_update().get(pk=page.pk)
    if locked.product_id is not None:
        page.product_id = locked.product_id
        return locked.product
    product = None
    for slug in _product_slug_candidates(locked):
        if Product.objects.filter(slug=slug).exists():
            continue
        try:
            with transaction.atomic():
                product = Product.objects.create(
                    kind=Product.Kind.WEBINAR, title=locked.title[:200], slug=slug
                )
            break
        except IntegrityError:
            continue
    if product is None:
        raise exceptions.WebinarError("Could not name a product for this webinar.")
    WebinarPage.objects.filter(pk=locked.pk).update(product=product)
    for revision in locked.revisions.all():
        if revision.content.get("product") is None:
            revision.content["product"] = product.pk
            revision.save(update_fields=["content"])
    page.product_id = product.pk
    return product


# --- Occasions: the page's sessions as people register for them -----------------------------


@dataclass
class SyncResult:
    created: int = 0
    moved: int = 0
    cancelled: int = 0
    updated: int = 0


@transaction.atomic
def webinar_sessions_sync(*, page: WebinarPage, now: datetime | None = None) -> SyncResult:
    """Bring the live occasions in line with the page's published sessions. Run on every
    publish; running it again changes nothing.

    A new session opens for registration; a moved one (start or length) gets a higher
    calendar SEQUENCE, rescheduled reminders and a "new time" email to each registrant;
    a session cancelled or removed from the page is cancelled for its registrants. A
    cancelled session stays cancelled (add a new session to run it again)."""
    now = _now(now)
    result = SyncResult()
    sessions = list(WebinarSession.objects.filter(page_id=page.pk).order_by("pk"))
    occasions = {
        o.uid: o
        for o in Occasion.objects.select_for_update()
        .filter(page_id=page.pk, kind=Occasion.Kind.LIVE)
        .order_by("pk")
    }
    for session in sessions:
        occasion = occasions.pop(session.uid, None)
        if occasion is None:
            if session.is_cancelled or Occasion.objects.filter(uid=session.uid).exists():
                continue
            Occasion.objects.create(
                uid=session.uid,
                page_id=page.pk,
                kind=Occasion.Kind.LIVE,
                starts_at=session.starts_at,
                time_zone=session.time_zone,
                duration_minutes=session.duration_minutes,
                capacity=session.capacity,
                join_url=session.join_url,
            )
            result.created += 1
            continue
        if occasion.is_cancelled:
            continue
        if session.is_cancelled:
            occasion_cancel(occasion=occasion, now=now)
            result.cancelled += 1
            continue
        grew = session.capacity > occasion.capacity
        occasion.capacity = session.capacity
        occasion.join_url = session.join_url
        if (
            occasion.starts_at != session.starts_at
            or occasion.duration_minutes != session.duration_minutes
            or occasion.time_zone != session.time_zone
        ):
            occasion_move(
                occasion=occasion,
                starts_at=session.starts_at,
                duration_minutes=session.duration_minutes,
                time_zone=session.time_zone,
                now=now,
            )
            result.moved += 1
        else:
            occasion.save(update_fields=["capacity", "join_url", "updated_at"])
            result.updated += 1
        if grew:
            transaction.on_commit(lambda pk=occasion.pk: waitlist_promote(occasion_id=pk))
    for occasion in occasions.values():  # removed from the page
        if not occasion.is_cancelled:
            occasion_cancel(occasion=occasion, now=now)
            result.cancelled += 1
    return result


def occasion_move(
    *,
    occasion: Occasion,
    starts_at: datetime,
    duration_minutes: int,
    time_zone: str,
    now: datetime | None = None,
) -> None:
    """The caller holds the occasion's lock."""
    now = _now(now)
    moved_start = occasion.starts_at != starts_at
    occasion.starts_at = starts_at
    occasion.duration_minutes = duration_minutes
    occasion.time_zone = time_zone
    occasion.sequence += 1
    occasion.save()
    for registration in occasion.registrations.select_for_update().filter(
        status=Registration.Status.REGISTERED
    ):
        registration.occasion = occasion
        reminders_schedule(registration=registration, now=now, rearm=moved_start)
        emails.moved_send(registration)


def occasion_cancel(*, occasion: Occasion, now: datetime | None = None) -> int:
    """Cancel for everyone: no reminder goes out any more, each registrant (and each on
    the waiting list) gets the cancellation with its calendar CANCEL. Returns how many
    were told. The caller holds the occasion's lock."""
    now = _now(now)
    occasion.status = Occasion.Status.CANCELLED
    occasion.cancelled_at = now
    occasion.sequence += 1
    occasion.save()
    told = 0
    registrations = occasion.registrations.select_for_update().exclude(
        status=Registration.Status.CANCELLED
    )
    for registration in registrations:
        registration.occasion = occasion
        was_registered = registration.status == Registration.Status.REGISTERED
        registration.status = Registration.Status.CANCELLED
        registration.cancelled_at = now
        registration.save(update_fields=["status", "cancelled_at", "updated_at"])
        Reminder.objects.filter(registration=registration, status=Reminder.Status.PENDING).update(
            status=Reminder.Status.CANCELLED
        )
        if was_registered:
            emails.cancelled_send(registration)
            told += 1
    return told


def occasion_for_slot(
    *, page: WebinarPage, slot: str, viewer_time_zone: str, now: datetime | None = None
) -> Occasion:
    """The evergreen occasion at ``slot`` (ISO 8601), made on first pick; only a slot the
    schedule offers this viewer now is accepted."""
    try:
        moment = datetime.fromisoformat((slot or "").strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise exceptions.InvalidSlot() from exc
    if moment.tzinfo is None:
        raise exceptions.InvalidSlot()
    moment = moment.astimezone(UTC)
    if moment not in selectors.evergreen_slots(page, viewer_time_zone=viewer_time_zone, now=now):
        raise exceptions.InvalidSlot()
    existing = Occasion.objects.filter(
        page=page, kind=Occasion.Kind.EVERGREEN, starts_at=moment
    ).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return Occasion.objects.create(
                page=page,
                kind=Occasion.Kind.EVERGREEN,
                starts_at=moment,
                time_zone=selectors.evergreen_slot_zone(
                    page, moment=moment, viewer_time_zone=viewer_time_zone
                ),
                duration_minutes=page.evergreen_duration_minutes,
                capacity=page.evergreen_capacity,
            )
    except IntegrityError:  # picked at the same moment by someone else
        return Occasion.objects.get(page=page, kind=Occasion.Kind.EVERGREEN, starts_at=moment)


# --- Seats ----------------------------------------------------------------------------------


@dataclass
class Placement:
    registration: Registration
    # False when the same person asked again for the seat they already hold.
    changed: bool

    @property
    def waitlisted(self) -> bool:
        return self.registration.status == Registration.Status.WAITLISTED


@transaction.atomic
def registration_place(
    *,
    page: WebinarPage,
    occasion: Occasion,
    email: str,
    name: str = "",
    time_zone: str = "",
    source: str = Registration.Source.FREE,
    user=None,
    subscriber=None,
    consent_text: str = "",
    waitlist: bool = False,
    now: datetime | None = None,
) -> Placement:
    """Give ``email`` a seat at ``occasion`` (moving their registration from another
    session of the webinar if they had one), or a place on its waiting list when it is
    full and they asked for that; SessionFull otherwise."""
    now = _now(now)
    occasion = Occasion.objects.select_for_update().get(pk=occasion.pk)
    if occasion.page_id != page.pk or occasion.is_cancelled or occasion.ends_at <= now:
        raise exceptions.SessionUnavailable()
    existing = (
        Registration.objects.select_for_update().filter(page=page, email__iexact=email).first()
    )
    if (
        existing is not None
        and existing.occasion_id == occasion.pk
        and existing.status == Registration.Status.REGISTERED
    ) or (
        existing is not None
        and existing.occasion_id == occasion.pk
        and existing.status == Registration.Status.WAITLISTED
        and waitlist
    ):
        _refresh_details(existing, name=name, time_zone=time_zone, user=user, source=source)
        existing.subscriber = existing.subscriber or subscriber
        existing.save()
        return Placement(registration=existing, changed=False)

    taken = Registration.objects.filter(
        occasion=occasion, status=Registration.Status.REGISTERED
    ).count()
    full = bool(occasion.capacity) and taken >= occasion.capacity
    if full and not waitlist:
        raise exceptions.SessionFull(
            occasion=occasion,
            alternative=selectors.next_with_seats(page, after=occasion, now=now),
        )
    status = Registration.Status.WAITLISTED if full else Registration.Status.REGISTERED
    freed_occasion_id = None
    if existing is not None:
        if existing.status == Registration.Status.REGISTERED:
            freed_occasion_id = existing.occasion_id
        registration = existing
        registration.occasion = occasion
        registration.status = status
        registration.key = new_key()  # links to the old session stop working
        registration.cancelled_at = None
        registration.created_at = now
        registration.consent_text = consent_text or registration.consent_text
        registration.subscriber = subscriber or registration.subscriber
        _refresh_details(registration, name=name, time_zone=time_zone, user=user, source=source)
        registration.save()
    else:
        try:
            with transaction.atomic():
                registration = Registration.objects.create(
                    page=page,
                    occasion=occasion,
                    email=email,
                    name=name,
                    time_zone=selectors.clean_zone_name(time_zone),
                    user=user,
                    subscriber=subscriber,
                    source=source,
                    status=status,
                    consent_text=consent_text,
                    created_at=now,
                )
        except IntegrityError as exc:
            # The same address registering twice at once: the other request won.
            raise exceptions.WebinarError(
                _("You are already registered; your confirmation is on its way.")
            ) from exc
    if status == Registration.Status.REGISTERED:
        reminders_schedule(registration=registration, now=now, rearm=True)
    else:
        Reminder.objects.filter(registration=registration, status=Reminder.Status.PENDING).update(
            status=Reminder.Status.CANCELLED
        )
    if freed_occasion_id is not None:
        transaction.on_commit(lambda: waitlist_promote(occasion_id=freed_occasion_id))
    return Placement(registration=registration, changed=True)


def _refresh_details(registration: Registration, *, name, time_zone, user, source) -> None:
    if name:
        registration.name = name[:150]
    if time_zone:
        registration.time_zone = selectors.clean_zone_name(time_zone)
    if user is not None and registration.user_id is None:
        registration.user = user
    if source == Registration.Source.TICKET:
        registration.source = source


@transaction.atomic
def waitlist_promote(*, occasion_id: int, now: datetime | None = None) -> list[Registration]:
    """Seats that opened go to the waiting list, first come first served."""
    now = _now(now)
    occasion = Occasion.objects.select_for_update().filter(pk=occasion_id).first()
    if occasion is None or occasion.is_cancelled or occasion.ends_at <= now:
        return []
    waiting = Registration.objects.select_for_update().filter(
        occasion=occasion, status=Registration.Status.WAITLISTED
    )
    if occasion.capacity:
        free = occasion.capacity - selectors.seats_taken(occasion)
        if free <= 0:
            return []
        waiting = waiting.order_by("created_at", "pk")[:free]
    promoted = []
    for registration in waiting:
        registration.status = Registration.Status.REGISTERED
        registration.save(update_fields=["status", "updated_at"])
        reminders_schedule(registration=registration, now=now, rearm=True)
        emails.confirmation_send(registration)
        promoted.append(registration)
    return promoted


@transaction.atomic
def registration_cancel(*, registration: Registration, now: datetime | None = None) -> bool:
    """The registrant gives their seat back. False when it was already cancelled."""
    now = _now(now)
    registration = Registration.objects.select_for_update().get(pk=registration.pk)
    if registration.status == Registration.Status.CANCELLED:
        return False
    held_seat = registration.status == Registration.Status.REGISTERED
    registration.status = Registration.Status.CANCELLED
    registration.cancelled_at = now
    registration.save(update_fields=["status", "cancelled_at", "updated_at"])
    Reminder.objects.filter(registration=registration, status=Reminder.Status.PENDING).update(
        status=Reminder.Status.CANCELLED
    )
    if held_seat:
        occasion_id = registration.occasion_id
        transaction.on_commit(lambda: waitlist_promote(occasion_id=occasion_id))
    return True


# --- Free registration (the opt-in form) ------------------------------------------------------


def _subscriber_with_consent(*, page: WebinarPage, email: str, name: str, time_zone: str, visitor):
    """The funnel subscriber for this address (made if new), with the consent they ticked
    written to the ledger. A fresh, explicit consent lifts an earlier suppression, as
    funnels.services.optin_submit does."""
    from funnels.models import ConsentRecord, Subscriber, Suppression
    from funnels.services import email_hash

    subscriber = Subscriber.objects.select_for_update().filter(email__iexact=email).first()
    if subscriber is None:
        try:
            with transaction.atomic():
                subscriber = Subscriber.objects.create(
                    email=email, name=name, time_zone=selectors.clean_zone_name(time_zone)
                )
        except IntegrityError:
            subscriber = Subscriber.objects.select_for_update().get(email__iexact=email)
    if name and not subscriber.name:
        subscriber.name = name
        subscriber.save(update_fields=["name"])
    ConsentRecord.objects.create(
        subscriber=subscriber,
        action=ConsentRecord.Action.GRANTED,
        email=email,
        consent_text=page.consent_text,
        page_url=(page.full_url or page.url or "")[:500],
        form_id=f"webinar-{page.pk}",
        form_version=str(page.live_revision_id or page.latest_revision_id or ""),
        ip_address=visitor.ip_address,
        user_agent=(visitor.user_agent or "")[:500],
    )
    Suppression.objects.filter(email_hash=email_hash(email)).delete()
    return subscriber


def _marketing_confirm_url(subscriber) -> str:
    """A double opt-in link for a subscriber who has not confirmed; "" when confirmed."""
    from django.conf import settings
    from django.urls import reverse

    from funnels.models import Subscriber
    from funnels.services import confirm_token_issue

    if subscriber is None or subscriber.status == Subscriber.Status.CONFIRMED:
        return ""
    token = confirm_token_issue(subscriber=subscriber, landing_page=None, magnet=None)
    return settings.SITE_URL + reverse("webinars:confirm", kwargs={"token": token})


def _enrol_in_sequences(registration: Registration) -> None:
    from funnels.sequences.services import enrol_webinar_registrant

    product = registration.page.product
    if product is not None:
        enrol_webinar_registrant(email=registration.email, product=product)


def _announce(placement: Placement) -> None:
    registration = placement.registration
    if placement.waitlisted:
        emails.waitlisted_send(registration)
        return
    emails.confirmation_send(
        registration, confirm_url=_marketing_confirm_url(registration.subscriber)
    )
    _enrol_in_sequences(registration)


@transaction.atomic
def registration_free_submit(
    *,
    page: WebinarPage,
    email: str,
    name: str,
    consent: bool,
    time_zone: str,
    visitor,
    occasion_id: int | str | None = None,
    slot: str = "",
    waitlist: bool = False,
    user=None,
    now: datetime | None = None,
) -> Placement:
    """A visitor registered on the webinar's page. Asking again for the seat one holds
    sends the confirmation again (the first may be lost)."""
    from funnels import exceptions as funnel_exceptions
    from funnels.services import normalize_email

    now = _now(now)
    if page.is_paid:
        raise exceptions.TicketRequired()
    try:
        email = normalize_email(email)
    except funnel_exceptions.FunnelError as exc:
        raise exceptions.WebinarError(exc.message) from exc
    if not consent:
        raise exceptions.WebinarError(
            _("Please tick the box: we need your consent to send you the webinar's details.")
        )
    name = " ".join((name or "").split())[:150]
    time_zone = selectors.clean_zone_name(time_zone)
    occasion = _occasion_from_form(
        page=page, occasion_id=occasion_id, slot=slot, time_zone=time_zone, now=now
    )
    if user is not None and (not user.is_authenticated or user.email.lower() != email):
        user = None
    subscriber = _subscriber_with_consent(
        page=page, email=email, name=name, time_zone=time_zone, visitor=visitor
    )
    placement = registration_place(
        page=page,
        occasion=occasion,
        email=email,
        name=name,
        time_zone=time_zone,
        source=Registration.Source.FREE,
        user=user,
        subscriber=subscriber,
        consent_text=page.consent_text,
        waitlist=waitlist,
        now=now,
    )
    _announce(placement)
    return placement


def _occasion_from_form(*, page, occasion_id, slot, time_zone, now) -> Occasion:
    if page.is_evergreen and slot:
        return occasion_for_slot(page=page, slot=slot, viewer_time_zone=time_zone, now=now)
    try:
        occasion_id = int(occasion_id)
    except (TypeError, ValueError) as exc:
        raise exceptions.SessionUnavailable(_("Please choose a session.")) from exc
    occasion = Occasion.objects.filter(page=page, pk=occasion_id, kind=Occasion.Kind.LIVE).first()
    if occasion is None:
        raise exceptions.SessionUnavailable()
    return occasion


# --- Tickets (paid webinars) ------------------------------------------------------------------


@transaction.atomic
def registration_ticket_choose(
    *,
    page: WebinarPage,
    user,
    occasion_id=None,
    slot: str = "",
    time_zone: str = "",
    waitlist: bool = False,
    now: datetime | None = None,
) -> Placement:
    """A signed-in ticket holder picks (or changes) their session."""
    if not selectors.holds_ticket(user, page):
        raise exceptions.TicketRequired()
    time_zone = selectors.clean_zone_name(time_zone)
    occasion = _occasion_from_form(
        page=page, occasion_id=occasion_id, slot=slot, time_zone=time_zone, now=_now(now)
    )
    placement = registration_place(
        page=page,
        occasion=occasion,
        email=user.email.lower(),
        name=user.get_full_name() if user.first_name else "",
        time_zone=time_zone,
        source=Registration.Source.TICKET,
        user=user,
        waitlist=waitlist,
        now=now,
    )
    if placement.changed:
        _announce(placement)
    return placement


def tickets_register(*, order, products, now: datetime | None = None) -> list[Registration]:
    """purchase_completed: a paid order granted webinar products. Each buyer gets a seat
    at the next session with one free (or the waiting list of the next session); with
    nothing scheduled, an email asks them to pick a slot on the page."""
    result = []
    for product in products:
        page = WebinarPage.objects.filter(product_id=product.pk).first()
        if page is None or not order.email:
            continue
        with transaction.atomic():
            email = order.email.strip().lower()
            existing = Registration.objects.filter(
                page=page,
                email__iexact=email,
                status__in=[Registration.Status.REGISTERED, Registration.Status.WAITLISTED],
            ).first()
            if existing is not None:
                _refresh_details(existing, name="", time_zone="", user=order.buyer, source="ticket")
                existing.save()
                result.append(existing)
                continue
            occasion = selectors.next_with_seats(page, now=now)
            waitlist = False
            if occasion is None:
                upcoming = selectors.open_occasions(page, now=now)
                occasion = upcoming[0] if upcoming else None
                waitlist = True
            if occasion is None:
                emails.ticket_pick_send(email=email, page=page)
                continue
            time_zone = ""
            from funnels.models import Subscriber

            subscriber = Subscriber.objects.filter(email__iexact=email).first()
            if subscriber is not None:
                time_zone = subscriber.time_zone
            try:
                placement = registration_place(
                    page=page,
                    occasion=occasion,
                    email=email,
                    name=order.buyer.get_full_name() if order.buyer else "",
                    time_zone=time_zone,
                    source=Registration.Source.TICKET,
                    user=order.buyer,
                    subscriber=subscriber,
                    waitlist=waitlist,
                    now=now,
                )
            except exceptions.WebinarError:
                emails.ticket_pick_send(email=email, page=page)
                continue
            _announce(placement)
            result.append(placement.registration)
    return result


def tickets_revoke(*, order, products, now: datetime | None = None) -> int:
    """access_revoked (refund, dispute): the buyer's ticket seats are given back."""
    count = 0
    for product in products:
        page = WebinarPage.objects.filter(product_id=product.pk).first()
        if page is None or not order.email:
            continue
        for registration in Registration.objects.filter(
            page=page, email__iexact=order.email, source=Registration.Source.TICKET
        ):
            if registration_cancel(registration=registration, now=now):
                count += 1
    return count


# --- Reminders ------------------------------------------------------------------------------


def reminders_schedule(
    *, registration: Registration, now: datetime | None = None, rearm: bool = False
) -> list[Reminder]:
    """The three reminder rows of a registration, timed from its occasion's start.

    A moment already past when scheduled is not sent late (skipped); with ``rearm`` (a
    new seat, a moved session) a reminder already sent goes out again before the new
    time, since the one sent named the old time."""
    now = _now(now)
    starts_at = registration.occasion.starts_at
    rows = []
    for kind, offset in Reminder.OFFSETS.items():
        due = starts_at - offset
        reminder, created = Reminder.objects.get_or_create(
            registration=registration,
            kind=kind,
            defaults={
                "due_at": due,
                "status": Reminder.Status.PENDING if due > now else Reminder.Status.SKIPPED,
            },
        )
        if not created:
            reminder.due_at = due
            if due > now:
                if reminder.status != Reminder.Status.SENT or rearm:
                    reminder.status = Reminder.Status.PENDING
                    reminder.sent_at = None
                    reminder.email = None
            elif reminder.status != Reminder.Status.SENT:
                reminder.status = Reminder.Status.SKIPPED
            reminder.save()
        rows.append(reminder)
    return rows


@dataclass
class ReminderRun:
    sent: int = 0
    skipped: int = 0
    cancelled: int = 0
    deferred: int = 0


def reminders_send_due(*, now: datetime | None = None, batch: int = REMINDER_BATCH) -> ReminderRun:
    """Claim due reminders (FOR UPDATE SKIP LOCKED: workers running at once take
    different rows) and queue each email in the same transaction that marks it sent, so
    each reminder is queued exactly once."""
    now = _now(now)
    run = ReminderRun()
    while True:
        with transaction.atomic():
            rows = list(
                Reminder.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(status=Reminder.Status.PENDING, due_at__lte=now)
                .select_related("registration__occasion", "registration__page")
                .order_by("due_at", "pk")[:batch]
            )
            for reminder in rows:
                _reminder_handle(reminder, now=now, run=run)
        if len(rows) < batch:
            return run


def _reminder_handle(reminder: Reminder, *, now: datetime, run: ReminderRun) -> None:
    registration = reminder.registration
    occasion = registration.occasion
    if registration.status != Registration.Status.REGISTERED or occasion.is_cancelled:
        reminder.status = Reminder.Status.CANCELLED
        run.cancelled += 1
    else:
        due = occasion.starts_at - Reminder.OFFSETS[reminder.kind]
        if due > now:  # the session moved later since this row was timed
            reminder.due_at = due
            run.deferred += 1
        elif now - due > Reminder.LATE_AFTER[reminder.kind]:
            reminder.status = Reminder.Status.SKIPPED
            run.skipped += 1
        else:
            reminder.email = emails.reminder_send(reminder)
            reminder.status = Reminder.Status.SENT
            reminder.sent_at = now
            run.sent += 1
    reminder.save()


# --- Attendance and replay views --------------------------------------------------------------


def join_open_record(*, registration: Registration, outcome: str, visitor) -> None:
    from .models import JoinOpen

    JoinOpen.objects.create(
        registration=registration,
        occasion_id=registration.occasion_id,
        outcome=outcome,
        ip_address=visitor.ip_address,
        user_agent=(visitor.user_agent or "")[:500],
    )


def replay_view_record(*, page: WebinarPage, registration: Registration | None, user) -> None:
    from .models import ReplayView

    ReplayView.objects.create(
        page=page,
        registration=registration,
        user=user if user is not None and user.is_authenticated else None,
    )


def replay_account_ensure(*, registration: Registration):
    """The account a registrant signs in to for the replay (the player streams to signed
    -in viewers only). Made if needed, as checkout makes a buyer's; it signs nobody in."""
    from payments.services import buyer_get_or_create

    user, _created = buyer_get_or_create(email=registration.email, name=registration.name)
    if registration.user_id is None:
        Registration.objects.filter(pk=registration.pk, user__isnull=True).update(user=user)
    return user


@transaction.atomic
def marketing_confirm(*, token: str, visitor) -> list:
    """The double opt-in link from a registration email: confirms the subscriber (funnels)
    and enrols them in the sequences of the webinars they registered for."""
    from funnels.services import subscriber_confirm

    confirmation = subscriber_confirm(token=token, visitor=visitor)
    subscriber = confirmation.subscriber
    registrations = list(
        Registration.objects.filter(email__iexact=subscriber.email)
        .exclude(status=Registration.Status.CANCELLED)
        .select_related("page__product")
    )
    for registration in registrations:
        _enrol_in_sequences(registration)
    return registrations
