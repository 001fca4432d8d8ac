"""Drip scheduler and sender throughput, each next to a naive per-subscriber loop measured
in the same run on the same database.

1. Claiming: 1,000,000 confirmed subscribers, each enrolled in a sequence with a step due,
   seeded with generate_series into a database of this script's own. The scheduler's
   claim (FOR UPDATE SKIP LOCKED on the partial next-send index, 5,000 enrolments per
   statement) runs until nothing is due; sends found and claimed per second, with the
   process's memory sampled after every batch. Then again with the send tasks published
   to Redis, as production runs it. The delivery rows are written by the send tasks, so
   their cost is in the sending figure. The naive loop reads due enrolments with the ORM
   and writes a delivery and the enrolment back one by one (run for a bounded time).
2. Sending: claimed enrolments sent by one process as the worker does it, per task of
   100: their delivery rows written in one statement, checked, rendered, sent over one
   reused SMTP connection into a local aiosmtpd sink (its own process), each recorded as
   sent; the rate-limit counters on Redis. One batch runs first, untimed (a worker is a
   long-lived process), then three rounds; the median round is reported, with the range
   (other work on a shared machine moves single rounds). The naive loop writes each
   delivery row, renders every template per email, opens a connection per email (as a
   per-email outbox task does) and saves rows one by one.

    .venv/bin/python benchmarks/drip_scheduler.py [--subscribers 1000000] [--send 5000]
                                                  [--send-rounds 3]

Needs PostgreSQL and Redis on 127.0.0.1 (it creates and drops its own database and uses
Redis database 14). Loopback only; bounded in size and time. Prints a markdown table.
"""

import argparse
import datetime
import os
import subprocess
import sys
import time
import zoneinfo
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "lodestone_bench_drip"
PG = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/14"
QUEUE = "bench-drip"


def psql(sql: str, db: str = "postgres") -> None:
    subprocess.run(["psql", f"{PG}/{db}", "-qc", sql], check=True, capture_output=True)


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daytime_zones() -> list[str]:
    """Fixed-offset zones where it is now between 08:00 and 20:00, so every send of the
    benchmark is inside its window whatever the hour of the run."""
    now = datetime.datetime.now(datetime.UTC)
    zones = []
    for offset in range(-12, 15):
        name = "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
        if 8 <= now.astimezone(zoneinfo.ZoneInfo(name)).hour < 20:
            zones.append(name)
    return zones


def setup_django() -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=f"{PG}/{DB_NAME}",
        REDIS_URL=REDIS,
        CELERY_TASK_DEFAULT_QUEUE=QUEUE,
        LODESTONE_SITE_URL="https://bench.example",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings

    settings.DRIP_RATE_PER_MINUTE = 10**9
    settings.DRIP_DOMAIN_RATE_PER_MINUTE = 10**9
    settings.DRIP_WARMUP_PER_HOUR = 0
    # The rate-limit counters on Redis, as in production (the test settings keep them in
    # process memory); set before the first cache access.
    settings.CACHES = {
        "default": {
            "BACKEND": "core.cache.FailOpenRedisCache",
            "LOCATION": REDIS,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


def seed(count: int) -> int:
    from django.db import connection

    from funnels.models import Sequence, SequenceStep

    sequence = Sequence.objects.create(name="Bench sequence")
    step = SequenceStep.objects.create(
        sequence=sequence,
        sort_order=0,
        subject="Hello {{ first_name|default:'there' }}, day one",
        preheader="What to do first",
        body=(
            "Hi {{ first_name }},\n\nHere is the plan for today: https://bench.example/plan\n\n"
            "And [the checklist](https://bench.example/checklist) if you missed it.\n\n"
            "— {{ sender_name }}"
        ),
    )
    SequenceStep.objects.create(
        sequence=sequence, sort_order=1, delay_days=2, subject="Day three", body="More."
    )
    zones = daytime_zones()
    zone_array = "ARRAY[" + ",".join(f"'{z}'" for z in zones) + "]"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO funnels_subscriber (email, name, time_zone, status, created_at,
                confirmed_at, audience_sync_error)
            SELECT 'reader' || g || '@d' || (g %% 97) || '.bench.example', 'Reader ' || g,
                   ({zone_array})[1 + g %% {len(zones)}], 'confirmed', now(), now(), ''
            FROM generate_series(1, %s) AS g
            """,
            [count],
        )
        cursor.execute(
            """
            INSERT INTO funnels_enrolment (sequence_id, subscriber_id, status, source,
                exit_reason, next_step_id, steps_done, next_send_at, enrolled_at)
            SELECT %s, id, 'active', 'optin', '', %s, 0,
                   now() - (id %% 3600) * interval '1 second', now() - interval '1 hour'
            FROM funnels_subscriber
            """,
            [sequence.pk, step.pk],
        )
        cursor.execute("VACUUM ANALYZE funnels_subscriber")
        cursor.execute("VACUUM ANALYZE funnels_enrolment")
    return sequence.pk


def reset_claims() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE funnels_dripdelivery")
        cursor.execute(
            "UPDATE funnels_enrolment SET next_send_at = now() - (id % 3600) * interval '1 second',"
            " claimed_at = NULL"
        )
        cursor.execute("VACUUM ANALYZE funnels_enrolment")


def bench_claims(*, dispatch: bool) -> dict:
    from django.db import transaction
    from django.utils import timezone

    from funnels.sequences import scheduler

    now = timezone.now()
    claimed = 0
    start_rss = peak = rss_mib()
    started = time.perf_counter()
    while True:
        with transaction.atomic():
            batch = scheduler.claim_due_enrolments(now=now, limit=scheduler.BATCH_SIZE)
            if dispatch and batch:
                scheduler._dispatch(batch, None)
        claimed += len(batch)
        peak = max(peak, rss_mib())
        if len(batch) < scheduler.BATCH_SIZE:
            break
    seconds = time.perf_counter() - started
    return {
        "claimed": claimed,
        "seconds": seconds,
        "rate": claimed / seconds,
        "rss": (start_rss, max(peak, rss_mib())),
        "load": os.getloadavg()[0],
    }


def bench_naive_claims(limit_seconds: float) -> dict:
    """Per subscriber: read a due enrolment with the ORM, create its delivery, save it."""
    from django.utils import timezone

    from funnels.models import DripDelivery, Enrolment

    now = timezone.now()
    done = 0
    started = time.perf_counter()
    for enrolment in Enrolment.objects.filter(
        status=Enrolment.Status.ACTIVE, next_send_at__lte=now
    ).iterator(chunk_size=500):
        DripDelivery.objects.get_or_create(
            enrolment=enrolment,
            step_id=enrolment.next_step_id,
            defaults={"subscriber_id": enrolment.subscriber_id, "due_at": now},
        )
        enrolment.next_send_at = now + datetime.timedelta(minutes=15)
        enrolment.claimed_at = now
        enrolment.save(update_fields=["next_send_at", "claimed_at"])
        done += 1
        if time.perf_counter() - started > limit_seconds:
            break
    seconds = time.perf_counter() - started
    return {"claimed": done, "seconds": seconds, "rate": done / seconds}


def claimed_sample(count: int) -> tuple[str, list[tuple[int, int]]]:
    """``count`` enrolments still at their first step, made due and claimed as the
    scheduler claims them (no delivery rows yet)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from funnels.sequences import scheduler

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE funnels_enrolment SET next_send_at = now() - interval '1 hour',"
            " claimed_at = NULL WHERE id IN (SELECT id FROM funnels_enrolment"
            " WHERE steps_done = 0 ORDER BY id LIMIT %s)",
            [count],
        )
    with transaction.atomic():
        batch = scheduler.claim_due_enrolments(now=timezone.now(), limit=count)
    return batch.token, batch.enrolments


def bench_send(count: int, port: int) -> dict:
    """As the worker does it: per task of 100 claimed enrolments, write their delivery
    rows, check, render, send over one SMTP connection, record each email as sent."""
    from django.core.mail import get_connection

    from funnels.sequences import scheduler, sending

    def send_batch(token, claims) -> int:
        connection = get_connection(
            "django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=port
        )
        result = sending.deliveries_send(enrolments=claims, token=token, connection=connection)
        if result.errors:
            raise SystemExit(f"send errors: {result.errors[:3]}")
        return result.sent

    token, claims = claimed_sample(count)
    sent = 0
    start_rss = rss_mib()
    started = time.perf_counter()
    cpu_started = time.process_time()
    for i in range(0, len(claims), scheduler.TASK_SIZE):
        sent += send_batch(token, claims[i : i + scheduler.TASK_SIZE])
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {
        "sent": sent,
        "seconds": seconds,
        "rate": sent / seconds,
        "cpu_ms": cpu / sent * 1000,
        "rss": (start_rss, rss_mib()),
        "load": os.getloadavg()[0],
    }


def bench_send_rounds(count: int, port: int, rounds: int) -> dict:
    """bench_send ``rounds`` times (after one untimed batch: a worker is a long-lived
    process, its first imports and connections are not what is measured); the median
    round, with the range, since other work on the machine moves single rounds."""
    from funnels.sequences import scheduler

    bench_send(scheduler.TASK_SIZE, port)
    results = sorted((bench_send(count, port) for _ in range(rounds)), key=lambda r: r["rate"])
    median = results[len(results) // 2]
    return {
        **median,
        "rates": [round(r["rate"]) for r in results],
        "loads": [round(r["load"], 1) for r in results],
    }


def bench_naive_send(count: int, port: int, limit_seconds: float) -> dict:
    """Per subscriber: its delivery row, a full template render, a new SMTP connection per
    email, row saves."""
    from django.core.mail import EmailMultiAlternatives, get_connection
    from django.utils import timezone

    from funnels.models import DripDelivery, Enrolment
    from funnels.sequences import rendering
    from funnels.sequences.admin_views import render_for

    _token, claims = claimed_sample(count)
    sent = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    for enrolment_id, step_id in claims:
        enrolment = Enrolment.objects.select_related("subscriber", "next_step").get(pk=enrolment_id)
        delivery, _created = DripDelivery.objects.get_or_create(
            enrolment=enrolment,
            step_id=step_id,
            defaults={"subscriber_id": enrolment.subscriber_id, "due_at": timezone.now()},
        )
        message: rendering.Message = render_for(enrolment.next_step, enrolment.subscriber)
        mail = EmailMultiAlternatives(
            subject=message.subject,
            body=message.text,
            to=[enrolment.subscriber.email],
            connection=get_connection(
                "django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=port
            ),
        )
        mail.attach_alternative(message.html, "text/html")
        mail.send()
        delivery.status = "sent"
        delivery.sent_at = timezone.now()
        delivery.save()
        enrolment.steps_done += 1
        enrolment.save()
        sent += 1
        if time.perf_counter() - started > limit_seconds:
            break
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {"sent": sent, "seconds": seconds, "rate": sent / seconds, "cpu_ms": cpu / sent * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--send", type=int, default=5000)
    parser.add_argument("--send-rounds", type=int, default=3)
    parser.add_argument("--naive-seconds", type=float, default=15)
    opts = parser.parse_args()

    psql(f"DROP DATABASE IF EXISTS {DB_NAME}")
    psql(f"CREATE DATABASE {DB_NAME}")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"{PG}/{DB_NAME}",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-l",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        setup_django()
        import redis

        redis_client = redis.Redis.from_url(REDIS)
        t0 = time.perf_counter()
        seed(opts.subscribers)
        seeded = time.perf_counter() - t0
        print(
            f"seeded {opts.subscribers:,} subscribers and enrolments in {seeded:.1f} s", flush=True
        )

        claims = bench_claims(dispatch=False)
        print(f"claim only: {claims}", flush=True)
        reset_claims()
        redis_client.delete(QUEUE)
        claims_queued = bench_claims(dispatch=True)
        queued_tasks = redis_client.llen(QUEUE)
        redis_client.delete(QUEUE)
        print(f"claim + queue: {claims_queued}, {queued_tasks} tasks", flush=True)

        send = bench_send_rounds(opts.send, port, opts.send_rounds)
        print(f"send: {send}", flush=True)
        naive_send = bench_naive_send(opts.send, port, opts.naive_seconds)
        print(f"naive send: {naive_send}", flush=True)
        reset_claims()
        naive_claims = bench_naive_claims(opts.naive_seconds)
        print(f"naive claims: {naive_claims}", flush=True)
    finally:
        sink.terminate()
        sink.wait(10)
        from django.db import connections

        connections.close_all()
        psql(f"DROP DATABASE IF EXISTS {DB_NAME}")

    n = opts.subscribers
    print()
    print("| measure | ours | naive loop | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| due sends found and claimed, per s | {claims['rate']:,.0f} "
        f"| {naive_claims['rate']:,.0f} | {claims['rate'] / naive_claims['rate']:.0f}× |"
    )
    print(
        f"| all {n:,} claimed, s | {claims['seconds']:.1f} | "
        f"~{n / naive_claims['rate']:,.0f} (extrapolated) | |"
    )
    print(
        f"| claimed and send tasks queued to Redis, per s | {claims_queued['rate']:,.0f} "
        f"({queued_tasks:,} tasks) | | |"
    )
    print(
        f"| process memory while claiming, MiB (start → peak) | "
        f"{claims['rss'][0]:.0f} → {claims['rss'][1]:.0f} | | |"
    )
    print(
        f"| emails rendered and sent per s, one process (aiosmtpd sink) | {send['rate']:,.0f} "
        f"| {naive_send['rate']:,.0f} | {send['rate'] / naive_send['rate']:.1f}× |"
    )
    print(
        f"| CPU of the sending process per email, ms | {send['cpu_ms']:.2f} "
        f"| {naive_send['cpu_ms']:.2f} | {naive_send['cpu_ms'] / send['cpu_ms']:.1f}× |"
    )
    print(
        f"| sending rounds, emails per s (low → high) | "
        f"{' / '.join(f'{r:,}' for r in send['rates'])} | | |"
    )
    print(
        f"| machine load (1-min average, 2 cores): claiming / sending rounds | "
        f"{claims['load']:.1f} / {' / '.join(str(x) for x in send['loads'])} | | |"
    )
    print(
        f"| sample sizes | {claims['claimed']:,} claims, {opts.send_rounds} × "
        f"{send['sent']:,} emails | {naive_claims['claimed']:,} claims, "
        f"{naive_send['sent']:,} emails | |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
