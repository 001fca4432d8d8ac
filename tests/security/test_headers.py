"""Security headers: the Content-Security-Policy of the site and of the admin, frame and
referrer policies, and production's HTTPS policy (HSTS, secure cookies)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from django.test import Client

from core import csp

ROOT = Path(__file__).resolve().parents[2]


def directives(header: str) -> dict[str, list[str]]:
    found = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            found[words[0]] = words[1:]
    return found


def test_public_pages_get_the_strict_policy(world):
    response = Client().get(world.landing.url)

    policy = directives(response["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert "blob:" in policy["media-src"]
    assert "blob:" in policy["worker-src"]
    assert policy["form-action"][:3] == [
        "'self'",
        "https://checkout.stripe.com",
        "https://billing.stripe.com",
    ]


def test_frame_referrer_and_sniffing_policies_are_sent(world):
    response = Client().get(world.landing.url)

    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert response["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_error_pages_carry_the_policy_too(world):
    response = Client().get("/no-such-page/")

    assert response.status_code == 404
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_the_admin_gets_its_own_wider_policy_and_only_the_admin(world):
    client = Client()
    client.force_login(world.staff)

    admin = directives(client.get("/admin/")["Content-Security-Policy"])
    site = directives(client.get(world.landing.url)["Content-Security-Policy"])

    assert admin["script-src"] == ["'self'", "'unsafe-inline'"]
    assert admin["frame-ancestors"] == ["'self'"]
    assert admin["object-src"] == ["'none'"]
    assert site["script-src"] == ["'self'"]


def test_s3_storage_and_a_cdn_are_allowed_by_origin_only():
    origins = csp.s3_origins(
        bucket="lodestone",
        endpoint_url="https://s3.eu.example:9000/some/path",
        region="eu-west-1",
        custom_domain="cdn.example",
    )

    policy = csp.site_policy(storage_origins=origins)

    assert origins == ["https://s3.eu.example:9000", "https://cdn.example"]
    for directive in ("img-src", "media-src", "connect-src"):
        assert "https://s3.eu.example:9000" in policy[directive]
    assert "https://s3.eu.example:9000" not in policy["script-src"]


def test_aws_without_an_endpoint_allows_the_buckets_own_hosts():
    origins = csp.s3_origins(bucket="academy", endpoint_url=None, region="eu-north-1")

    assert "https://academy.s3.eu-north-1.amazonaws.com" in origins
    assert "https://s3.eu-north-1.amazonaws.com" in origins


def test_no_bucket_means_no_storage_origin():
    assert csp.s3_origins(bucket="", endpoint_url="http://127.0.0.1:8333", region="x") == []


def test_the_stripe_stand_in_hosts_the_checkout_when_configured():
    policy = csp.site_policy(storage_origins=[], stripe_api_base="http://127.0.0.1:12111/v1")

    assert "http://127.0.0.1:12111" in policy["form-action"]


def test_a_template_asking_for_a_nonce_gets_one_in_header_and_page(rf):
    from csp.middleware import CSPMiddleware
    from django.http import HttpResponse

    request = rf.get("/")

    def view(request):
        return HttpResponse(f'<script nonce="{request.csp_nonce}">1</script>')

    response = CSPMiddleware(view)(request)

    nonce = request._csp_nonce
    assert f"'nonce-{nonce}'" in directives(response["Content-Security-Policy"])["script-src"]
    assert f'nonce="{nonce}"'.encode() in response.content


# --- Production settings -------------------------------------------------------------------

PRODUCTION_PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
client = Client(raise_request_exception=False)
https = client.get("/healthz", secure=True, HTTP_HOST="academy.lodestone-demo.fi")
http = client.get("/healthz", HTTP_HOST="academy.lodestone-demo.fi")
print(json.dumps({
    "hsts": https.get("Strict-Transport-Security"),
    "csp": https.get("Content-Security-Policy"),
    "http_status": http.status_code,
    "http_location": http.get("Location"),
    "session_secure": settings.SESSION_COOKIE_SECURE,
    "csrf_secure": settings.CSRF_COOKIE_SECURE,
    "session_httponly": settings.SESSION_COOKIE_HTTPONLY,
}))
"""


def test_production_sends_hsts_over_https_redirects_http_and_secures_cookies():
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "STRIPE_", "DATABASE_URL", "AWS_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": "k" * 60,
            "DJANGO_ALLOWED_HOSTS": "academy.lodestone-demo.fi",
            # Nothing listens here: /healthz answers 503, with every header all the same.
            "DATABASE_URL": "postgres://postgres@127.0.0.1:1/none",
        }
    )

    result = subprocess.run(
        [sys.executable, "-c", PRODUCTION_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert seen["http_status"] == 301
    assert seen["http_location"] == "https://academy.lodestone-demo.fi/healthz"
    assert seen["session_secure"] and seen["csrf_secure"] and seen["session_httponly"]
    assert "upgrade-insecure-requests" in seen["csp"]
