"""Purging nginx's cache of public pages when a creator publishes (Wagtail frontend cache).

nginx keys a cached page by host, path and the visitor's language as nginx itself picked
it from Accept-Language (infra/nginx/lodestone.conf passes that one language on to
Django, so the key and the page agree). A page therefore sits in the cache once per
language, and one PURGE per configured language removes every copy. A 404 from the purge
module means that copy was not cached: nothing to do.
"""

import logging
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import Request, urlopen

from django.conf import settings
from wagtail.contrib.frontend_cache.backends.base import BaseBackend

logger = logging.getLogger("wagtail.frontendcache")

PURGE_TIMEOUT = 5


class _Purge(Request):
    def get_method(self):
        return "PURGE"


class NginxPurgeBackend(BaseBackend):
    def __init__(self, params):
        super().__init__(params)
        location = urlsplit(params.pop("LOCATION"))
        self.scheme, self.netloc = location.scheme, location.netloc

    def purge_requests(self, url: str) -> list[Request]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        target = urlunsplit([self.scheme, self.netloc, parts.path or "/", parts.query, ""])
        return [
            _Purge(
                target,
                headers={"Host": host, "Accept-Language": code, "User-Agent": "Lodestone-purge"},
            )
            for code, _name in settings.LANGUAGES
        ]

    def purge(self, url: str) -> None:
        for request in self.purge_requests(url):
            try:
                urlopen(request, timeout=PURGE_TIMEOUT)  # noqa: S310 - our configured LOCATION
            except HTTPError as error:
                if error.code != 404:
                    logger.error(
                        "Could not purge %s (%s): HTTP %s", url, request.headers, error.code
                    )
            except (URLError, OSError) as error:
                logger.error("Could not purge %s: %s", url, error)
