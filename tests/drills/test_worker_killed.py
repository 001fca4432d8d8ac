"""Drill: the Celery process sending an email is SIGKILLed in the middle of the SMTP
conversation. Nothing is lost and nothing is sent twice: the task is acknowledged late, so
the worker hands it on at once; the outbox row's claim is a lease, so the next try waits
for it to run out and then sends the message once, with the same Message-ID."""

import asyncio
import os
import signal
import threading

import pytest

from core.models import OutboundEmail
from core.services import outbound_message_id
from tests.harness.ports import free_port
from tests.harness.smtp import SmtpSink
from tests.harness.waiting import wait_until

from .conftest import drill_address
from .servers import (
    celery_worker_running,
    drill_env,
    private_redis_running,
    run_in_app,
    unique_queue,
    worker_children,
)

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_SECONDS = 3


class HoldingSink(SmtpSink):
    """An SMTP sink that stops answering when a given recipient is named (RCPT TO), until
    released: the sender is then in the middle of its SMTP conversation."""

    def __init__(self, hold_for: str) -> None:
        super().__init__()
        self.hold_for = hold_for
        self.holding = threading.Event()
        self.release = threading.Event()
        self.held_once = False

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == self.hold_for and not self.held_once:
            self.held_once = True
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_worker_killed_mid_send_sends_the_email_once_with_the_same_message_id(
    test_database_url, harness_log_dir, tmp_path
):
    to = drill_address("killed")
    sink = HoldingSink(hold_for=to)
    sink.start()
    try:
        with private_redis_running(harness_log_dir / "drill-kill-redis.log") as redis_server:
            queue = unique_queue("drill-kill")
            env = drill_env(
                database_url=test_database_url,
                var_dir=tmp_path / "var",
                site_url=f"http://127.0.0.1:{free_port()}",
                redis_url=redis_server.url,
                queue=queue,
                email_url=sink.url,
                LODESTONE_EMAIL_SEND_LEASE=str(LEASE_SECONDS),
            )
            # given a worker as production runs it: a prefork master and its pool process
            with celery_worker_running(
                env=env,
                queue=queue,
                log_path=harness_log_dir / "drill-kill-worker.log",
                pool="prefork",
            ) as worker:
                # when an email is committed and queued, and the pool process sending it is
                # SIGKILLed while the SMTP server waits on it
                pk = int(
                    run_in_app(
                        env,
                        "from core.services import email_enqueue; "
                        f"print(email_enqueue(to='{to}', subject='Your receipt', "
                        "text_body='Thank you.', kind='drill:receipt').pk)",
                    ).split()[-1]
                )
                assert sink.holding.wait(60), "the worker never reached the SMTP server"
                [child] = worker_children(worker)
                os.kill(child, signal.SIGKILL)
                sink.release.set()

                # then the row is sent, by a later try, exactly once
                wait_until(
                    lambda: OutboundEmail.objects.get(pk=pk).status == OutboundEmail.Status.SENT,
                    timeout=60,
                    what="the email to be sent after the kill",
                )
                assert worker.running, "the worker's master must survive its pool process"
                row = OutboundEmail.objects.get(pk=pk)
                assert row.attempts == 2
                received = sink.matching(lambda m: str(m["To"]) == to)
                assert len(received) == 1
                assert received[0]["Message-ID"] == outbound_message_id(row) == row.message_id
                log = worker.log_path.read_text()
                assert "WorkerLostError" in log or "signal 9" in log
    finally:
        sink.stop()
