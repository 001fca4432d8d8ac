"""Drill: PostgreSQL restarts while visitors load pages. During the outage every visitor
gets a clean 503 page (no stack trace, a Retry-After); afterwards the same gunicorn
workers serve pages again — nothing is restarted on the app's side."""

import threading
import time
from collections import Counter

import pytest

from tests.harness.ports import free_port
from tests.harness.wagtail_pages import home_page_install
from tests.harness.waiting import wait_until
from tests.harness.web import http_get

from .servers import drill_env, gunicorn_running, private_cluster_running, worker_children

pytestmark = pytest.mark.django_db(transaction=True)

LOAD_THREADS = 3


class PageLoad:
    """Threads that GET a page in a loop and keep every answer (status, body, headers)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[float, int, bytes, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(LOAD_THREADS)
        ]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = http_get(self.url, timeout=15)
            except OSError as exc:  # refused, reset: the app itself did not answer
                with self._lock:
                    self.failures.append(repr(exc))
                continue
            with self._lock:
                self.answers.append(
                    (
                        time.monotonic(),
                        response.status,
                        response.body,
                        response.headers.get("Retry-After", ""),
                    )
                )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def count(self, status: int, *, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for at, code, _b, _r in self.answers if code == status and at >= since)


def test_postgres_restart_under_load_answers_503_then_recovers_without_an_app_restart(
    test_database_url, harness_log_dir, tmp_path
):
    # given the site on a PostgreSQL cluster of its own, served by gunicorn
    home_page_install(title="Launch week", tagline="Doors open Monday")
    with private_cluster_running(harness_log_dir / "drill-pg.log") as cluster:
        database_url = cluster.copy_database(test_database_url, "lodestone_drill")
        port = free_port()
        env = drill_env(
            database_url=database_url,
            var_dir=tmp_path / "var",
            site_url=f"http://127.0.0.1:{port}",
        )
        with gunicorn_running(
            env=env, port=port, log_path=harness_log_dir / "drill-pg-web.log"
        ) as web:
            workers_before = sorted(worker_children(web.server))
            load = PageLoad(web.url + "/")
            load.start()
            try:
                wait_until(lambda: load.count(200) >= 5, timeout=30, what="pages served")

                # when PostgreSQL stops (ending every session at once) under that load
                cluster.stop("fast")
                down_at = time.monotonic()
                wait_until(
                    lambda: load.count(503, since=down_at) >= 5, timeout=30, what="503 pages"
                )

                # and comes back
                cluster.start()
                up_at = time.monotonic()
                wait_until(
                    lambda: load.count(200, since=up_at) >= 5, timeout=30, what="pages served again"
                )
            finally:
                load.stop()

            # then every answer was a page or a clean 503, never an error or a dropped request
            assert load.failures == []
            assert Counter(code for _at, code, _b, _r in load.answers).keys() <= {200, 503}
            outage = [(body, retry) for _at, code, body, retry in load.answers if code == 503]
            body, retry_after = outage[0]
            assert b"We are back in a moment" in body
            assert b"Traceback" not in body and b"OperationalError" not in body
            assert retry_after == "30"
            # and the same gunicorn workers recovered by themselves
            assert web.server.running
            assert sorted(worker_children(web.server)) == workers_before
            assert http_get(web.url + "/healthz").status == 200
