"""Calendar invitations: the .ics of a registration, and add-to-calendar links.

One event per registration and occasion. Its UID never changes (occasion uid +
registration id), so a calendar that imported it updates the same event: SEQUENCE is the
occasion's, raised each time the creator moves or cancels the session, and a cancelled
session's file says METHOD:CANCEL with STATUS:CANCELLED. Times carry the zone the session
was scheduled in (TZID) with its VTIMEZONE, so a client shows it right in any zone.
"""

from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.utils import timezone
from icalendar import Calendar, Event, vCalAddress, vText

from .models import Occasion, Registration

PRODID = "-//Lodestone//Webinars//EN"


def event_uid(registration: Registration) -> str:
    host = urlsplit(settings.SITE_URL).hostname or "lodestone.invalid"
    return f"{registration.occasion.uid}.{registration.pk}@{host}"


def _description(registration: Registration, join_url: str) -> str:
    page = registration.page
    lines = [page.title]
    if page.host_name:
        lines.append(f"Host: {page.host_name}")
    lines += ["", f"Your personal link: {join_url}", "It opens the room when the session starts."]
    return "\n".join(lines)


def ics_method(registration: Registration) -> str:
    """The iTIP method of the registration's event as it stands: CANCEL once the session or
    the seat is cancelled, REQUEST otherwise (a new or updated invitation)."""
    occasion: Occasion = registration.occasion
    cancelled = occasion.is_cancelled or registration.status == Registration.Status.CANCELLED
    return "CANCEL" if cancelled else "REQUEST"


def ics_bytes(registration: Registration, *, join_url: str, organizer_email: str = "") -> bytes:
    """The registration's event as an iCalendar file (RFC 5545; iTIP method per RFC 5546)."""
    occasion: Occasion = registration.occasion
    method = ics_method(registration)
    cancelled = method == "CANCEL"
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", method)

    event = Event()
    event.add("uid", event_uid(registration))
    event.add("sequence", occasion.sequence)
    event.add("dtstamp", timezone.now().astimezone(UTC))
    zone = occasion.zone
    event.add("dtstart", occasion.starts_at.astimezone(zone))
    event.add("dtend", occasion.ends_at.astimezone(zone))
    event.add("summary", registration.page.title)
    event.add("description", _description(registration, join_url))
    event.add("location", join_url)
    event.add("url", join_url)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    event.add("transp", "OPAQUE")
    if organizer_email:
        organizer = vCalAddress(f"mailto:{organizer_email}")
        organizer.params["cn"] = vText(registration.page.host_name or registration.page.title)
        event.add("organizer", organizer)
    attendee = vCalAddress(f"mailto:{registration.email}")
    if registration.name:
        attendee.params["cn"] = vText(registration.name)
    attendee.params["role"] = vText("REQ-PARTICIPANT")
    attendee.params["partstat"] = vText("ACCEPTED")
    event.add("attendee", attendee)
    cal.add_component(event)
    cal.add_missing_timezones()
    return cal.to_ical()


def _utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def google_calendar_url(registration: Registration, *, join_url: str) -> str:
    occasion = registration.occasion
    query = urlencode(
        {
            "action": "TEMPLATE",
            "text": registration.page.title,
            "dates": f"{_utc_stamp(occasion.starts_at)}/{_utc_stamp(occasion.ends_at)}",
            "details": _description(registration, join_url),
            "location": join_url,
            "ctz": occasion.time_zone,
        }
    )
    return f"https://calendar.google.com/calendar/render?{query}"


def outlook_calendar_url(registration: Registration, *, join_url: str) -> str:
    occasion = registration.occasion
    query = urlencode(
        {
            "path": "/calendar/action/compose",
            "rru": "addevent",
            "subject": registration.page.title,
            "startdt": occasion.starts_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "enddt": occasion.ends_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "body": _description(registration, join_url),
            "location": join_url,
        }
    )
    return f"https://outlook.live.com/calendar/0/deeplink/compose?{query}"
