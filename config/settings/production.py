"""Production: every secret from the environment, no defaults, HTTPS assumed."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env


def _required(name: str) -> str:
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set. Production settings refuse to start without it; "
            f"see the README's 'Configuration' table."
        )
    return value


DEBUG = False
SECRET_KEY = _required("DJANGO_SECRET_KEY")
if len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 50 random characters.")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[])
if not ALLOWED_HOSTS:
    _required("DJANGO_ALLOWED_HOSTS")
_required("DATABASE_URL")
if env.str("STRIPE_SECRET_KEY", default=""):
    # Without the signing secret every webhook would be refused and no order fulfilled
    # unless the buyer returned to the success page.
    _required("STRIPE_WEBHOOK_SECRET")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
TRUSTED_PROXY_COUNT = env.int("LODESTONE_TRUSTED_PROXY_COUNT", default=1)
PROTECTED_SERVE_METHOD = env.str("LODESTONE_PROTECTED_SERVE", default="nginx")
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)  # noqa: F405
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # noqa: F405
# Behind HTTPS every http:// subresource would be mixed content: the browser upgrades it.
CONTENT_SECURITY_POLICY["DIRECTIVES"]["upgrade-insecure-requests"] = True  # noqa: F405
LODESTONE_ADMIN_CSP["upgrade-insecure-requests"] = True  # noqa: F405
