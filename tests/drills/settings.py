"""Settings of the app processes a fault drill starts: production's, as a launch runs them
(Redis cache and broker, persistent database connections with health checks, 503 on a
database outage), except that static files are read from the source folders, so no drill
waits for a collectstatic run."""

from config.settings.production import *  # noqa: F403
from config.settings.production import STORAGES

STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
