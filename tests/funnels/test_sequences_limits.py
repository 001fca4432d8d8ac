"""The sending limits with their counters on Redis, as in production: one atomic script per
batch reserves the global, warm-up and per-domain counts. The other tests keep the
counters in process memory, where the same limits count key by key."""

import uuid

import pytest
import redis
from django.core import mail

from funnels.sequences import limits, services
from tests.harness.ports import free_port
from tests.harness.preflight import TEST_REDIS_URL

from .test_sequences_support import at, brand_install, confirmed, make_sequence, run_due

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_counters(settings, landing_page):
    """The cache on the test Redis under a key prefix of this test's own (never flushed:
    the database is shared with the Celery broker of other tests)."""
    prefix = f"drip-limits-{uuid.uuid4().hex[:10]}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": TEST_REDIS_URL,
            "KEY_PREFIX": prefix,
        }
    }
    settings.DRIP_WARMUP_PER_HOUR = 0
    brand_install()
    limits.forget_first_send()
    client = redis.Redis.from_url(TEST_REDIS_URL)
    yield client, prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()
    limits.forget_first_send()


def enrol(people, now="2026-03-02 10:00"):
    sequence = make_sequence(steps=[("content", 0, 0, "Hello", "Hi")])
    for person in people:
        services.enrolment_start(sequence=sequence, subscriber=person, source="admin", now=at(now))


def test_a_busy_domain_is_held_back_on_redis_and_released_the_next_minute(redis_counters, settings):
    settings.DRIP_DOMAIN_RATE_PER_MINUTE = 2
    people = [confirmed(f"r{i}@gmail.example") for i in range(5)]
    people.append(confirmed("solo@lodestone-mail.fi"))
    enrol(people)

    run_due(at("2026-03-02 10:00"))
    assert len(mail.outbox) == 3  # two gmail.example and the other domain
    run_due(at("2026-03-02 10:01:30"))
    assert len(mail.outbox) == 5
    run_due(at("2026-03-02 10:02:30"))
    assert sorted(a for m in mail.outbox for a in m.to) == sorted(p.email for p in people)

    client, prefix = redis_counters
    assert client.exists(*client.keys(f"{prefix}:*")), "the counters are on Redis"


def test_the_global_rate_and_the_warm_up_cap_count_on_redis(redis_counters, settings):
    settings.DRIP_RATE_PER_MINUTE = 4
    now = at("2026-03-02 10:00")

    granted = limits.reserve({"a.example": 3, "b.example": 2, "c.example": 1}, now)

    assert granted == {"a.example": 3, "b.example": 1, "c.example": 0}
    assert limits.allowance(now) == 0
    assert limits.reserve({"a.example": 1}, now) == {"a.example": 0}

    settings.DRIP_RATE_PER_MINUTE = 1000
    settings.DRIP_WARMUP_PER_HOUR = 6  # no email sent yet: the first day's cap
    assert limits.reserve({"a.example": 5}, at("2026-03-02 11:00")) == {"a.example": 5}
    assert limits.reserve({"b.example": 5}, at("2026-03-02 11:30")) == {"b.example": 1}
    assert limits.allowance(at("2026-03-02 11:45")) == 0
    assert limits.retry_at(at("2026-03-02 11:45")) == at("2026-03-02 12:00")


def test_an_unreachable_redis_lets_sending_go_on_within_the_per_domain_rate(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.DRIP_DOMAIN_RATE_PER_MINUTE = 3

    granted = limits.reserve({"a.example": 5, "b.example": 1}, at("2026-03-02 10:00"))

    assert granted == {"a.example": 3, "b.example": 1}
