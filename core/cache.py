"""The shared cache on Redis, failing open: when Redis does not answer, reads miss and writes
are dropped instead of raising.

The cache holds only what can be lost (rate-limit counters, sending-rate windows, cached
fragments). During a Redis outage a sign-up must still be stored and answered, so a rate
limit briefly counts from zero rather than turning every opt-in into a 500. Each failure is
logged, at most once a minute per process, so the outage stays visible.
"""

import logging
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
LOG_EVERY_SECONDS = 60
_last_logged = [0.0]


def _log(operation: str, exc: BaseException) -> None:
    now = time.monotonic()
    if now - _last_logged[0] >= LOG_EVERY_SECONDS:
        _last_logged[0] = now
        logger.warning("Cache unavailable (%s failed: %r); carrying on without it.", operation, exc)


class ReusedClientRedisCacheClient(RedisCacheClient):
    """Django's client builds a new redis.Redis object for every cache call (the connection
    pool is shared, the client object is not): on an opt-in that was about 40% of the cost
    of its two Redis calls. A redis.Redis is thread-safe and its pool notices a fork, so one
    per server and process does."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            client = self._clients[index] = self._client(connection_pool=self._pool_at(index))
        return client

    def _pool_at(self, index):
        """Django's _get_connection_pool for a server chosen by the caller."""
        if index not in self._pools:
            self._pools[index] = self._pool_class.from_url(
                self._servers[index], **self._pool_options
            )
        return self._pools[index]


class FailOpenRedisCache(RedisCache):
    """django.core.cache.backends.redis.RedisCache that never raises for an unreachable
    Redis. Connect and read timeouts come from OPTIONS (socket_connect_timeout,
    socket_timeout) so a dead Redis costs a request milliseconds, not seconds."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().add(key, value, timeout=timeout, version=version)
        except UNAVAILABLE as exc:
            _log("add", exc)
            return False

    def get(self, key, default=None, version=None):
        try:
            return super().get(key, default=default, version=version)
        except UNAVAILABLE as exc:
            _log("get", exc)
            return default

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            super().set(key, value, timeout=timeout, version=version)
        except UNAVAILABLE as exc:
            _log("set", exc)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().touch(key, timeout=timeout, version=version)
        except UNAVAILABLE as exc:
            _log("touch", exc)
            return False

    def delete(self, key, version=None):
        try:
            return super().delete(key, version=version)
        except UNAVAILABLE as exc:
            _log("delete", exc)
            return False

    def get_many(self, keys, version=None):
        try:
            return super().get_many(keys, version=version)
        except UNAVAILABLE as exc:
            _log("get_many", exc)
            return {}

    def has_key(self, key, version=None):
        try:
            return super().has_key(key, version=version)
        except UNAVAILABLE as exc:
            _log("has_key", exc)
            return False

    def incr(self, key, delta=1, version=None):
        try:
            return super().incr(key, delta=delta, version=version)
        except UNAVAILABLE as exc:
            # As if the key had just been created: a counter starts again from this hit.
            _log("incr", exc)
            return delta

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().set_many(data, timeout=timeout, version=version)
        except UNAVAILABLE as exc:
            _log("set_many", exc)
            return list(data)

    def delete_many(self, keys, version=None):
        try:
            return super().delete_many(keys, version=version)
        except UNAVAILABLE as exc:
            _log("delete_many", exc)
            return None

    def clear(self):
        try:
            return super().clear()
        except UNAVAILABLE as exc:
            _log("clear", exc)
            return False
