"""A real Celery worker subprocess on Redis, and the in-process app pointed at the same queues."""

import contextlib
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from kombu import pools

from .processes import ServerProcess, running, venv_bin

START_TIMEOUT = 30


@dataclass(frozen=True)
class Broker:
    url: str
    queue: str

    @property
    def media_queue(self) -> str:
        """Where media tasks go (settings.CELERY_MEDIA_QUEUE): named after `queue`, so a
        session, or a test's own worker, shares it with nobody else."""
        return f"{self.queue}-media"


@dataclass(frozen=True)
class CeleryWorker:
    node: str
    queue: str
    media_queue: str
    broker_url: str
    log_path: Path
    server: ServerProcess


def _forget_broker_connections(app) -> None:
    # The app caches its connection pool and its queue routing (app.amqp) on first
    # use; drop them so the next publish reads the configuration we just set. The pool
    # is kombu's shared one (kombu.pools, keyed by broker URL): closing it alone would
    # leave a closed pool registered there ("Acquire on closed pool" on the next publish
    # to that URL), so reset kombu's registry, which closes and forgets every pool.
    pools.reset()
    app._pool = None
    app.__dict__.pop("amqp", None)


def task_routes_for(broker: Broker) -> dict:
    """settings.CELERY_TASK_ROUTES with the default and media queue names replaced by
    `broker`'s: the same rules, on queues of the broker's own."""
    from django.conf import settings

    renamed = {
        settings.CELERY_TASK_DEFAULT_QUEUE: broker.queue,
        settings.CELERY_MEDIA_QUEUE: broker.media_queue,
    }
    return {
        task: {**route, "queue": renamed.get(route["queue"], route["queue"])}
        for task, route in settings.CELERY_TASK_ROUTES.items()
    }


@contextlib.contextmanager
def app_publishing_to(app, broker: Broker) -> Iterator[None]:
    """Point the in-process Celery app at `broker`; put the old settings back afterwards.

    The app read Django settings once at import (config_from_object), so overriding the
    Django settings would not reach it.
    """
    names = ("broker_url", "broker_transport_options", "task_default_queue", "task_routes")
    previous = {name: app.conf[name] for name in names}
    app.conf.update(
        broker_url=broker.url,
        broker_transport_options={"visibility_timeout": 3600},
        task_default_queue=broker.queue,
        task_routes=task_routes_for(broker),
    )
    _forget_broker_connections(app)
    try:
        yield
    finally:
        app.conf.update(previous)
        _forget_broker_connections(app)
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(broker.url, socket_timeout=2)
            client.delete(
                *(
                    name
                    for queue in (broker.queue, broker.media_queue)
                    for name in (queue, f"_kombu.binding.{queue}")
                )
            )
            client.close()


@contextlib.contextmanager
def broker_unreachable(app) -> Iterator[None]:
    """A broker outage for the in-process app: publishing goes to a Redis port where nothing
    listens, so every publish fails (after Celery's own quick retries) exactly as it does
    while Redis is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broker = Broker(url=f"redis://127.0.0.1:{port}/0", queue=f"down-{uuid.uuid4().hex[:12]}")
    with app_publishing_to(app, broker):
        yield


@contextlib.contextmanager
def celery_worker_running(
    *, app, broker: Broker, env: dict[str, str], log_path: Path
) -> Iterator[CeleryWorker]:
    """A solo worker consuming both of `broker`'s queues; media tasks it queues itself
    (a transcode queuing its watermark) go to its own media queue."""
    node = f"{broker.queue}@pytest"
    argv = [
        venv_bin("celery"),
        "-A",
        "config",
        "worker",
        "-P",
        "solo",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-Q",
        f"{broker.queue},{broker.media_queue}",
        "-n",
        node,
        "--loglevel=INFO",
    ]
    server = ServerProcess(
        name="Celery worker",
        fixture="celery_worker",
        argv=argv,
        log_path=log_path,
        env={**env, "CELERY_MEDIA_QUEUE": broker.media_queue},
    )
    with running(server):
        server.wait_ready(
            lambda: app.control.ping(destination=[node], timeout=0.5),
            timeout=START_TIMEOUT,
            what=f"worker {node} to answer a ping",
        )
        yield CeleryWorker(
            node=node,
            queue=broker.queue,
            media_queue=broker.media_queue,
            broker_url=broker.url,
            log_path=log_path,
            server=server,
        )
