"""Who may keep a copy of a response: the one place that decides it.

Public pages (landing, course, catalog, home — settings.EDGE_CACHE_PAGE_MODELS) answer an
anonymous visitor with `Cache-Control: public, max-age=…, s-maxage=…`, so nginx or a CDN
serves the launch-day crowd and Wagtail's frontend cache purges the copy when a creator
publishes. Everything else that states no policy of its own is `private, no-store`.

A response is public only if nothing in it can belong to one visitor: a GET or HEAD
answered 200 with a page of a listed type, for a request that carries no session and no
language cookie, by a response that sets no cookie (a CSRF token in the page sets one)
and used no CSP nonce. Views that set their own Cache-Control (never_cache, the static
and protected files) keep it.
"""

from django.conf import settings
from django.utils.cache import patch_cache_control

PAGE_ATTR = "_edge_cache_page"


def page_served(page, request) -> None:
    """Wagtail's before_serve_page hook (core/wagtail_hooks.py): note which page this is."""
    setattr(request, PAGE_ATTR, page)


def page_is_public_type(page) -> bool:
    label = page.specific_class._meta.label_lower if page.specific_class else ""
    return label in {name.lower() for name in settings.EDGE_CACHE_PAGE_MODELS}


def is_personal(request, response) -> bool:
    if getattr(getattr(request, "user", None), "is_authenticated", False):
        return True
    if settings.SESSION_COOKIE_NAME in request.COOKIES:
        return True
    if settings.LANGUAGE_COOKIE_NAME in request.COOKIES:
        return True
    if response.cookies:
        return True
    # A nonce in the header and page is only worth anything if no one else gets it.
    return getattr(request, "_csp_nonce", None) is not None


def is_edge_cacheable(request, response) -> bool:
    if not settings.EDGE_CACHE_MAX_AGE and not settings.EDGE_CACHE_S_MAXAGE:
        return False
    if request.method not in ("GET", "HEAD") or response.status_code != 200:
        return False
    page = getattr(request, PAGE_ATTR, None)
    if page is None or not page_is_public_type(page):
        return False
    if getattr(request, "is_preview", False):
        return False
    return not is_personal(request, response)


class CachePolicyMiddleware:
    """Placed first in MIDDLEWARE so it sees every cookie the others set."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.has_header("Cache-Control"):
            return response
        if is_edge_cacheable(request, response):
            patch_cache_control(
                response,
                public=True,
                max_age=settings.EDGE_CACHE_MAX_AGE,
                s_maxage=settings.EDGE_CACHE_S_MAXAGE,
            )
        else:
            patch_cache_control(response, private=True, no_store=True)
        return response
