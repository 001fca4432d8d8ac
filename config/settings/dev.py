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
