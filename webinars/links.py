"""Personal links: one signed token per registrant and session opens their join link,
calendar file, replay and cancel page.

What makes a link refuse (each tested):
- forged: the signature does not verify, or the registration's secret ``key`` in it is
  not the registration's current one → "not valid" (404);
- stale: the registrant has since moved to another session (the token names the session
  it was issued for) → "was for another session" (410);
- reused by someone else: a signed-in visitor who is not the registrant (another account
  than the one the registration belongs to, or whose address differs) → 403, whatever
  the link;
- a ticket's link opened while signed out → sign in first (a paid seat is the buyer's).
A free registrant's link opened while signed out admits them: it arrived in their mailbox,
as an invitation does; every opening is recorded (time, IP, browser) for the creator.
"""

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext as _

from .exceptions import JoinRefused
from .models import Registration
from .selectors import is_registrant

LINK_SALT = "lodestone.webinars.registrant"


def registrant_token(registration: Registration) -> str:
    return signing.dumps(
        {"r": registration.pk, "o": registration.occasion_id, "k": registration.key},
        salt=LINK_SALT,
        compress=True,
    )


def registrant_url(view_name: str, registration: Registration, *, absolute: bool = True) -> str:
    path = reverse(view_name, kwargs={"token": registrant_token(registration)})
    return settings.SITE_URL + path if absolute else path


def not_valid() -> JoinRefused:
    return JoinRefused(
        _(
            "This link is not valid. Please open the link from your latest email about this "
            "webinar, or register again on the webinar's page."
        ),
        title=_("This link does not work"),
        status=404,
    )


def registration_for_token(token: str, *, user) -> Registration:
    """The registration a personal link names, for this visitor; JoinRefused otherwise."""
    try:
        data = signing.loads(token or "", salt=LINK_SALT)
    except signing.BadSignature as exc:
        raise not_valid() from exc
    if not isinstance(data, dict):
        raise not_valid()
    registration = (
        Registration.objects.select_related("occasion", "page", "user")
        .filter(pk=data.get("r"))
        .first()
    )
    if registration is None or not constant_time_compare(registration.key, str(data.get("k", ""))):
        raise not_valid()
    if data.get("o") != registration.occasion_id:
        raise JoinRefused(
            _(
                "You have moved to another session since this link was sent. Please use the "
                "link from your latest confirmation email."
            ),
            title=_("This link was for another session"),
            status=410,
        )
    if user is not None and user.is_authenticated and not is_registrant(user, registration):
        raise JoinRefused(
            _(
                "This personal link belongs to another registrant, and you are signed in as "
                "someone else. Please use the link from your own confirmation email, or "
                "register on the webinar's page."
            ),
            title=_("This is not your link"),
            status=403,
        )
    return registration
