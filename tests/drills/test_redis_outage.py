"""Drill: Redis (broker and cache) is killed in the middle of a burst of sign-ups.

Every visitor still gets their answer, every sign-up is stored, and once Redis is back the
outbox sweep sends each confirmation exactly once — including those whose task was never
queued (broker down at commit) and those queued into the Redis that died (its memory lost).
"""

from concurrent.futures import ThreadPoolExecutor

import pytest

from core.models import OutboundEmail
from funnels.models import Subscriber
from tests.harness.ports import free_port
from tests.harness.waiting import wait_until

from .conftest import drill_address, optin_post
from .servers import (
    celery_worker_running,
    drill_env,
    gunicorn_running,
    private_redis_running,
    run_in_app,
    unique_queue,
)

pytestmark = pytest.mark.django_db(transaction=True)

BURST = 24
KILL_AFTER = 8
RESTORE_AFTER = 16


def test_redis_killed_mid_burst_loses_no_sign_up_and_sends_each_confirmation_once(
    optin_form, smtp_sink, test_database_url, harness_log_dir, tmp_path
):
    # given the app (gunicorn + a Celery worker) on a Redis of its own
    with private_redis_running(harness_log_dir / "drill-redis.log") as redis_server:
        queue = unique_queue("drill-redis")
        port = free_port()
        env = drill_env(
            database_url=test_database_url,
            var_dir=tmp_path / "var",
            site_url=f"http://127.0.0.1:{port}",
            redis_url=redis_server.url,
            queue=queue,
            email_url=smtp_sink.url,
        )
        with (
            gunicorn_running(
                env=env, port=port, log_path=harness_log_dir / "drill-redis-web.log"
            ) as web,
            celery_worker_running(
                env=env, queue=queue, log_path=harness_log_dir / "drill-redis-worker.log"
            ),
        ):
            addresses = [drill_address(f"burst{i}") for i in range(BURST)]
            answers: dict[str, int] = {}

            # when sign-ups arrive four at a time, Redis is killed a third of the way in
            # and started again (empty, as after a crash) two thirds of the way in
            with ThreadPoolExecutor(max_workers=4) as pool:
                for batch_start in range(0, BURST, 4):
                    if batch_start == KILL_AFTER:
                        redis_server.kill()
                    if batch_start == RESTORE_AFTER:
                        redis_server.start()
                    batch = addresses[batch_start : batch_start + 4]
                    for email, (status, _body) in zip(
                        batch,
                        pool.map(lambda e: optin_post(web.url, optin_form, e), batch),
                        strict=True,
                    ):
                        answers[email] = status

            # then every visitor got the normal answer, outage or not
            assert {email: status for email, status in answers.items() if status != 200} == {}
            # and every sign-up is stored once, each with one confirmation in the outbox
            assert Subscriber.objects.filter(email__in=addresses).count() == BURST
            outbox = OutboundEmail.objects.filter(to__in=addresses, kind="funnels:confirm")
            assert sorted(outbox.values_list("to", flat=True)) == sorted(addresses)

            # when the beat's sweep runs once Redis is back (as of 3 minutes later, when
            # the stranded rows count as stale), in a process of its own as beat runs it
            requeued = int(
                run_in_app(
                    env,
                    "from datetime import timedelta; from django.utils import timezone; "
                    "from core.services import email_requeue_stale; "
                    "print(email_requeue_stale(now=timezone.now() + timedelta(minutes=3)))",
                ).split()[-1]
            )

            # then some were stranded by the outage (never queued, or lost with Redis) and
            # the sweep queued them again
            statuses = sorted(outbox.values_list("status", "claimed_at"), key=str)
            assert requeued >= 1, statuses
            # and every address has its confirmation: exactly one message each
            wait_until(
                lambda: not outbox.exclude(status=OutboundEmail.Status.SENT).exists(),
                timeout=60,
                what="every confirmation to be sent",
            )
            received = [
                str(m["To"]) for m in smtp_sink.matching(lambda m: str(m["To"]) in addresses)
            ]
            assert sorted(received) == sorted(addresses)
