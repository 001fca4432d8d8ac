"""How fast we may send: a global rate, a rate per recipient domain, and a warm-up cap
that grows day by day from the sender's first drip email, so a new sending domain or IP
builds reputation instead of being flagged for a sudden flood.

Counters live in the shared cache (Redis in production) in fixed windows; a batch
reserves what it needs with one increment per domain instead of one per message.

Settings (all optional):
    DRIP_RATE_PER_MINUTE         all drip and broadcast email together (default 3000)
    DRIP_DOMAIN_RATE_PER_MINUTE  per recipient domain, e.g. gmail.com (default 600)
    DRIP_WARMUP_PER_HOUR         first day's hourly cap; 0 switches warm-up off (default 500)
    DRIP_WARMUP_FACTOR           growth of that cap per day (default 2.0)
"""

import contextlib
import math
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Min

_first_send_cache: dict = {}


def rate_per_minute() -> int:
    return int(getattr(settings, "DRIP_RATE_PER_MINUTE", 3000))


def domain_rate_per_minute() -> int:
    return int(getattr(settings, "DRIP_DOMAIN_RATE_PER_MINUTE", 600))


def warmup_cap_per_hour(now: datetime) -> int | None:
    """This hour's warm-up cap, or None once warm-up is over or switched off."""
    start = int(getattr(settings, "DRIP_WARMUP_PER_HOUR", 500))
    if start <= 0:
        return None
    factor = float(getattr(settings, "DRIP_WARMUP_FACTOR", 2.0))
    first = _first_send()
    days = 0 if first is None else max(0, (now - first).days)
    cap = start * factor**days
    # Once the cap passes the global rate the warm-up has nothing left to hold back.
    if cap >= rate_per_minute() * 60:
        return None
    return int(cap)


def _first_send() -> datetime | None:
    cached = _first_send_cache.get("first")
    if cached and cached[0] > time.monotonic():
        return cached[1]
    from funnels.models import DripDelivery

    first = DripDelivery.objects.filter(sent_at__isnull=False).aggregate(m=Min("sent_at"))["m"]
    _first_send_cache["first"] = (time.monotonic() + 600, first)
    return first


def forget_first_send() -> None:
    _first_send_cache.clear()


def _key(scope: str, window: int, now: datetime) -> str:
    return f"drip:{scope}:{int(now.timestamp()) // window}"


def _reserve(scope: str, n: int, limit: int, window: int, now: datetime) -> int:
    if n <= 0:
        return 0
    key = _key(scope, window, now)
    cache.add(key, 0, timeout=window * 2 + 5)
    try:
        used = cache.incr(key, n)
    except ValueError:  # evicted between add() and incr()
        cache.add(key, n, timeout=window * 2 + 5)
        used = n
    granted = max(0, min(n, limit - (used - n)))
    if granted < n:
        # Give back what was refused so the next batch can have it.
        with contextlib.suppress(ValueError):
            cache.decr(key, n - granted)
    return granted


def _used(scope: str, window: int, now: datetime) -> int:
    return cache.get(_key(scope, window, now)) or 0


def allowance(now: datetime) -> int:
    """How many more emails the global and warm-up limits allow right now."""
    left = rate_per_minute() - _used("all", 60, now)
    cap = warmup_cap_per_hour(now)
    if cap is not None:
        left = min(left, cap - _used("warmup", 3600, now))
    return max(0, left)


def reserve(domains: dict[str, int], now: datetime) -> dict[str, int]:
    """Reserve sends per recipient domain; returns how many each domain may send now."""
    total = sum(domains.values())
    granted_total = _reserve("all", total, rate_per_minute(), 60, now)
    cap = warmup_cap_per_hour(now)
    if cap is not None:
        warm = _reserve("warmup", granted_total, cap, 3600, now)
        if warm < granted_total:
            cache.decr(_key("all", 60, now), granted_total - warm)
        granted_total = warm
    granted: dict[str, int] = {}
    left = granted_total
    per_domain = domain_rate_per_minute()
    for domain, n in sorted(domains.items(), key=lambda item: -item[1]):
        want = min(n, left)
        got = _reserve(f"domain:{domain}", want, per_domain, 60, now)
        granted[domain] = got
        left -= got
    unused = granted_total - sum(granted.values())
    if unused > 0:
        try:
            cache.decr(_key("all", 60, now), unused)
            if cap is not None:
                cache.decr(_key("warmup", 3600, now), unused)
        except ValueError:
            pass
    return granted


def next_minute(now: datetime) -> datetime:
    return datetime.fromtimestamp(math.floor(now.timestamp() / 60) * 60 + 60, tz=UTC)


def next_hour(now: datetime) -> datetime:
    return datetime.fromtimestamp(math.floor(now.timestamp() / 3600) * 3600 + 3600, tz=UTC)


def retry_at(now: datetime) -> datetime:
    """When a send refused by a limit should try again."""
    cap = warmup_cap_per_hour(now)
    if cap is not None and _used("warmup", 3600, now) >= cap:
        return next_hour(now)
    return next_minute(now) + timedelta(seconds=1)
