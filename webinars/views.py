"""HTTP edges of webinars: they parse, call a service or selector, and turn errors into
messages. The rules live in services (writes), selectors (reads) and links (tokens)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from core.csrf import same_origin_post
from core.http import client_ip
from funnels import ratelimit
from funnels.forms import MIN_SECONDS_TO_SUBMIT

from . import calendar, exceptions, links, selectors, services
from .forms import RegistrationForm
from .models import JoinOpen, Registration, WebinarPage

MAX_FORM_BODY = 16 * 1024


def _private(response: HttpResponse) -> HttpResponse:
    patch_cache_control(response, private=True, no_store=True)
    return response


def _visitor(request):
    from funnels.services import Visitor

    return Visitor(
        ip_address=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:500],
    )


def _render_page(request, page: WebinarPage, *, status: int = 200, **overrides) -> HttpResponse:
    request.is_preview = getattr(request, "is_preview", False)
    context = page.get_context(request)
    context.update(overrides)
    response = TemplateResponse(request, page.get_template(request), context, status=status)
    response.render()
    return response


def webinar_page_serve(request, page: WebinarPage, *args, **kwargs) -> HttpResponse:
    """Public, but a signed-in visitor sees their own registration: never shared-cached."""
    response = _render_page(request, page)
    if request.user.is_authenticated or request.GET.get("tz"):
        return _private(response)
    return response


def _message(
    request, *, title: str, message: str, status: int, page: WebinarPage | None = None, **extra
) -> HttpResponse:
    context = {"title": title, "message": message, "webinar": page, **extra}
    return _private(render(request, "webinars/message.html", context, status=status))


def _refused(request, error: exceptions.JoinRefused) -> HttpResponse:
    return _message(request, title=error.title, message=str(error.message), status=error.status)


# --- Registration -------------------------------------------------------------------------


def _form_error(request, page, form, error: exceptions.WebinarError, status: int, **extra):
    return _private(
        _render_page(
            request,
            page,
            status=status,
            form_error=str(error.message),
            bound_form=form,
            **extra,
        )
    )


@same_origin_post  # the form is on edge-cached pages: no per-visitor CSRF token there
@require_POST
def register(request, page_id: int):
    """The webinar page's form: a free registration, or a ticket holder's session pick."""
    page = WebinarPage.objects.live().public().filter(pk=page_id).first()
    if page is None:
        raise Http404("No such webinar.")
    form = RegistrationForm(request.POST)
    if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_FORM_BODY:
        return _form_error(request, page, form, exceptions.WebinarError(), 413)
    if page.is_paid:
        return _ticket_choose(request, page, form)
    if not form.is_valid():
        return _form_error(
            request,
            page,
            form,
            exceptions.WebinarError(
                _("Please enter a valid email address, like name@example.com.")
            ),
            400,
        )
    if form.is_honeypot_filled():
        messages.success(request, _("Thank you. Check your inbox for your confirmation."))
        return HttpResponseRedirect(page.url)
    elapsed = form.seconds_since_render()
    if elapsed is None or elapsed < MIN_SECONDS_TO_SUBMIT:
        return _form_error(
            request,
            page,
            form,
            exceptions.WebinarError(
                _(
                    "That was quicker than we expected. Please wait a moment and send the form again."
                )
            ),
            400,
        )
    ip = client_ip(request) or "unknown"
    n, w = settings.FUNNELS_OPTIN_EMAIL_LIMIT
    within = ratelimit.hit_all(
        [
            *(
                ratelimit.Limit(f"webinar-ip-{window}", ip, limit, window)
                for limit, window in settings.FUNNELS_OPTIN_IP_LIMITS
            ),
            ratelimit.Limit("webinar-email", form.cleaned_data["email"].strip().lower(), n, w),
        ]
    )
    if not within:
        return _form_error(
            request,
            page,
            form,
            exceptions.WebinarError(
                _("Too many registrations from here just now. Please wait a few minutes.")
            ),
            429,
        )
    data = form.cleaned_data
    try:
        placement = services.registration_free_submit(
            page=page,
            email=data["email"],
            name=data["name"],
            consent=data["consent"],
            time_zone=data["time_zone"],
            visitor=_visitor(request),
            occasion_id=data["occasion"],
            slot=data["slot"],
            waitlist=data["waitlist"],
            user=request.user,
        )
    except exceptions.SessionFull as error:
        return _form_error(
            request,
            page,
            form,
            error,
            409,
            full_occasion=error.occasion,
            alternative=error.alternative,
        )
    except exceptions.WebinarError as error:
        return _form_error(request, page, form, error, error.status)
    return _registered(request, page, placement)


def _registered(request, page, placement: services.Placement) -> HttpResponse:
    if placement.waitlisted:
        messages.info(
            request,
            _("You are on the waiting list. If a seat opens, we email you your personal link."),
        )
    else:
        when = selectors_when(placement.registration)
        messages.success(
            request,
            _("You're registered for %(when)s. Your personal link is in your inbox.")
            % {"when": when},
        )
    response = HttpResponseRedirect(page.url + "?registered=1")
    response.status_code = 303
    return _private(response)


def selectors_when(registration: Registration) -> str:
    from .emails import when_text

    return when_text(registration.occasion.starts_at, registration.zone)


def _ticket_choose(request, page, form):
    if not request.user.is_authenticated:
        return _private(redirect_to_login(page.url))
    form.is_valid()
    data = getattr(form, "cleaned_data", {})
    try:
        placement = services.registration_ticket_choose(
            page=page,
            user=request.user,
            occasion_id=data.get("occasion"),
            slot=data.get("slot", ""),
            time_zone=data.get("time_zone", ""),
            waitlist=bool(data.get("waitlist")),
        )
    except exceptions.SessionFull as error:
        return _form_error(
            request,
            page,
            form,
            error,
            409,
            full_occasion=error.occasion,
            alternative=error.alternative,
        )
    except exceptions.WebinarError as error:
        return _form_error(request, page, form, error, error.status)
    return _registered(request, page, placement)


# --- Personal links ------------------------------------------------------------------------


@never_cache
@require_safe
def join(request, token: str):
    """The personal join link: countdown before the doors open, the room during the
    session, a note after it. Every opening is recorded."""
    try:
        registration = links.registration_for_token(token, user=request.user)
    except exceptions.JoinRefused as error:
        return _refused(request, error)
    decision = selectors.join_decision(registration, user=request.user)
    page = registration.page
    state = selectors.JoinState
    if decision.state == state.SIGN_IN:
        return _private(redirect_to_login(request.get_full_path()))
    if decision.state in (state.CANCELLED, state.WITHDRAWN, state.WAITLISTED, state.NO_TICKET):
        title, message, status = {
            state.CANCELLED: (
                _("This session was cancelled"),
                _(
                    "The host cancelled this session. You can register for another one on the webinar's page."
                ),
                410,
            ),
            state.WITHDRAWN: (
                _("You gave back your seat"),
                _("This registration was cancelled. You can register again on the webinar's page."),
                410,
            ),
            state.WAITLISTED: (
                _("You are on the waiting list"),
                _("This session is full. If a seat opens, it is yours and we email you at once."),
                403,
            ),
            state.NO_TICKET: (
                _("Your ticket is no longer valid"),
                _("This ticket was refunded or cancelled, so it no longer opens the room."),
                403,
            ),
        }[decision.state]
        return _message(request, title=title, message=message, status=status, page=page)

    visitor = _visitor(request)
    if decision.state == state.EARLY:
        services.join_open_record(
            registration=registration, outcome=JoinOpen.Outcome.EARLY, visitor=visitor
        )
        return _private(
            render(
                request,
                "webinars/countdown.html",
                {
                    "webinar": page,
                    "registration": registration,
                    "decision": decision,
                    "starts_in": decision.starts_at - timezone.now(),
                    "when": selectors_when(registration),
                    "calendar_url": links.registrant_url(
                        "webinars:calendar", registration, absolute=False
                    ),
                },
            )
        )
    if decision.state == state.ENDED:
        services.join_open_record(
            registration=registration, outcome=JoinOpen.Outcome.ENDED, visitor=visitor
        )
        replay_open = selectors.replay_open_for(registration)
        return _message(
            request,
            title=_("This session has ended"),
            message=(
                _("Thank you for coming. The replay is ready for you.")
                if replay_open
                else _("This session is over.")
            ),
            status=410,
            page=page,
            replay_url=(
                links.registrant_url("webinars:replay", registration, absolute=False)
                if replay_open
                else ""
            ),
        )
    # Admitted.
    target = selectors.join_target(registration)
    if registration.occasion.kind == registration.occasion.Kind.EVERGREEN:
        target = links.registrant_url("webinars:replay", registration, absolute=False)
    if not target:
        return _message(
            request,
            title=_("The room is not open yet"),
            message=_("The host has not opened the room yet. Please reload this page in a minute."),
            status=503,
            page=page,
        )
    services.join_open_record(
        registration=registration, outcome=JoinOpen.Outcome.ADMITTED, visitor=visitor
    )
    return _private(HttpResponseRedirect(target))


@never_cache
@require_safe
def calendar_file(request, token: str):
    """The registration's .ics, as it stands now (a moved session has a higher SEQUENCE;
    a cancelled one is a CANCEL)."""
    try:
        registration = links.registration_for_token(token, user=request.user)
    except exceptions.JoinRefused as error:
        return _refused(request, error)
    from email.utils import parseaddr

    from core.services import default_from_email

    body = calendar.ics_bytes(
        registration,
        join_url=links.registrant_url("webinars:join", registration),
        # iTIP wants an ORGANIZER on a REQUEST: the address our emails come from.
        organizer_email=parseaddr(default_from_email())[1],
    )
    response = HttpResponse(body, content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="webinar.ics"'
    return _private(response)


@never_cache
@require_safe
def replay(request, token: str):
    """The replay (or, for an evergreen slot, the show) for the registrant: signed in,
    within their window."""
    try:
        registration = links.registration_for_token(token, user=request.user)
    except exceptions.JoinRefused as error:
        return _refused(request, error)
    page = registration.page
    if not page.replay_video_id:
        return _message(
            request,
            title=_("No replay yet"),
            message=_("The recording is not online yet. We email you when it is."),
            status=404,
            page=page,
        )
    now = timezone.now()
    window = selectors.replay_window(registration)
    if registration.status != Registration.Status.REGISTERED or registration.occasion.is_cancelled:
        return _message(
            request,
            title=_("The replay is not available"),
            message=_("This registration no longer gives access to the replay."),
            status=403,
            page=page,
        )
    if now < window.opens_at:
        return _message(
            request,
            title=_("Not yet"),
            message=_("It opens when your session starts: %(when)s.")
            % {"when": selectors_when(registration)},
            status=403,
            page=page,
        )
    if window.closes_at is not None and now >= window.closes_at:
        return _message(
            request,
            title=_("The replay has closed"),
            message=_(
                "The replay was available for %(days)s days after your session and has now "
                "closed. Ticket holders keep it for good."
            )
            % {"days": page.replay_days},
            status=410,
            page=page,
            ticket_offer=page.ticket_offer,
        )
    if not request.user.is_authenticated:
        # The player streams to signed-in viewers only; an account for this address is
        # made if needed, and the sign-in code goes to the registrant's own mailbox.
        services.replay_account_ensure(registration=registration)
        return _private(
            render(
                request,
                "webinars/replay_sign_in.html",
                {"webinar": page, "registration": registration, "next": request.get_full_path()},
                status=401,
            )
        )
    services.replay_view_record(page=page, registration=registration, user=request.user)
    return _private(
        render(
            request,
            "webinars/replay.html",
            {
                "webinar": page,
                "registration": registration,
                "video": page.replay_video,
                "closes_at": window.closes_at,
            },
        )
    )


@never_cache
@require_http_methods(["GET", "POST"])
def cancel(request, token: str):
    """GET asks (mail scanners follow links), POST gives the seat back."""
    try:
        registration = links.registration_for_token(token, user=request.user)
    except exceptions.JoinRefused as error:
        return _refused(request, error)
    page = registration.page
    if request.method == "GET":
        return _private(
            render(
                request,
                "webinars/cancel.html",
                {
                    "webinar": page,
                    "registration": registration,
                    "when": selectors_when(registration),
                },
            )
        )
    services.registration_cancel(registration=registration)
    return _message(
        request,
        title=_("Your seat is cancelled"),
        message=_("Thank you for letting us know: your seat goes to someone on the waiting list."),
        status=200,
        page=page,
    )


@never_cache
@require_http_methods(["GET", "POST"])
def confirm(request, token: str):
    """The double opt-in link of a registration email."""
    from funnels import exceptions as funnel_exceptions
    from funnels import selectors as funnel_selectors

    if request.method == "GET":
        problem = funnel_selectors.confirm_token_problem(token)
        if problem is not None and not isinstance(problem, funnel_exceptions.TokenUsed):
            return _message(
                request, title=_("This link does not work"), message=problem.message, status=400
            )
        return _private(
            render(request, "webinars/confirm.html", {"token": token, "used": problem is not None})
        )
    try:
        services.marketing_confirm(token=token, visitor=_visitor(request))
    except funnel_exceptions.TokenUsed:
        pass
    except funnel_exceptions.FunnelError as error:
        return _message(
            request, title=_("This link does not work"), message=error.message, status=400
        )
    return _message(
        request,
        title=_("Thank you!"),
        message=_("Your address is confirmed. We will keep you posted."),
        status=200,
    )
