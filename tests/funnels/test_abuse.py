"""What bots and careless clients get from the opt-in endpoint, and that nothing leaks in."""

import time

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from funnels.forms import RENDERED_SALT
from funnels.models import SignUp, Subscriber

pytestmark = pytest.mark.django_db


def form_data(email="bot@lodestone-mail.fi", **overrides):
    data = {
        "email": email,
        "name": "Bot",
        "consent": "on",
        "rendered_at": signing.dumps(int(time.time()) - 30, salt=RENDERED_SALT),
    }
    data.update(overrides)
    return data


def subscribe_url(page, form_id):
    return reverse("funnels:subscribe", args=[page.pk, form_id])


def test_a_thousand_posts_from_one_ip_store_only_the_first_few(client, landing_page, form_id):
    url = subscribe_url(landing_page, form_id)
    statuses = [
        client.post(
            url, form_data(f"bot{i}@lodestone-mail.fi"), HTTP_ACCEPT="application/json"
        ).status_code
        for i in range(1000)
    ]

    assert statuses[:10] == [200] * 10
    assert set(statuses[10:]) == {429}
    assert SignUp.objects.count() == 10
    refused = client.post(url, form_data("late@lodestone-mail.fi"), HTTP_ACCEPT="application/json")
    assert "Too many sign-ups" in refused.json()["message"]


def test_one_address_is_limited_across_ips(landing_page, form_id):
    url = subscribe_url(landing_page, form_id)
    statuses = [
        Client(REMOTE_ADDR=f"198.51.100.{i}")
        .post(
            url,
            form_data("target@lodestone-mail.fi"),
            HTTP_ACCEPT="application/json",
            HTTP_ORIGIN="http://testserver",
        )
        .status_code
        for i in range(7)
    ]

    assert statuses == [200] * 5 + [429] * 2


def test_filled_honeypot_looks_like_success_and_stores_nothing(client, landing_page, form_id):
    response = client.post(
        subscribe_url(landing_page, form_id),
        form_data(website="http://spam.example"),
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert not SignUp.objects.exists()
    assert not Subscriber.objects.exists()


@pytest.mark.parametrize(
    "rendered_at", ["instant", "", "forged:token"], ids=["instant", "missing", "forged"]
)
def test_posts_without_a_human_pause_are_asked_to_retry(client, landing_page, form_id, rendered_at):
    if rendered_at == "instant":
        rendered_at = signing.dumps(int(time.time()), salt=RENDERED_SALT)
    response = client.post(
        subscribe_url(landing_page, form_id),
        form_data(rendered_at=rendered_at),
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 400
    assert "quicker than we expected" in response.json()["message"]
    assert not SignUp.objects.exists()
    assert not Subscriber.objects.exists()


def test_an_oversized_post_is_refused(client, landing_page, form_id):
    response = client.post(
        subscribe_url(landing_page, form_id),
        form_data(name="x" * 40_000),
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 413
    assert not SignUp.objects.exists()
    assert not Subscriber.objects.exists()


def test_a_cross_site_post_without_the_csrf_token_is_refused(landing_page, form_id):
    response = Client(enforce_csrf_checks=True).post(
        subscribe_url(landing_page, form_id), form_data()
    )

    assert response.status_code == 403
    assert not SignUp.objects.exists()
    assert not Subscriber.objects.exists()


def test_a_get_to_the_subscribe_url_goes_back_to_the_page(client, landing_page, form_id):
    response = client.get(subscribe_url(landing_page, form_id))

    assert response.status_code == 302
    assert response.url == landing_page.url


def test_rate_limit_allows_no_second_burst_at_a_window_boundary(monkeypatch):
    from funnels import ratelimit

    clock = [6000.0 + 59.5]  # half a second before a minute boundary
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    first_burst = [ratelimit.hit("t", "203.0.113.1", limit=10, window=60) for _ in range(10)]
    clock[0] += 1.0  # just past the boundary: a fixed window would start counting afresh

    second_burst = [ratelimit.hit("t", "203.0.113.1", limit=10, window=60) for _ in range(10)]
    clock[0] += 120  # two quiet minutes later
    after_a_pause = ratelimit.hit("t", "203.0.113.1", limit=10, window=60)

    assert first_burst == [True] * 10
    assert second_burst == [False] * 10
    assert after_a_pause is True


@pytest.fixture
def redis_cache():
    """The production cache backend on the test Redis, under a prefix of its own."""
    import uuid

    from core.cache import FailOpenRedisCache
    from tests.harness.preflight import TEST_REDIS_URL

    backend = FailOpenRedisCache(TEST_REDIS_URL, {"KEY_PREFIX": f"rl-test-{uuid.uuid4().hex}"})
    yield backend
    backend.clear()


def test_rate_limits_on_redis_count_every_limit_in_one_script(monkeypatch, redis_cache):
    from funnels import ratelimit

    clock = [6000.0 + 59.5]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    per_ip = ratelimit.Limit("ip", "203.0.113.1", 10, 60)
    per_email = ratelimit.Limit("email", "reader@example.fi", 3, 3600)

    def attempt(*limits):
        return ratelimit.hit_all(limits, cache=redis_cache)

    # three sign-ups of one address pass, the fourth is refused by the email limit
    assert [attempt(per_ip, per_email) for _ in range(4)] == [True, True, True, False]
    # the refused attempt counted too: the IP has used 4 of its 10, other addresses pass
    others = [ratelimit.Limit("email", f"reader{i}@example.fi", 3, 3600) for i in range(7)]
    assert [attempt(per_ip, email) for email in others[:6]] == [True] * 6
    assert attempt(per_ip, others[6]) is False  # the 11th attempt from the IP this minute
    # and no second burst just past the minute boundary (the sliding window)
    clock[0] += 1.0
    assert attempt(ratelimit.Limit("ip", "203.0.113.1", 10, 60)) is False
    # the script's counters are the cache's own keys: the counting path reads the same
    current, _previous, _weight = ratelimit._keys(per_ip, clock[0] - 1.0)
    assert redis_cache.get(current) == 11


def test_rate_limits_fail_open_when_redis_is_down(closed_redis_cache):
    from funnels import ratelimit

    assert ratelimit.hit_all(
        [ratelimit.Limit("ip", "203.0.113.1", 0, 60)], cache=closed_redis_cache
    )


@pytest.fixture
def closed_redis_cache():
    import socket

    from core.cache import FailOpenRedisCache

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return FailOpenRedisCache(
        f"redis://127.0.0.1:{port}/0", {"OPTIONS": {"socket_connect_timeout": 0.5}}
    )
