"""How fast we may send: a global rate, a rate per recipient domain, and a warm-up cap
that grows day by day from the sender's first drip email, so a new sending domain or IP
builds reputation instead of being flagged for a sudden flood.

Counters live in the shared cache (Redis in production) in fixed windows. On Redis a
batch reserves everything it needs — global, warm-up and every recipient domain — in one
round trip, a Lua script that checks and counts atomically (a batch of a hundred emails
to a hundred domains would otherwise pay some two hundred round trips). Other cache
backends (the demo's files, the tests' memory) count with one increment per domain.

Settings (all optional):
    DRIP_RATE_PER_MINUTE         all drip and broadcast email together (default 3000)
    DRIP_DOMAIN_RATE_PER_MINUTE  per recipient domain, e.g. gmail.com (default 600)
    DRIP_WARMUP_PER_HOUR         first day's hourly cap; 0 switches warm-up off (default 500)
    DRIP_WARMUP_FACTOR           growth of that cap per day (default 2.0)
"""

import contextlib
import logging
import math
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.db.models import Min
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
logger = logging.getLogger(__name__)

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


# KEYS: the global counter, the warm-up counter, then one counter per domain.
# ARGV: global limit, warm-up cap (-1: none), per-domain limit, the three counters' lives
# in seconds, then how many each domain wants, in the order of KEYS[3…].
# Grants each domain what all three limits leave, biggest wants first (the caller's
# order), and counts only what it grants: nothing is taken back afterwards.
RESERVE_LUA = """
local function used(key)
    return tonumber(redis.call('GET', key) or '0') or 0
end
local left = tonumber(ARGV[1]) - used(KEYS[1])
local cap = tonumber(ARGV[2])
if cap >= 0 then
    left = math.min(left, cap - used(KEYS[2]))
end
local per_domain = tonumber(ARGV[3])
local granted = {}
local total = 0
for i = 3, #KEYS do
    local want = tonumber(ARGV[i + 4])
    local got = math.max(0, math.min(want, left - total, per_domain - used(KEYS[i])))
    if got > 0 then
        redis.call('INCRBY', KEYS[i], got)
        redis.call('EXPIRE', KEYS[i], ARGV[6])
    end
    granted[#granted + 1] = got
    total = total + got
end
if total > 0 then
    redis.call('INCRBY', KEYS[1], total)
    redis.call('EXPIRE', KEYS[1], ARGV[4])
    if cap >= 0 then
        redis.call('INCRBY', KEYS[2], total)
        redis.call('EXPIRE', KEYS[2], ARGV[5])
    end
end
return granted
"""


def _ttl(window: int) -> int:
    return window * 2 + 5


def _reserve_redis(backend: RedisCache, wanted: list[tuple[str, int]], now: datetime) -> list[int]:
    cap = warmup_cap_per_hour(now)
    keys = [
        backend.make_and_validate_key(_key(scope, window, now))
        for scope, window in (("all", 60), ("warmup", 3600))
    ] + [backend.make_and_validate_key(_key(f"domain:{d}", 60, now)) for d, _n in wanted]
    # The cache's own client and key names, so allowance() reads the same counters.
    client = backend._cache.get_client(write=True)
    script = client.register_script(RESERVE_LUA)
    args = [rate_per_minute(), -1 if cap is None else cap, domain_rate_per_minute()]
    args += [_ttl(60), _ttl(3600), _ttl(60)] + [n for _d, n in wanted]
    return [int(n) for n in script(keys=keys, args=args, client=client)]


def _redis_backend() -> RedisCache | None:
    backend = caches["default"]
    if isinstance(backend, RedisCache) and len(backend._cache._servers) == 1:
        return backend
    return None


def reserve(domains: dict[str, int], now: datetime) -> dict[str, int]:
    """Reserve sends per recipient domain; returns how many each domain may send now."""
    wanted = sorted(((d, n) for d, n in domains.items() if n > 0), key=lambda item: -item[1])
    if not wanted:
        return {d: 0 for d in domains}
    backend = _redis_backend()
    if backend is not None:
        try:
            granted = _reserve_redis(backend, wanted, now)
        except UNAVAILABLE as exc:
            # Fail open, as the cache does: a Redis outage must not stop the sending.
            # Each batch is still held to the per-domain rate on its own.
            logger.warning("drip rate limits unavailable (%r); sending without them", exc)
            granted = [min(n, domain_rate_per_minute()) for _d, n in wanted]
        return {d: 0 for d in domains} | {d: g for (d, _n), g in zip(wanted, granted, strict=True)}
    return _reserve_counting(domains, now)


def _reserve_counting(domains: dict[str, int], now: datetime) -> dict[str, int]:
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
