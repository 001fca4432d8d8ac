"""gunicorn settings for the harness's web server (passed with -c).

The master runs under `setpriv --pdeathsig`, but that does not pass on to the workers it
forks: they would linger until they notice the master is gone. Give them the same
signal, so a killed test session leaves no worker behind.
"""

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def post_fork(server, worker):
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def pre_request(worker, req):
    # Transactional tests flush the database after each test, and the flush re-creates
    # the content types under new ids; this long-lived process must not write the ids it
    # cached during an earlier test (Wagtail's reference index does, on every save of a
    # page, an offer, a snippet: a foreign-key error and a 500).
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()
