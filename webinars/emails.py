"""Every webinar email, queued through the outbox (core.services.email_enqueue): stored in
the caller's transaction, sent by a Celery task with retries.

Times are written in the registrant's own time zone (the one their browser reported when
they registered), with the zone named, and the session's own zone beside it when they
differ.
"""

from email.utils import parseaddr

from django.template.loader import render_to_string
from django.utils import formats
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from core.models import OutboundEmail
from core.services import OutboundAttachment, brand_settings, default_from_email, email_enqueue

from . import calendar
from .links import registrant_url
from .models import Occasion, Registration, Reminder


def when_text(moment, zone) -> str:
    local = moment.astimezone(zone)
    return f"{formats.date_format(local, 'l j F Y, H:i')} ({zone})"


def session_lines(registration: Registration) -> dict:
    occasion: Occasion = registration.occasion
    mine = registration.zone
    context = {
        "when": when_text(occasion.starts_at, mine),
        "duration": occasion.duration_minutes,
        "when_session_zone": "",
    }
    if str(occasion.zone) != str(mine):
        context["when_session_zone"] = when_text(occasion.starts_at, occasion.zone)
    return context


def _links(registration: Registration) -> dict:
    join_url = registrant_url("webinars:join", registration)
    return {
        "join_url": join_url,
        "ics_url": registrant_url("webinars:calendar", registration),
        "google_url": calendar.google_calendar_url(registration, join_url=join_url),
        "outlook_url": calendar.outlook_calendar_url(registration, join_url=join_url),
        "cancel_url": registrant_url("webinars:cancel", registration),
        "replay_url": registrant_url("webinars:replay", registration),
    }


INVITE_FILENAME = "invite.ics"


def calendar_invite(registration: Registration, *, join_url: str) -> OutboundAttachment:
    """The registration's event as it stands now, to attach: a REQUEST (new or moved, with
    the occasion's SEQUENCE) or a CANCEL. The organizer is the address the email comes
    from, as iTIP expects of the sender of a REQUEST; the same file the link serves."""
    return OutboundAttachment(
        filename=INVITE_FILENAME,
        content=calendar.ics_bytes(
            registration,
            join_url=join_url,
            organizer_email=parseaddr(default_from_email())[1],
        ),
        content_type=f"text/calendar; method={calendar.ics_method(registration)}",
    )


def _send(
    registration: Registration,
    *,
    kind: str,
    subject: str,
    heading: str,
    paragraphs: list[str],
    show_session: bool = True,
    show_join: bool = True,
    show_calendar: bool = True,
    show_cancel: bool = True,
    invite: bool = False,
    extra: dict | None = None,
) -> OutboundEmail:
    links = _links(registration)
    context = {
        "brand": brand_settings(),
        "registration": registration,
        "webinar": registration.page,
        "heading": heading,
        "paragraphs": paragraphs,
        "show_session": show_session,
        "show_join": show_join,
        "show_calendar": show_calendar,
        "show_cancel": show_cancel,
        **session_lines(registration),
        **links,
        **(extra or {}),
    }
    attachments = [calendar_invite(registration, join_url=links["join_url"])] if invite else []
    return email_enqueue(
        to=registration.email,
        subject=subject,
        text_body=render_to_string("webinars/email/notice.txt", context),
        html_body=render_to_string("webinars/email/notice.html", context),
        kind=f"webinars:{kind}",
        attachments=attachments,
    )


def _hello(registration: Registration) -> str:
    first = registration.name.split()[0] if registration.name.strip() else ""
    return _("Hi %(name)s,") % {"name": first} if first else _("Hello,")


def confirmation_send(registration: Registration, *, confirm_url: str = "") -> OutboundEmail:
    title = registration.page.title
    paragraphs = [
        _hello(registration),
        _("You are registered for “%(title)s”.") % {"title": title},
        _(
            "Your personal link below opens the room when the session starts (doors open "
            "%(minutes)s minutes before). It is yours alone: please do not share it."
        )
        % {"minutes": registration.page.join_early_minutes},
    ]
    return _send(
        registration,
        kind="confirmation",
        subject=_("You're registered: %(title)s") % {"title": title},
        heading=_("You're registered"),
        paragraphs=paragraphs,
        invite=True,
        extra={"confirm_url": confirm_url},
    )


def waitlisted_send(registration: Registration) -> OutboundEmail:
    title = registration.page.title
    return _send(
        registration,
        kind="waitlisted",
        subject=_("You're on the waiting list: %(title)s") % {"title": title},
        heading=_("You're on the waiting list"),
        paragraphs=[
            _hello(registration),
            _(
                "This session of “%(title)s” is full. You are on its waiting list: if a "
                "seat opens, it is yours and we email you your personal link at once."
            )
            % {"title": title},
        ],
        show_join=False,
        show_calendar=False,
    )


def moved_send(registration: Registration) -> OutboundEmail:
    title = registration.page.title
    return _send(
        registration,
        kind="moved",
        subject=_("New time: %(title)s") % {"title": title},
        heading=_("The session has moved"),
        paragraphs=[
            _hello(registration),
            _(
                "The host has moved your session of “%(title)s”. Here is the new time; "
                "your seat is kept and the reminders follow the new time. Update your "
                "calendar with the new invitation below (it replaces the old event)."
            )
            % {"title": title},
        ],
        invite=True,
    )


def cancelled_send(registration: Registration) -> OutboundEmail:
    title = registration.page.title
    return _send(
        registration,
        kind="cancelled",
        subject=_("Cancelled: %(title)s") % {"title": title},
        heading=_("This session is cancelled"),
        paragraphs=[
            _hello(registration),
            _(
                "We are sorry: the host has cancelled your session of “%(title)s”. The "
                "calendar file below removes it from your calendar. You can register for "
                "another session on the webinar's page."
            )
            % {"title": title},
        ],
        show_join=False,
        show_cancel=False,
        invite=True,
        # The attached invite (METHOD:CANCEL) and the .ics link remove the event;
        # "add to Google/Outlook" links would add a cancelled session back.
        extra={"page_url": registration.page.full_url or "", "calendar_removal": True},
    )


def ticket_pick_send(*, email: str, page) -> OutboundEmail:
    """A ticket bought while no session could be chosen for the buyer (evergreen, none
    scheduled): they pick one on the page, signed in."""
    context = {"brand": brand_settings(), "webinar": page, "page_url": page.full_url or ""}
    return email_enqueue(
        to=email,
        subject=_("Your ticket: %(title)s") % {"title": page.title},
        text_body=render_to_string("webinars/email/ticket_pick.txt", context),
        kind="webinars:ticket",
    )


REMINDER_SUBJECTS = {
    Reminder.Kind.DAY_BEFORE: gettext_noop("Tomorrow: %(title)s"),
    Reminder.Kind.HOUR_BEFORE: gettext_noop("In one hour: %(title)s"),
    Reminder.Kind.AT_START: gettext_noop("Starting now: %(title)s"),
}


def reminder_send(reminder: Reminder) -> OutboundEmail:
    registration = reminder.registration
    title = registration.page.title
    lead = {
        Reminder.Kind.DAY_BEFORE: _("“%(title)s” is tomorrow."),
        Reminder.Kind.HOUR_BEFORE: _("“%(title)s” starts in one hour."),
        Reminder.Kind.AT_START: _("“%(title)s” is starting now. Come in!"),
    }[reminder.kind] % {"title": title}
    return _send(
        registration,
        kind=f"reminder-{reminder.kind}",
        subject=_(REMINDER_SUBJECTS[reminder.kind]) % {"title": title},
        heading=lead,
        paragraphs=[_hello(registration), lead],
        show_calendar=reminder.kind == Reminder.Kind.DAY_BEFORE,
    )
