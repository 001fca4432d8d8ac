"""Fixed-window rate limits on the shared cache (Redis in production)."""

import hashlib
import time

from django.core.cache import cache


def hit(scope: str, key: str, *, limit: int, window: int) -> bool:
    """Count one hit; True while the caller is within `limit` hits per `window` seconds."""
    bucket = int(time.time() // window)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    cache_key = f"rl:{scope}:{digest}:{bucket}"
    # add() is atomic: the first hit creates the counter, the others increment it.
    if cache.add(cache_key, 1, timeout=window + 5):
        return True
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add() and incr()
        cache.add(cache_key, 1, timeout=window + 5)
        return True
    return count <= limit
