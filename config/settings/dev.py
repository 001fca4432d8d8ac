"""The demo and local development: SQLite, files under var/, mail to var/mail, no server."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# A fixed key is acceptable only here: this module refuses to load with DEBUG off.
SECRET_KEY = SECRET_KEY or "dev-only-insecure-key-never-use-in-production"  # noqa: F405
if not DEBUG:
    raise RuntimeError("config.settings.dev is for local use; use config.settings.production.")
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}

# --- Stripe: a TEST checkout on the stand-in unless real keys are given ----------------------
# Without STRIPE_SECRET_KEY in the environment the demo pays through the Stripe stand-in from
# tests/stripe_standin (infra/Procfile.demo starts it on this port): no real payment is ever
# taken, and the buy pages say so. The key and signing secret below are not secrets: they only
# open the local stand-in. Give STRIPE_SECRET_KEY=sk_test_… and STRIPE_WEBHOOK_SECRET to use
# Stripe's own test mode instead (README, "Payments and Stripe"). production.py never reads
# this module, and base.py has no stand-in default.
STRIPE_STANDIN_PORT = env.int("LODESTONE_DEMO_STRIPE_PORT", default=12111)
if not STRIPE_SECRET_KEY:  # noqa: F405
    STRIPE_API_BASE = STRIPE_API_BASE or f"http://127.0.0.1:{STRIPE_STANDIN_PORT}"  # noqa: F405
    STRIPE_SECRET_KEY = "sk_test_lodestone_demo_standin"  # noqa: S105 (opens the stand-in only)
    STRIPE_WEBHOOK_SECRET = STRIPE_WEBHOOK_SECRET or "whsec_lodestone_demo_standin"  # noqa: F405
