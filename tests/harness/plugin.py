"""The harness's fixtures: one real server each, started once per session on loopback.

Loaded from tests/conftest.py. Each server logs to a file under the session's tmp dir;
a test that fails while using a server gets that log's path and tail in its report.
"""

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from tests.stripe_standin import StripeStandin, stripe_standin_running

from .browser import CHROMIUM, CHROMIUM_ARGS
from .celery_worker import (
    Broker,
    CeleryWorker,
    app_publishing_to,
    celery_worker_running,
)
from .ports import free_port
from .preflight import TEST_REDIS_URL
from .processes import PROJECT_ROOT, STARTED
from .seaweedfs import S3Server, SeaweedFS, seaweedfs_started
from .smtp import SmtpSink
from .web import WebServer, gunicorn_running

if TYPE_CHECKING:
    from storages.backends.s3 import S3Storage

SERVER_SETTINGS = "config.settings.test"
# What the server processes verify Stripe's webhooks with (see `server_stripe`).
SERVER_STRIPE_WEBHOOK_SECRET = "whsec_lodestone_harness_servers_0000000000"
SCREENSHOT_PATH = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def harness_log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


# --- S3 ---------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _seaweedfs_booting(request, tmp_path_factory, harness_log_dir) -> Iterator[SeaweedFS | None]:
    """Start SeaweedFS first thing if a selected test needs it, so that it boots while
    pytest-django builds the test database (autouse session fixtures come first)."""
    if not any("seaweedfs" in getattr(item, "fixturenames", ()) for item in request.session.items):
        yield None
        return
    workdir = tmp_path_factory.mktemp("seaweedfs")
    with seaweedfs_started(workdir, harness_log_dir / "seaweedfs.log") as weed:
        yield weed


@pytest.fixture(scope="session")
def seaweedfs(_seaweedfs_booting, tmp_path_factory, harness_log_dir) -> Iterator[S3Server]:
    """SeaweedFS with one identity (SigV4 enforced) and an empty bucket."""
    if _seaweedfs_booting is not None:
        yield _seaweedfs_booting.ready()
        return
    # Requested in a way the look-ahead missed (getfixturevalue): start it now.
    workdir = tmp_path_factory.mktemp("seaweedfs")
    with seaweedfs_started(workdir, harness_log_dir / "seaweedfs.log") as weed:
        yield weed.ready()


@dataclass(frozen=True)
class ProtectedS3:
    storage: "S3Storage"
    server: S3Server
    max_age: int


@pytest.fixture
def s3_protected_storage(settings, seaweedfs) -> ProtectedS3:
    """Django's `protected` storage on SeaweedFS, as production configures it on S3."""
    from django.core.files.storage import storages

    max_age = 60
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": seaweedfs.storage_options(querystring_expire=max_age),
        },
    }
    settings.PROTECTED_URL_MAX_AGE = max_age
    return ProtectedS3(storage=storages["protected"], server=seaweedfs, max_age=max_age)


# --- Mail ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    """An SMTP server in this process; `.messages` are parsed EmailMessage objects.

    One sink serves the whole session, so match messages on something unique to the
    test (a fresh recipient address) rather than counting them."""
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


# --- Database, broker and the server processes that use them -------------------------


@pytest.fixture(scope="session")
def test_database_url(django_db_setup) -> str:
    """DATABASE_URL of the database pytest-django created for this session."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("Server processes need PostgreSQL as the test database.", pytrace=False)
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    if "/" in host:  # a socket directory
        host = quote(host, safe="")
    return f"postgres://{credentials}@{host}:{db['PORT'] or 5432}/{quote(db['NAME'], safe='')}"


@pytest.fixture(scope="session")
def celery_broker() -> Iterator[Broker]:
    """Redis as the broker, with queues of this session's own (the default one and the
    media one named after it); the in-process Celery app publishes there while the
    fixture lasts."""
    from config.celery_app import app

    broker = Broker(url=TEST_REDIS_URL, queue=f"lodestone-test-{uuid.uuid4().hex[:12]}")
    with app_publishing_to(app, broker):
        yield broker


@pytest.fixture(scope="session")
def web_server_port() -> int:
    """Chosen before any server starts, so every process knows the site's URL."""
    return free_port()


@pytest.fixture(scope="session")
def server_stripe() -> Iterator[StripeStandin]:
    """The Stripe stand-in the server processes pay through (their STRIPE_API_BASE).

    A test registers the webhook endpoint it needs, e.g.
    `server_stripe.add_webhook_endpoint(web_server.url + "/pay/stripe/webhook/",
    secret=SERVER_STRIPE_WEBHOOK_SECRET)`, and resets the stand-in when done."""
    with stripe_standin_running() as standin:
        yield standin


@pytest.fixture(scope="session")
def django_server_env(
    test_database_url, celery_broker, smtp_sink, web_server_port, server_stripe, tmp_path_factory
) -> dict:
    """Environment for a server process running this code against the test database.

    LODESTONE_SITE_URL is the web server's, so links in mail the worker sends lead
    there; protected files live under LODESTONE_PROTECTED_ROOT.
    """
    var_dir = tmp_path_factory.mktemp("server-var")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SERVER_SETTINGS,
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "DATABASE_URL": test_database_url,
        "REDIS_URL": celery_broker.url,
        "CELERY_TASK_DEFAULT_QUEUE": celery_broker.queue,
        "CELERY_MEDIA_QUEUE": celery_broker.media_queue,
        "EMAIL_URL": smtp_sink.url,
        "LODESTONE_VAR_DIR": str(var_dir),
        "LODESTONE_PROTECTED_ROOT": str(var_dir / "protected"),
        "LODESTONE_SITE_URL": f"http://127.0.0.1:{web_server_port}",
        "STRIPE_API_BASE": server_stripe.url,
        "STRIPE_SECRET_KEY": server_stripe.api_key,
        "STRIPE_WEBHOOK_SECRET": SERVER_STRIPE_WEBHOOK_SECRET,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


@pytest.fixture
def server_protected_storage(settings, django_server_env):
    """The test process's `protected` storage set to the folder the harness gives its server
    processes: Protected files (magnets, downloads, HLS output) saved here land where the gunicorn
    and Celery processes read them."""
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {
                "location": django_server_env["LODESTONE_PROTECTED_ROOT"],
                "base_url": None,
            },
        },
    }
    from django.core.files.storage import storages

    from media.stamping.prepare import forget_cached

    forget_cached()
    yield storages["protected"]
    forget_cached()


@pytest.fixture(scope="session")
def celery_worker(celery_broker, django_server_env, harness_log_dir) -> Iterator[CeleryWorker]:
    """A `celery worker -P solo` subprocess consuming the session's two queues (default
    and media, as production's worker and media-worker between them); its mail goes
    to `smtp_sink`. Tests using it need committed data: `transactional_db`."""
    from config.celery_app import app

    with celery_worker_running(
        app=app,
        broker=celery_broker,
        env=django_server_env,
        log_path=harness_log_dir / "celery-worker.log",
    ) as worker:
        yield worker


@pytest.fixture(scope="session")
def web_server(django_server_env, web_server_port, harness_log_dir) -> Iterator[WebServer]:
    """gunicorn serving config.wsgi on the test database; `.url` has no trailing slash."""
    with gunicorn_running(
        env=django_server_env, port=web_server_port, log_path=harness_log_dir / "gunicorn.log"
    ) as web:
        yield web


# --- Browser ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (the system's) driven by Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        # Between calls, Playwright's sync API leaves the main thread looking as if an
        # event loop ran in it, and Django then refuses ORM calls there
        # (SynchronousOnlyOperation) in this test and every later one. The tests are
        # synchronous code, so Django's documented switch for this case is safe here.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            try:
                yield chromium
            finally:
                chromium.close()


@pytest.fixture
def browser_context(browser):
    context = browser.new_context(locale="en-US")
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(browser_context, request, tmp_path_factory) -> Iterator:
    """A fresh page; on failure a full-page screenshot is saved and named in the report."""
    name = re.sub(r"[^\w.-]+", "_", request.node.name)[:120]
    screenshots = tmp_path_factory.getbasetemp() / "screenshots"
    request.node.stash[SCREENSHOT_PATH] = screenshots / f"{name}.png"
    from playwright.sync_api import Error as PlaywrightError

    page = browser_context.new_page()
    yield page
    if "web_server" in request.fixturenames and request.node.get_closest_marker("django_db"):
        # Leave the page first: its pagehide handlers (the player's progress beacon)
        # make a last request, and a server transaction still open when pytest-django
        # flushes the database deadlocks the flush's TRUNCATE.
        with contextlib.suppress(PlaywrightError):  # a page that has crashed or closed
            page.goto("about:blank")
        database_quiet_wait()


def database_quiet_wait(*, quiet_polls: int = 4, interval: float = 0.1, limit: float = 15.0):
    """Wait until no other session on the test database is running a statement or holding
    a transaction open, seen on `quiet_polls` polls in a row (bounded by `limit`)."""
    import time

    from django.db import connection

    deadline = time.monotonic() + limit
    quiet = 0
    while quiet < quiet_polls and time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
                " AND state IN ('active', 'idle in transaction')"
            )
            busy = cursor.fetchone()[0]
        quiet = 0 if busy else quiet + 1
        if quiet < quiet_polls:
            time.sleep(interval)


# --- Reporting ----------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for server in STARTED:
            if server.fixture in getattr(item, "fixturenames", ()):
                report.sections.append(
                    (
                        f"{server.name} log: {server.log_path}",
                        server.log_tail(30),
                    )
                )
        if report.when == "call" and "page" in getattr(item, "funcargs", {}):
            report.sections.append(("screenshot", _screenshot(item)))
    return report


def _screenshot(item) -> str:
    path = item.stash.get(SCREENSHOT_PATH, None)
    if path is None:
        return "no screenshot path"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        item.funcargs["page"].screenshot(path=str(path), full_page=True)
    except Exception as exc:
        return f"screenshot failed: {exc!r}"
    return str(path)
