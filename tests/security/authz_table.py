"""Who may use which route: the expected answer for every route of the URL configuration.

test_authz_matrix.py walks `get_resolver().url_patterns` and fails for a route that has
no entry here. To add one: key it by the route's name (`namespace:name`), say how to
build its URL from the test world (tests/security/world.py) and what each role gets.

Roles: anonymous; subscriber (a confirmed subscriber without an account: anonymous, but
holding their own signed links); other_buyer (signed in, owns another product); buyer
(signed in, owns the course, has an order); staff (a creator: superuser).

Outcomes, from the response:
  OK        2xx
  REDIRECT  3xx anywhere but the sign-in page
  LOGIN     3xx to the sign-in page
  DENY      400, 401, 403, 404 or 410 (refused, or nothing there for this visitor)
  METHOD    405
A 5xx is never an outcome: the matrix fails on it.

Links that are keys in themselves (subscriber links, login links, signed downloads,
segment URLs) are requested by their holder as issued, and by everyone else forged
(`forged_for_others`): a stranger never has the holder's link.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from tests.security.world import (
    CHECKOUT_SESSION_ID,
    OPTIN_FORM_ID,
    ROLES,
    World,
    forged,
    random_uuid,
)

OK, REDIRECT, LOGIN, DENY, METHOD = "ok", "redirect", "login", "deny", "method"

# Admin paths are one family (test_admin_routes_*): staff in, everyone else to sign-in.
ADMIN_PREFIX = "admin/"


def everyone(outcome: str) -> dict[str, str]:
    return dict.fromkeys(ROLES, outcome)


def roles(
    *,
    anonymous: str,
    subscriber: str | None = None,
    other_buyer: str,
    buyer: str,
    staff: str,
) -> dict[str, str]:
    """`subscriber` defaults to `anonymous`: without their links they are anonymous."""
    return {
        "anonymous": anonymous,
        "subscriber": anonymous if subscriber is None else subscriber,
        "other_buyer": other_buyer,
        "buyer": buyer,
        "staff": staff,
    }


SIGNED_IN = roles(anonymous=LOGIN, other_buyer=OK, buyer=OK, staff=OK)
BUYER_AND_STAFF = roles(anonymous=DENY, other_buyer=DENY, buyer=OK, staff=OK)
ANONYMOUS_ONLY = roles(anonymous=OK, other_buyer=REDIRECT, buyer=REDIRECT, staff=REDIRECT)


@dataclass(frozen=True)
class Case:
    url: Callable[[World, str], str]
    expect: dict[str, str]
    method: str = "GET"
    data: dict = field(default_factory=dict)
    label: str = ""


def fixed(path: str) -> Callable[[World, str], str]:
    return lambda world, role: path


def holder_only(link: str, holder: str) -> Callable[[World, str], str]:
    """The holder's link for the holder; a forged one for everyone else."""
    return lambda world, role: world.links[link] if role == holder else forged(world.links[link])


def holder_link(link: str, holder: str, *, holder_gets: str, staff: str = DENY) -> Case:
    expect = everyone(DENY)
    expect[holder] = holder_gets
    if holder != "staff":
        expect["staff"] = staff
    return Case(holder_only(link, holder), expect, label=f"{link} link")


def page(attr: str) -> Callable[[World, str], str]:
    def build(world: World, role: str) -> str:
        obj = world
        for part in attr.split("."):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        return obj.url

    return build


def webinar(world: World):
    from tests.webinars.authz import webinar_of

    return webinar_of(world)


def webinar_link(view: str, *, holder: str = "subscriber", forge: bool = True):
    """The holder's registrant link for the holder; forged for the others (or, with
    forge=False, the holder's own link in everyone's hands)."""

    def build(world: World, role: str) -> str:
        from tests.webinars.authz import registrant_link

        link = registrant_link(world, holder, view)
        return link if role == holder or not forge else forged(link)

    return build


ROUTES: dict[str, list[Case]] = {
    # --- Wagtail documents (public by Wagtail's design; protected files go through media)
    "wagtaildocs_serve": [Case(fixed("/documents/999999/missing.pdf"), everyone(DENY))],
    "wagtaildocs_authenticate_with_password": [
        Case(fixed("/documents/authenticate_with_password/999999/"), everyone(DENY))
    ],
    # --- allauth: sign-in pages send the signed-in onwards; account pages need sign-in.
    "account_login": [Case(fixed("/accounts/login/"), ANONYMOUS_ONLY)],
    "account_logout": [
        Case(
            fixed("/accounts/logout/"),
            roles(anonymous=REDIRECT, other_buyer=OK, buyer=OK, staff=OK),
        )
    ],
    "account_inactive": [Case(fixed("/accounts/inactive/"), everyone(OK))],
    "account_signup": [Case(fixed("/accounts/signup/"), ANONYMOUS_ONLY)],
    "account_reauthenticate": [Case(fixed("/accounts/reauthenticate/"), SIGNED_IN)],
    "account_email": [Case(fixed("/accounts/email/"), SIGNED_IN)],
    "account_email_verification_sent": [Case(fixed("/accounts/confirm-email/"), everyone(OK))],
    "account_change_password": [Case(fixed("/accounts/password/change/"), SIGNED_IN)],
    "account_set_password": [
        Case(
            fixed("/accounts/password/set/"),
            roles(anonymous=LOGIN, other_buyer=REDIRECT, buyer=REDIRECT, staff=REDIRECT),
        )
    ],
    "account_reset_password": [Case(fixed("/accounts/password/reset/"), everyone(OK))],
    "account_confirm_login_code": [
        Case(
            fixed("/accounts/login/code/confirm/"),
            roles(anonymous=LOGIN, other_buyer=REDIRECT, buyer=REDIRECT, staff=REDIRECT),
            label="no code was asked for",
        )
    ],
    "account_confirm_email": [
        Case(fixed("/accounts/confirm-email/not-a-key/"), everyone(OK), label="invalid key")
    ],
    "account_reset_password_from_key_done": [
        Case(fixed("/accounts/password/reset/key/done/"), everyone(OK))
    ],
    "account_reset_password_from_key": [
        Case(fixed("/accounts/password/reset/key/1-not-a-key/"), everyone(OK), label="bad key")
    ],
    "account_reset_password_done": [Case(fixed("/accounts/password/reset/done/"), everyone(OK))],
    "account_request_login_code": [Case(fixed("/accounts/login/code/"), ANONYMOUS_ONLY)],
    # --- The buyer's account
    "account_overview": [Case(fixed("/account/"), SIGNED_IN)],
    "account_order_receipt": [
        Case(
            lambda w, role: f"/account/receipts/{w.order.pk}/",
            roles(anonymous=LOGIN, other_buyer=DENY, buyer=REDIRECT, staff=DENY),
            label="the buyer's order",
        )
    ],
    "set_language": [
        Case(
            fixed("/i18n/setlang/"),
            everyone(REDIRECT),
            method="POST",
            data={"language": "fi", "next": "/"},
        )
    ],
    # --- Protected media: every request is checked, links are bound to one account.
    "media:video_master": [
        Case(lambda w, r: f"/protected/video/{w.video.uid}/master.m3u8", BUYER_AND_STAFF)
    ],
    "media:video_poster": [
        Case(lambda w, r: f"/protected/video/{w.video.uid}/poster.jpg", BUYER_AND_STAFF)
    ],
    "media:video_status": [
        Case(lambda w, r: f"/protected/video/{w.video.uid}/status.json", BUYER_AND_STAFF)
    ],
    "media:video_rendition": [
        Case(
            lambda w, r: w.links["rendition"],
            roles(anonymous=DENY, other_buyer=DENY, buyer=OK, staff=DENY),
            label="the buyer's rendition token",
        )
    ],
    "media:video_segment": [
        Case(
            lambda w, r: w.links["segment"],
            roles(anonymous=DENY, other_buyer=DENY, buyer=OK, staff=DENY),
            label="the buyer's segment URL",
        )
    ],
    "media:protected": [
        Case(
            lambda w, r: w.links["protected"],
            roles(anonymous=DENY, other_buyer=DENY, buyer=OK, staff=DENY),
            label="a download signed for the buyer",
        )
    ],
    # --- Funnels: forms and subscriber links
    "funnels:subscribe": [
        Case(
            lambda w, r: f"/f/subscribe/{w.landing.pk}/{OPTIN_FORM_ID}/",
            everyone(REDIRECT),
            label="GET goes back to the page",
        )
    ],
    "funnels:confirm": [holder_link("confirm", "subscriber", holder_gets=OK)],
    "funnels:download": [holder_link("download", "subscriber", holder_gets=OK)],
    "funnels:unsubscribe": [holder_link("unsubscribe", "subscriber", holder_gets=OK)],
    "funnels:my_data": [holder_link("my_data", "subscriber", holder_gets=OK)],
    "funnels:visit": [Case(lambda w, r: f"/f/visit/{w.landing.pk}/", everyone(OK), method="POST")],
    "funnels:sequence_click": [holder_link("click", "subscriber", holder_gets=REDIRECT)],
    "funnels:sequence_open": [
        Case(holder_only("open", "subscriber"), everyone(OK), label="a pixel for anyone")
    ],
    "funnels:esp_postmark_tracking": [
        Case(fixed("/f/esp/postmark/tracking/"), everyone(DENY), method="POST", data={"x": "1"})
    ],
    "funnels:esp_postmark_inbound": [
        Case(fixed("/f/esp/postmark/inbound/"), everyone(DENY), method="POST", data={"x": "1"})
    ],
    # --- Payments
    "payments:buy": [Case(lambda w, r: f"/pay/buy/{w.tree.offer.slug}/", everyone(OK))],
    "payments:checkout_success": [
        Case(
            fixed(f"/pay/checkout/success/?session_id={CHECKOUT_SESSION_ID}"),
            everyone(OK),
            label="the session id is the key; nobody is signed in by it",
        )
    ],
    "payments:stripe_webhook": [
        Case(fixed("/pay/stripe/webhook/"), everyone(DENY), method="POST", data={"x": "1"})
    ],
    "payments:login_link": [holder_link("login", "buyer", holder_gets=OK)],
    "payments:billing_portal_mine": [
        Case(
            fixed("/pay/billing/"),
            roles(anonymous=LOGIN, other_buyer=DENY, buyer=DENY, staff=DENY),
            method="POST",
            label="no Stripe customer on these accounts",
        )
    ],
    "payments:billing_portal": [holder_link("billing", "buyer", holder_gets=REDIRECT)],
    # --- Courses
    "courses:download": [
        Case(
            lambda w, r: f"/learn/download/{w.download.uuid}/",
            roles(anonymous=LOGIN, other_buyer=DENY, buyer=OK, staff=OK),
        ),
        Case(lambda w, r: f"/learn/download/{random_uuid()}/", everyone(DENY), label="unknown"),
    ],
    "courses:progress": [
        Case(
            lambda w, r: f"/learn/progress/{w.tree.paid_lesson.pk}/",
            roles(anonymous=DENY, other_buyer=DENY, buyer=OK, staff=OK),
            method="POST",
            data={"position": "12"},
        )
    ],
    "courses:complete": [
        Case(
            lambda w, r: f"/learn/complete/{w.tree.paid_lesson.pk}/",
            roles(anonymous=LOGIN, other_buyer=DENY, buyer=REDIRECT, staff=REDIRECT),
            method="POST",
            data={"completed": "1"},
        )
    ],
    # --- Webinars: a free webinar two days ahead, the subscriber and the buyer registered
    # (tests/webinars/authz.py). A registrant link is the holder's; signed-in strangers
    # holding it are refused.
    "webinars:register": [
        Case(lambda w, r: f"/webinar/register/{webinar(w).pk}/", everyone(METHOD), label="GET")
    ],
    "webinars:join": [
        Case(webinar_link("join"), everyone(DENY) | {"subscriber": OK}, label="own or forged"),
        Case(
            webinar_link("join", forge=False),
            roles(anonymous=OK, other_buyer=DENY, buyer=DENY, staff=DENY),
            label="the subscriber's link in everyone's hands",
        ),
    ],
    "webinars:calendar": [
        Case(webinar_link("calendar"), everyone(DENY) | {"subscriber": OK}, label="own or forged")
    ],
    "webinars:replay": [
        Case(webinar_link("replay"), everyone(DENY), label="no replay before the webinar")
    ],
    "webinars:cancel": [
        Case(webinar_link("cancel"), everyone(DENY) | {"subscriber": OK}, label="own or forged")
    ],
    # The double opt-in of a registration email: the funnels confirm token, at this path.
    "webinars:confirm": [
        Case(
            lambda w, role: (
                w.links["confirm"] if role == "subscriber" else forged(w.links["confirm"])
            ).replace("/f/confirm/", "/webinar/confirm/"),
            everyone(DENY) | {"subscriber": OK},
            label="own or forged",
        )
    ],
    "healthz": [Case(fixed("/healthz"), everyone(OK))],
    # --- Wagtail's page serving: representative pages of every kind
    "wagtailcore_authenticate_with_password": [
        Case(fixed("/_util/authenticate_with_password/999999/999999/"), everyone(DENY))
    ],
    "wagtailcore_login": [Case(fixed("/_util/login/"), everyone(OK))],
    "wagtail_serve": [
        Case(fixed("/"), everyone(OK), label="home page"),
        Case(page("landing"), everyone(OK), label="landing page"),
        Case(page("tree.catalog"), everyone(OK), label="course catalog"),
        Case(page("tree.course"), everyone(OK), label="course page"),
        Case(page("tree.modules.0"), everyone(OK), label="module page"),
        Case(page("tree.free_lesson"), everyone(OK), label="free preview lesson"),
        Case(
            page("tree.paid_lesson"),
            roles(anonymous=LOGIN, other_buyer=DENY, buyer=OK, staff=OK),
            label="paid lesson",
        ),
        Case(fixed("/no-such-page/"), everyone(DENY), label="unknown page"),
    ],
}


# --- Webinars (helper hC): the registrants' own links × roles. The subscriber registered
# without an account (their link works signed out, like an invitation); the buyer has an
# account. A link opened by anyone signed in as someone else is refused; a forged one by all.
def _webinar_cases() -> dict[str, list[Case]]:
    from tests.webinars.authz import registrant_link, webinar_of

    def link_of(holder: str, view: str):
        return lambda world, role: registrant_link(world, holder, view)

    def forged_but_for(holder: str, view: str):
        return lambda world, role: (
            registrant_link(world, holder, view)
            if role == holder
            else forged(registrant_link(world, holder, view))
        )

    subscribers_link = roles(anonymous=OK, subscriber=OK, other_buyer=DENY, buyer=DENY, staff=DENY)
    buyers_link = roles(anonymous=OK, other_buyer=DENY, buyer=OK, staff=DENY)
    cases: dict[str, list[Case]] = {}
    for view in ("join", "calendar", "cancel"):
        cases[f"webinars:{view}"] = [
            Case(link_of("subscriber", view), subscribers_link, label=f"subscriber's {view} link"),
            Case(link_of("buyer", view), buyers_link, label=f"buyer's {view} link"),
            Case(
                forged_but_for("buyer", view),
                roles(anonymous=DENY, other_buyer=DENY, buyer=OK, staff=DENY),
                label=f"buyer's {view} link, forged for others",
            ),
        ]
    cases["webinars:replay"] = [
        Case(
            link_of("buyer", "replay"),
            roles(anonymous=DENY, other_buyer=DENY, buyer=DENY, staff=DENY),
            label="no replay before the session",
        )
    ]
    cases["wagtail_serve"] = [
        Case(lambda w, r: webinar_of(w).url, everyone(OK), label="webinar page")
    ]
    return cases


for _name, _cases in _webinar_cases().items():
    ROUTES.setdefault(_name, []).extend(_cases)
