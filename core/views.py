import logging
import sys

from django.db import DatabaseError, connection
from django.http import HttpResponse, JsonResponse
from django.template import loader
from django.views.decorators.cache import never_cache
from django.views.defaults import server_error as django_server_error

logger = logging.getLogger(__name__)

# Seconds a client (or a CDN) is told to wait before trying again while a backing service
# is down; nginx and browsers honour Retry-After on a 503.
RETRY_AFTER_SECONDS = 30


@never_cache
def healthz(request):
    """For load balancers: 200 when the database answers, 503 when it does not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"database": "down"}, status=503)
    return JsonResponse({"database": "ok"})


def _service_unavailable(exc: BaseException) -> bool:
    """True for errors that mean a backing service is down rather than a bug: the database
    refusing or dropping connections (a restart, failover, too many clients)."""
    return isinstance(exc, DatabaseError) and not _is_programming_error(exc)


def _is_programming_error(exc: BaseException) -> bool:
    from django.db import DataError, IntegrityError, NotSupportedError, ProgrammingError

    return isinstance(exc, DataError | IntegrityError | NotSupportedError | ProgrammingError)


def server_error(request, template_name="500.html"):
    """handler500: a database outage answers 503 with a friendly page and Retry-After, so
    visitors, load balancers and Stripe's retries know to come back; any other error is a
    plain 500. Runs inside Django's exception handling, so the exception is at hand."""
    exc = sys.exc_info()[1]
    if exc is None or not _service_unavailable(exc):
        return django_server_error(request, template_name=template_name)
    logger.warning("Answering 503, the database is unavailable: %r", exc)
    if "application/json" in request.headers.get("Accept", ""):
        response = JsonResponse(
            {"ok": False, "message": "The site is busy; please try again in a minute."},
            status=503,
        )
    else:
        response = HttpResponse(loader.render_to_string("core/503.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response
