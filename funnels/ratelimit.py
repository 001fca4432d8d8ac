"""Sliding-window rate limits on the shared cache (Redis in production).

The estimate weighs the previous window by how much of it still overlaps the last
`window` seconds (the approach Cloudflare describes), so a client cannot double its
allowance at a window boundary. Every attempt counts, refused ones included: a script
that keeps hammering stays refused, while a person who pauses gets back in.
"""

import hashlib
import time

from django.core.cache import cache


def hit(scope: str, key: str, *, limit: int, window: int) -> bool:
    """Count one attempt; True while the caller is within `limit` per `window` seconds."""
    now = time.time()
    bucket, into = divmod(now, window)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    current = f"rl:{scope}:{digest}:{int(bucket)}"
    previous = f"rl:{scope}:{digest}:{int(bucket) - 1}"
    # add() then incr() is atomic on Redis and locmem: concurrent hits never share a count.
    cache.add(current, 0, timeout=2 * window + 5)
    try:
        count = cache.incr(current)
    except ValueError:  # evicted between add() and incr()
        cache.add(current, 1, timeout=2 * window + 5)
        count = 1
    estimate = (cache.get(previous) or 0) * (1 - into / window) + count
    return estimate <= limit
