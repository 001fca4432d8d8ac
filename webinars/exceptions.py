"""Webinar errors; each message is safe to show to the visitor as it stands."""

from django.utils.translation import gettext_lazy as _


class WebinarError(Exception):
    message = _("Something went wrong. Please try again.")
    status = 400

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message


class SessionUnavailable(WebinarError):
    message = _("This session is no longer open for registration. Please choose another.")
    status = 409


class SessionFull(WebinarError):
    """No seat left. ``alternative`` is the next session with seats (or None); the
    visitor may also join the waiting list."""

    message = _("Sorry, this session is full.")
    status = 409

    def __init__(self, *, occasion, alternative=None, message: str | None = None):
        super().__init__(message)
        self.occasion = occasion
        self.alternative = alternative


class TicketRequired(WebinarError):
    message = _("This webinar needs a ticket. Buy one to choose your session.")
    status = 403


class InvalidSlot(WebinarError):
    message = _("That time is not one of this webinar's slots. Please pick one from the list.")


class JoinRefused(WebinarError):
    """A join or replay link that does not admit this visitor; ``title`` heads the page."""

    status = 403

    def __init__(self, message: str, *, title: str, status: int = 403):
        super().__init__(message)
        self.title = title
        self.status = status
