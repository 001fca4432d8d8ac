"""Shared fixtures. The real servers (S3, SMTP, Celery worker, gunicorn, Chromium) come
from tests/harness; PostgreSQL and Redis must already run, and are checked first."""

import pytest

from tests.harness.preflight import TEST_REDIS_URL, missing_services

pytest_plugins = ["tests.harness.plugin"]


def pytest_sessionstart(session: pytest.Session) -> None:
    # Fail the whole run at once, never skip: a suite that quietly skips its
    # integration tests reads as green.
    if session.config.option.collectonly:
        return
    from django.conf import settings

    problems = missing_services(database=settings.DATABASES["default"], redis_url=TEST_REDIS_URL)
    if problems:
        pytest.exit(
            "Lodestone's tests need PostgreSQL and Redis running on loopback.\n"
            + "\n".join(problems),
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Rate-limit counters live in the cache: one test's requests must not throttle the next.
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def published():
    """Tasks this process hands to the broker while the test runs: [(task name, [args])],
    from Celery's own before_task_publish signal."""
    from celery.signals import before_task_publish

    sent = []

    def record(sender=None, body=None, **kwargs):
        sent.append((sender, list(body[0])))

    before_task_publish.connect(record)
    yield sent
    before_task_publish.disconnect(record)
