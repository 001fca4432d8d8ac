"""Drill: Redis (broker and cache) is killed in the middle of a burst of sign-ups.

Every visitor still gets their answer, every sign-up is stored, and once Redis is back each
sign-up is processed and each confirmation sent exactly once — including the sign-ups that
could wake no worker (Redis down at commit: the first drain woken after Redis is back, or
the sign-up sweep, whichever comes first, picks them up) and the emails queued into the
Redis that died (its memory lost: the outbox sweep queues them again).
"""

from concurrent.futures import ThreadPoolExecutor

import pytest

from core.models import OutboundEmail
from funnels.models import SignUp, Subscriber
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
            # and every sign-up is stored at once (the request's one insert), once
            assert SignUp.objects.filter(email__in=addresses).count() == BURST

            # when the beat's sweeps run once Redis is back (as of 3 minutes later, when
            # the stranded rows count as stale), in a process of its own as beat runs them:
            # first the sign-ups never queued (or lost with Redis) ...
            as_of = "timezone.now() + timedelta(minutes=3)"
            sweep = (
                "from datetime import timedelta; from django.utils import timezone; "
                "from core.services import email_requeue_stale; "
                "from funnels.services import signup_requeue_stale; "
            )
            run_in_app(env, sweep + f"print(signup_requeue_stale(now={as_of}))")
            # then each becomes one subscriber with one confirmation in the outbox
            outbox = OutboundEmail.objects.filter(to__in=addresses, kind="funnels:confirm")
            wait_until(
                lambda: (
                    outbox.count() >= BURST
                    and not SignUp.objects.filter(
                        email__in=addresses, status=SignUp.Status.RECEIVED
                    ).exists()
                ),
                timeout=60,
                what="every sign-up to be processed",
            )
            assert Subscriber.objects.filter(email__in=addresses).count() == BURST
            assert sorted(outbox.values_list("to", flat=True)) == sorted(addresses)
            # ... then the emails whose message died with Redis
            run_in_app(env, sweep + f"print(email_requeue_stale(now={as_of}))")

            # and the outage really met requests mid-burst: the web processes logged that
            # they carried on without Redis
            web_log = (harness_log_dir / "drill-redis-web.log").read_text(errors="replace")
            assert "Cache unavailable" in web_log or "Could not queue" in web_log
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
