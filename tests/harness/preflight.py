"""PostgreSQL and Redis are started outside the tests; stop at once, saying how, if one is down."""

import os
from urllib.parse import urlsplit

import psycopg
import redis

# Redis database for the tests' broker; the queue name is unique per session, so
# sessions sharing the database do not take each other's tasks.
TEST_REDIS_URL = os.environ.get("LODESTONE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
START_REDIS = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'


def missing_services(*, database: dict, redis_url: str) -> list[str]:
    """One message per server that does not answer; empty when both do."""
    problems = []
    if database["ENGINE"] == "django.db.backends.postgresql":
        host = database.get("HOST") or "localhost"
        port = database.get("PORT") or 5432
        try:
            psycopg.connect(
                host=host,
                port=port,
                user=database.get("USER") or None,
                password=database.get("PASSWORD") or None,
                dbname="postgres",
                connect_timeout=3,
            ).close()
        except psycopg.Error as exc:
            problems.append(
                f"PostgreSQL does not answer at {host}:{port} ({str(exc).strip()}).\n"
                f"  Start it with: {START_POSTGRES}"
            )
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        where = urlsplit(redis_url).netloc
        problems.append(
            f"Redis does not answer at {where} ({exc}).\n  Start it with: {START_REDIS}"
        )
    return problems
