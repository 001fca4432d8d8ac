"""Content-Security-Policy (django-csp): one strict policy for the site, a wider one for the
Wagtail admin, both built from settings.

The public site has no inline script or <style> element: every script and stylesheet is a
static file, so `script-src 'self'` holds without nonces, and a page stays the same bytes
for every visitor (edge caching, core/cache_policy.py). A template that ever needs an inline
script marks it `nonce="{{ request.csp_nonce }}"`; django-csp then adds the nonce to the
header, and the cache policy keeps that response private (a shared nonce is no nonce).

This module is imported by the settings: nothing here may import Django models.
"""

from urllib.parse import urlsplit

from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts

BLOB = "blob:"
DATA = "data:"

STRIPE_ORIGINS = ("https://checkout.stripe.com", "https://billing.stripe.com")
# The hero block's EmbedBlock takes YouTube and Vimeo URLs (funnels/blocks.py).
DEFAULT_FRAME_ORIGINS = (
    "https://www.youtube.com",
    "https://www.youtube-nocookie.com",
    "https://player.vimeo.com",
)


def origin(url: str | None) -> str | None:
    """scheme://host[:port] of a URL, or None for an empty or relative one."""
    if not url:
        return None
    parts = urlsplit(url if "//" in url else f"https://{url}")
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def s3_origins(
    *, bucket: str, endpoint_url: str | None, region: str, custom_domain: str | None = None
) -> list[str]:
    """Where a browser fetches presigned S3 URLs from (segments, posters, downloads)."""
    if not bucket:
        return []
    found = [origin(endpoint_url)] if endpoint_url else []
    if not endpoint_url:
        # AWS itself: path-style and virtual-hosted URLs, global and regional.
        found += [
            "https://s3.amazonaws.com",
            f"https://s3.{region}.amazonaws.com",
            f"https://{bucket}.s3.amazonaws.com",
            f"https://{bucket}.s3.{region}.amazonaws.com",
        ]
    if custom_domain:
        found.append(origin(custom_domain))
    return list(dict.fromkeys(o for o in found if o))


def _unique(*groups) -> list[str]:
    return list(dict.fromkeys(item for group in groups for item in group if item))


def site_policy(
    *,
    storage_origins: list[str],
    stripe_api_base: str = "",
    frame_origins: tuple[str, ...] | list[str] = DEFAULT_FRAME_ORIGINS,
    upgrade_insecure_requests: bool = False,
) -> dict:
    """The public site's policy.

    form-action lists Stripe: the buy and billing forms post to us and we answer with a
    redirect to Stripe, and browsers apply form-action to every hop of that redirect.
    With the test stand-in (STRIPE_API_BASE) its own origin hosts the checkout page.
    Style attributes stay allowed (style-src-attr): the video player sizes itself with
    one, and an attribute can neither load nor run anything; <style> elements and
    stylesheets must come from us.
    """
    storage = list(storage_origins)
    return {
        "default-src": [SELF],
        # NONCE becomes 'nonce-…' only on a response whose template asked for one.
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": _unique([SELF, DATA], storage),
        # hls.js feeds the <video> from Media Source blobs; Safari's native HLS and
        # hls.js's segment requests go to presigned S3 URLs when storage is S3.
        "media-src": _unique([SELF, BLOB], storage),
        "connect-src": _unique([SELF], storage),
        "worker-src": [SELF, BLOB],
        "font-src": [SELF],
        "frame-src": _unique([SELF], frame_origins),
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": _unique([SELF], STRIPE_ORIGINS, [origin(stripe_api_base)]),
        "frame-ancestors": [SELF],
        "upgrade-insecure-requests": upgrade_insecure_requests,
    }


def admin_policy(site: dict) -> dict:
    """The Wagtail admin's policy: its own templates and widgets still carry inline
    scripts and styles, so those are allowed there, and only there. Everything it may
    load or frame is the public site's list (the preview frame is the site itself)."""
    return {
        **site,
        "script-src": [SELF, UNSAFE_INLINE],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": _unique(site["img-src"], [BLOB]),
    }


class SiteCSPMiddleware(CSPMiddleware):
    """django-csp's middleware with the admin's policy for the admin's paths.

    Settings: CONTENT_SECURITY_POLICY (the site's, as django-csp reads it),
    LODESTONE_ADMIN_CSP (the admin's directives) and LODESTONE_ADMIN_PATH_PREFIX.
    A view's own @csp_update/@csp_replace still applies on top of either.
    """

    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        from django.conf import settings

        parts = super().get_policy_parts(request, response, report_only)
        prefix = getattr(settings, "LODESTONE_ADMIN_PATH_PREFIX", "/admin/")
        if (
            not report_only
            and parts.config is None
            and request.path_info.startswith(prefix)
            and getattr(settings, "LODESTONE_ADMIN_CSP", None)
        ):
            parts.config = dict(settings.LODESTONE_ADMIN_CSP)
        return parts
