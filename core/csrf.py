"""CSRF protection for forms on pages an edge cache may serve to everyone.

A cached page cannot carry a per-visitor CSRF token (nor set the cookie it pairs with), so
the few forms such a page holds — the opt-in form and the language switcher — are checked
by where the post comes from instead: browsers send `Origin` with every POST (and a
cross-site page cannot forge it); an old browser that sends only `Referer` is judged by
that. A post that names neither is refused, as Django refuses a token-less post.
The opt-in form keeps its own bot defences on top (signed render time, honeypot, rate
limits: funnels/views.py).
"""

from functools import wraps
from urllib.parse import urlsplit

from django.conf import settings
from django.middleware.csrf import REASON_BAD_ORIGIN, REASON_BAD_REFERER, REASON_NO_REFERER
from django.urls import get_callable
from django.utils.http import is_same_domain
from django.views.decorators.csrf import csrf_exempt

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


def _trusted(origin: str, request) -> bool:
    if origin == f"{request.scheme}://{request.get_host()}":
        return True
    parts = urlsplit(origin)
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        allowed = urlsplit(trusted)
        if allowed.scheme != parts.scheme:
            continue
        if "*" in allowed.netloc:
            if is_same_domain(parts.netloc, allowed.netloc.replace("*", "", 1)):
                return True
        elif allowed.netloc == parts.netloc:
            return True
    return False


def origin_problem(request) -> str | None:
    """None when the request may change state; otherwise Django's reason text."""
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return None if _trusted(origin, request) else REASON_BAD_ORIGIN % origin
    referer = request.headers.get("Referer")
    if not referer:
        return REASON_NO_REFERER
    parts = urlsplit(referer)
    if not parts.scheme or not parts.netloc:
        return REASON_BAD_REFERER % referer
    where = f"{parts.scheme}://{parts.netloc}"
    return None if _trusted(where, request) else REASON_BAD_REFERER % where


def same_origin_post(view):
    """Instead of Django's token check: the post must come from a page of this site."""

    @csrf_exempt
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        problem = origin_problem(request)
        if problem:
            return get_callable(settings.CSRF_FAILURE_VIEW)(request, reason=problem)
        return view(request, *args, **kwargs)

    wrapped.same_origin_post = True
    return wrapped
