"""Test settings: PostgreSQL and Redis (real servers), fast hashing, static via finders."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="test-only-secret-key")
DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/lodestone")
}
DATABASES["default"]["ATOMIC_REQUESTS"] = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
# In-process tests read django.core.mail.outbox; the server processes the harness starts
# (gunicorn, the Celery worker) get EMAIL_URL pointing at its SMTP sink.
if not env.str("EMAIL_URL", default=""):
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
ALLOWED_HOSTS = ["*"]
# Per-process and empty at start, so rate limits from one run never leak into the next.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Tests replace a protected file under the same name within milliseconds and expect the next
# download to see it; the recheck window itself is tested with its own setting
# (tests/media/test_stamping_downloads.py).
DOWNLOAD_SOURCE_RECHECK_SECONDS = 0
# Likewise, tests publish a page and post its form at once; the trust window has its own
# test (tests/funnels/test_signup_processing.py).
FUNNELS_FORM_SPEC_TRUST_SECONDS = 0
