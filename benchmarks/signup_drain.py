"""Sign-up drain throughput: the drain task's body (funnels.tasks_signups.signup_drain_task,
a batch of SIGNUP_DRAIN_BATCH sign-ups per transaction) run in this process on PostgreSQL,
next to the baseline measured in the same run on the same database: the same number of
sign-ups processed one by one through the per-sign-up path (services.signup_process, one
transaction each, what the drain did before batching and what its retry task still does).

Each round stores N fresh waiting sign-ups (distinct addresses, one landing page, form
and magnet) and times their processing; baseline and drain rounds alternate, three each;
the median round is reported with the queries per sign-up and the ratio. Email goes to the
outbox table and an in-memory broker: the benchmark measures the drain, not SMTP.

    .venv/bin/python benchmarks/signup_drain.py [--signups 500] [--rounds 3]
                                                [--database-url postgres://…/name]

Without --database-url it creates and drops its own database, lodestone_bench_drain, on
postgres://postgres@127.0.0.1:5432. Loopback only; bounded in size.
"""

import argparse
import contextlib
import os
import sys
import time
import uuid

from benchdb import bench_database, setup_django

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/lodestone_bench_drain"


def seed_page():
    from django.core.files.base import ContentFile
    from wagtail.models import Page, Site

    from funnels.models import LandingPage, LeadMagnet

    magnet = LeadMagnet(title="Bench magnet")
    magnet.file.save("bench.pdf", ContentFile(b"%PDF-1.4 bench"), save=False)
    magnet.save()
    page = LandingPage(
        title="Bench",
        slug=f"bench-{uuid.uuid4().hex[:6]}",
        body=[
            (
                "optin_form",
                {
                    "heading": "Get it",
                    "magnet": magnet,
                    "ask_name": True,
                    "button_label": "Send",
                    "consent_text": "Send me the checklist. Unsubscribe any time.",
                    "double_opt_in": True,
                    "tags": "bench, launch",
                },
            )
        ],
    )
    Page.get_first_root_node().add_child(instance=page)
    page.save_revision().publish()
    if not Site.objects.filter(is_default_site=True).exists():
        Site.objects.create(hostname="127.0.0.1", port=80, root_page=page, is_default_site=True)
    from funnels.selectors import optin_form_specs_of

    return next(iter(optin_form_specs_of(page).values()))


def store_signups(spec, count: int, tag: str) -> None:
    from funnels import services

    for n in range(count):
        services.signup_receive(
            spec=spec,
            email=f"{tag}-{n}@bench.example",
            name="Leila Karimi",
            consent=True,
            visitor=services.Visitor(
                ip_address="203.0.113.9", user_agent="Firefox/140", time_zone="Asia/Tehran"
            ),
            attribution=services.Attribution(utm_source="instagram", utm_campaign="launch"),
            queue=False,
        )


def one_by_one() -> int:
    from funnels import services

    ids = services.signups_waiting(limit=10**9)
    for signup_id in ids:
        services.signup_process(signup_id=signup_id, skip_busy=True)
    return len(ids)


def drain() -> int:
    from funnels import services
    from funnels.tasks_signups import signup_drain_task

    done, after = 0, 0
    while ids := services.signups_waiting(after_id=after, limit=services.SIGNUP_DRAIN_BATCH):
        done += signup_drain_task.run(after_id=after)  # the task's body, as a worker runs it
        after = ids[-1]
    return done


def timed(run, spec, count: int, tag: str) -> dict:
    from django.db import connection

    from funnels.models import SignUp

    store_signups(spec, count, tag)
    statements = 0

    def counted(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    # Statements sent through a cursor, savepoints included (BEGIN and COMMIT are not).
    with connection.execute_wrapper(counted):
        started = time.perf_counter()
        processed = run()
        seconds = time.perf_counter() - started
    left = SignUp.objects.exclude(status=SignUp.Status.PROCESSED).count()
    assert processed == count and left == 0, (processed, left)
    return {"seconds": seconds, "rate": count / seconds, "queries": statements / count}


def check_outcome(total: int) -> None:
    """Every sign-up of the run: one subscriber, one consent, one confirmation email."""
    from core.models import OutboundEmail
    from funnels.models import ConsentRecord, Subscriber

    counts = (
        Subscriber.objects.count(),
        ConsentRecord.objects.count(),
        OutboundEmail.objects.filter(kind="funnels:confirm").values("to").distinct().count(),
        OutboundEmail.objects.count(),
    )
    assert counts == (total,) * 4, counts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--signups", type=int, default=500, help="sign-ups per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", help="an existing database to use (not dropped)")
    opts = parser.parse_args()

    own_database = opts.database_url is None
    url = opts.database_url or DEFAULT_URL
    scope = bench_database(url) if own_database else contextlib.nullcontext()
    with scope:
        setup_django(url, label="drain")
        from django.core.management import call_command

        from funnels import services

        call_command("migrate", verbosity=0)
        spec = seed_page()
        # Untimed warm-up of both paths: templates compiled, tags and settings rows exist.
        run = uuid.uuid4().hex[:6]
        timed(one_by_one, spec, 20, f"warm-a-{run}")
        timed(drain, spec, 20, f"warm-b-{run}")

        results = {"one by one (baseline)": [], "drain (batched)": []}
        for round_no in range(opts.rounds):
            results["one by one (baseline)"].append(
                timed(one_by_one, spec, opts.signups, f"a{round_no}-{run}")
            )
            results["drain (batched)"].append(
                timed(drain, spec, opts.signups, f"b{round_no}-{run}")
            )
        check_outcome(40 + 2 * opts.rounds * opts.signups)

    median = {
        label: sorted(rounds, key=lambda r: r["rate"])[len(rounds) // 2]
        for label, rounds in results.items()
    }
    base = median["one by one (baseline)"]
    print(
        f"\n{opts.signups} waiting sign-ups per round, {opts.rounds} interleaved rounds, median"
        f" round; drain batch = {services.SIGNUP_DRAIN_BATCH}; load {os.getloadavg()[0]:.1f}\n"
    )
    print("| path | sign-ups/s (median) | range | ms / sign-up | queries / sign-up | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, rounds in results.items():
        m = median[label]
        rates = [r["rate"] for r in rounds]
        print(
            f"| {label} | {m['rate']:.0f} | {min(rates):.0f}–{max(rates):.0f}"
            f" | {1000 / m['rate']:.1f} | {m['queries']:.1f} | {m['rate'] / base['rate']:.2f}× |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
