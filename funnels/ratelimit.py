"""Sliding-window rate limits on the shared cache (Redis in production).

The estimate weighs the previous window by how much of it still overlaps the last
`window` seconds (the approach Cloudflare describes), so a client cannot double its
allowance at a window boundary. Every attempt counts, refused ones included: a script
that keeps hammering stays refused, while a person who pauses gets back in.

On Redis all the limits of one request are counted and judged in a single Lua script (one
round trip instead of three commands per limit: on a launch-day burst of opt-ins the
separate commands were a third of the request's time). Other cache backends (locmem in
development and tests) count with add/incr/get, on the same keys.
"""

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

from core.cache import UNAVAILABLE, _log


@dataclass(frozen=True)
class Limit:
    scope: str
    key: str
    limit: int
    window: int


# KEYS: (current, previous) window counter per limit; ARGV: (limit, weight of the previous
# window, ttl) per limit. Returns 1 while every limit holds, else 0.
HIT_LUA = """
local within = 1
for j = 1, #KEYS / 2 do
    local current, previous = KEYS[2 * j - 1], KEYS[2 * j]
    local limit, weight, ttl = tonumber(ARGV[3 * j - 2]), tonumber(ARGV[3 * j - 1]), ARGV[3 * j]
    local count = redis.call('INCR', current)
    if count == 1 then
        redis.call('EXPIRE', current, ttl)
    end
    local before = tonumber(redis.call('GET', previous) or '0') or 0
    if before * weight + count > limit then
        within = 0
    end
end
return within
"""


def _keys(limit: Limit, now: float) -> tuple[str, str, float]:
    bucket, into = divmod(now, limit.window)
    digest = hashlib.sha256(limit.key.encode()).hexdigest()[:32]
    base = f"rl:{limit.scope}:{digest}"
    return f"{base}:{int(bucket)}", f"{base}:{int(bucket) - 1}", 1 - into / limit.window


def _hit_script(client):
    """The registered script (its SHA-1 computed once), kept on the client object: one per
    process with core.cache.FailOpenRedisCache, which reuses its client."""
    script = getattr(client, "_lodestone_hit_script", None)
    if script is None:
        script = client._lodestone_hit_script = client.register_script(HIT_LUA)
    return script


def hit_all(limits: Sequence[Limit], *, cache=None) -> bool:
    """Count one attempt against every limit; True while the caller is within all of them."""
    backend = cache if cache is not None else caches["default"]
    now = time.time()
    if isinstance(backend, RedisCache):
        keys, args = [], []
        for limit in limits:
            current, previous, weight = _keys(limit, now)
            keys += [
                backend.make_and_validate_key(current),
                backend.make_and_validate_key(previous),
            ]
            args += [limit.limit, weight, 2 * limit.window + 5]
        try:
            client = backend._cache.get_client(write=True)
            return bool(_hit_script(client)(keys=keys, args=args, client=client))
        except UNAVAILABLE as exc:
            # Fail open, as the cache does: an outage must not refuse every visitor.
            _log("rate limit", exc)
            return True
    return all(_hit_counting(backend, limit, now) for limit in limits)


def _hit_counting(backend, limit: Limit, now: float) -> bool:
    current, previous, weight = _keys(limit, now)
    timeout = 2 * limit.window + 5
    # add() then incr() is atomic on Redis and locmem: concurrent hits never share a count.
    backend.add(current, 0, timeout=timeout)
    try:
        count = backend.incr(current)
    except ValueError:  # evicted between add() and incr()
        backend.add(current, 1, timeout=timeout)
        count = 1
    return (backend.get(previous) or 0) * weight + count <= limit.limit


def hit(scope: str, key: str, *, limit: int, window: int) -> bool:
    """Count one attempt; True while the caller is within `limit` per `window` seconds."""
    return hit_all([Limit(scope, key, limit, window)])
