"""HTTP edges of the funnel: they parse, call a service, and turn errors into messages."""

import json

from django.conf import settings
from django.db import transaction
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from core.csrf import same_origin_post
from core.http import client_ip

from . import exceptions, ratelimit, selectors, services
from .forms import MIN_SECONDS_TO_SUBMIT, OptInForm
from .models import LandingPage

MAX_OPTIN_BODY = 16 * 1024


def visitor_from(request, time_zone: str = "") -> services.Visitor:
    return services.Visitor(
        ip_address=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:500],
        time_zone=time_zone,
    )


def wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _optin_error(request, page, form_id, form, error: exceptions.FunnelError, status: int):
    if wants_json(request):
        return JsonResponse({"ok": False, "message": error.message}, status=status)
    response = page.render(
        request,
        context_overrides={
            "optin_errors": {form_id: error.message},
            "optin_bound_id": form_id,
            "optin_bound_form": form,
        },
    )
    response.status_code = status
    return response


def _page_error(request, page_id: int, form_id, form, error: exceptions.FunnelError, status: int):
    if wants_json(request):
        return JsonResponse({"ok": False, "message": error.message}, status=status)
    # Without JavaScript the visitor sees the page again with the message at the form;
    # the page is read in full only on this rare path.
    page = LandingPage.objects.live().public().filter(pk=page_id).first()
    if page is None:
        return render(
            request, "funnels/link_problem.html", {"message": error.message}, status=status
        )
    return _optin_error(request, page, form_id, form, error, status)


# Outside ATOMIC_REQUESTS: the one INSERT commits by itself, with no BEGIN/COMMIT around it.
@transaction.non_atomic_requests
@same_origin_post  # the form is on edge-cached pages: no per-visitor CSRF token there
@require_http_methods(["GET", "POST"])
def optin_post(request, page_id: int, form_id):
    """The opt-in form's action: a plain URL rather than a route under the page, so a
    launch-day burst of sign-ups skips Wagtail's page serving.

    The request checks what the visitor can fix (address, consent, bot traps, rate limits),
    stores the sign-up in one row and answers; a Celery task does the rest
    (funnels.tasks_signups). The form definition comes from a per-revision cache.
    """
    form_id = str(form_id)
    specs = selectors.optin_form_specs(page_id=page_id)
    if specs is None:
        return render(
            request,
            "funnels/link_problem.html",
            {"message": exceptions.FormNotFound.message},
            status=404,
        )
    if request.method != "POST":
        page = LandingPage.objects.filter(pk=page_id).first()
        return redirect(page.url if page else "/")
    form = OptInForm(request.POST)
    # The header, not request.body: the CSRF check has already read the stream.
    if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_OPTIN_BODY:
        error = exceptions.FunnelError("That form was too large.")
        return _page_error(request, page_id, form_id, form, error, 413)
    if not form.is_valid():
        return _page_error(request, page_id, form_id, form, exceptions.InvalidEmail(), 400)
    spec = specs.get(form_id)
    if form.is_honeypot_filled():
        # Bots get the same answer as people, and nothing is stored.
        return _optin_success(request, spec.thanks_url if spec else "/")
    if spec is None:
        return _page_error(request, page_id, form_id, form, exceptions.FormNotFound(), 400)
    elapsed = form.seconds_since_render()
    # A missing or forged timestamp means the form was not loaded from our page.
    if elapsed is None or elapsed < MIN_SECONDS_TO_SUBMIT:
        return _page_error(request, page_id, form_id, form, exceptions.SuspectedBot(), 400)

    ip = client_ip(request) or "unknown"
    n, w = settings.FUNNELS_OPTIN_EMAIL_LIMIT
    within = ratelimit.hit_all(
        [
            *(
                ratelimit.Limit(f"optin-ip-{window}", ip, limit, window)
                for limit, window in settings.FUNNELS_OPTIN_IP_LIMITS
            ),
            ratelimit.Limit("optin-email", form.cleaned_data["email"].strip().lower(), n, w),
        ]
    )
    if not within:
        return _page_error(request, page_id, form_id, form, exceptions.RateLimited(), 429)

    data = form.cleaned_data
    try:
        services.signup_receive(
            spec=spec,
            email=data["email"],
            name=data["name"],
            consent=data["consent"],
            visitor=visitor_from(request, data["time_zone"]),
            attribution=services.Attribution(
                **{k: data[k] for k in services.Attribution.__dataclass_fields__}
            ),
            dedupe_key=services.signup_dedupe_key(
                email=data["email"],
                page_id=page_id,
                form_id=form_id,
                rendered_at=data["rendered_at"],
            ),
        )
    except exceptions.FunnelError as error:
        return _page_error(request, page_id, form_id, form, error, 400)
    return _optin_success(request, spec.thanks_url)


def _optin_success(request, thanks_url: str):
    message = "Almost there — check your inbox. We have sent you an email with the next step."
    if wants_json(request):
        return JsonResponse({"ok": True, "message": message})
    return HttpResponseRedirect(thanks_url)


def _token_error(request, error: exceptions.FunnelError, status: int = 400):
    return render(request, "funnels/link_problem.html", {"message": error.message}, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
def confirm(request, token: str):
    """GET shows a button (mail scanners follow links; they must not confirm anyone);
    the page submits it by itself when JavaScript runs. POST confirms."""
    if request.method == "GET":
        problem = selectors.confirm_token_problem(token)
        if isinstance(problem, exceptions.TokenUsed):
            return render(
                request, "funnels/confirmed.html", {"already": True, "message": problem.message}
            )
        if problem:
            return _token_error(request, problem)
        return render(request, "funnels/confirm.html", {"token": token})
    try:
        result = services.subscriber_confirm(token=token, visitor=visitor_from(request))
    except exceptions.TokenUsed as error:
        return render(
            request, "funnels/confirmed.html", {"already": True, "message": error.message}
        )
    except exceptions.FunnelError as error:
        return _token_error(request, error)
    download_url = (
        services.magnet_download_url(result.subscriber, result.magnet, absolute=False)
        if result.magnet
        else None
    )
    return render(
        request,
        "funnels/confirmed.html",
        {"subscriber": result.subscriber, "magnet": result.magnet, "download_url": download_url},
    )


# magnet_download is the transaction (no savepoints inside it, see media.downloads); an
# error page is rendered after it has rolled back.
@transaction.non_atomic_requests
@never_cache
def download(request, token: str):
    from media.downloads import http_status
    from media.exceptions import DeliveryError

    try:
        _delivery, response = services.magnet_download(
            token=token, visitor=visitor_from(request), request=request
        )
    except exceptions.FunnelError as error:
        return _token_error(request, error, status=403)
    except DeliveryError as error:
        status = http_status(error)
        problem = render(
            request, "funnels/link_problem.html", {"message": str(error)}, status=status
        )
        if status == 503:
            problem["Retry-After"] = "60"
        return problem
    return response


@csrf_exempt  # RFC 8058 one-click: mail providers POST without our CSRF token; the link is the key.
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    try:
        subscriber = services.subscriber_from_link("funnels:unsubscribe", token)
    except exceptions.FunnelError as error:
        return _token_error(request, error)
    if request.method == "GET":
        return render(
            request, "funnels/unsubscribe.html", {"subscriber": subscriber, "done": False}
        )
    one_click = request.POST.get("List-Unsubscribe") == "One-Click"
    services.subscriber_unsubscribe(
        subscriber=subscriber,
        visitor=visitor_from(request),
        source="one-click" if one_click else "link",
    )
    if one_click:
        return HttpResponse("Unsubscribed.", content_type="text/plain")
    return render(request, "funnels/unsubscribe.html", {"subscriber": subscriber, "done": True})


@never_cache
@require_http_methods(["GET", "POST"])
def my_data(request, token: str):
    """A subscriber's own page: download everything we hold, or erase it."""
    try:
        subscriber = services.subscriber_from_link("funnels:my_data", token)
    except exceptions.FunnelError as error:
        return _token_error(request, error)
    action = request.POST.get("action")
    if request.method == "POST" and action == "export":
        data = services.subscriber_export(subscriber=subscriber)
        response = HttpResponse(
            json.dumps(data, ensure_ascii=False, indent=2),
            content_type="application/json; charset=utf-8",
        )
        response["Content-Disposition"] = 'attachment; filename="my-data.json"'
        return response
    if request.method == "POST" and action == "erase":
        if request.POST.get("confirm_email", "").strip().lower() != subscriber.email.lower():
            return render(
                request,
                "funnels/my_data.html",
                {
                    "subscriber": subscriber,
                    "token": token,
                    "erase_error": "Type your email address to confirm.",
                },
                status=400,
            )
        services.subscriber_erase(subscriber=subscriber)
        return render(request, "funnels/erased.html", {})
    return render(request, "funnels/my_data.html", {"subscriber": subscriber, "token": token})


@csrf_exempt  # a counter, nothing a forged request could abuse beyond inflating it
@require_POST
def visit(request, page_id: int):
    ip = client_ip(request) or "unknown"
    if ratelimit.hit("visit", f"{ip}:{page_id}", limit=1, window=1800):
        services.landing_page_visit(page_id=page_id, day=timezone.localdate())
    return HttpResponse(status=204)
