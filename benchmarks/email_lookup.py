"""Lookups by email address on PostgreSQL, with and without the UPPER(email) indexes of
6fd44fe: the ORM queries the app runs per sign-up, sign-in or purchase and per lead-magnet
download, timed on a filled database next to the baseline measured in the same run.

Django runs `email__iexact` as UPPER(email) = UPPER(%s) on PostgreSQL. The unique indexes
are on LOWER(email) and cannot answer it; 6fd44fe added an index on UPPER(email) for
funnels.Subscriber and accounts.User (and webinars.Registration, not measured here) and a
partial index on media.DownloadDelivery (UPPER(subscriber_email), source_name, created_at)
WHERE user_id IS NULL for a subscriber's download limit.

The lookups, each with the address in another case than stored (a hit):
  subscriber      Subscriber.objects.filter(email__iexact=addr).first()
  account         get_user_model().objects.filter(email__iexact=addr).first()
  download limit  media.downloads._limit_enforce's query for a subscriber (no account):
                  filter(source_name=…, created_at__gte=now - window, user__isnull=True,
                  subscriber_email__iexact=addr).order_by("created_at")
                  .values_list("created_at", flat=True)[:count]  (count, window = the
                  app's download_limit(), 5 in 30 days by default)

The baseline is the state before the commit: each "without" round runs in a transaction
that first drops the query's new index (DROP INDEX is transactional in PostgreSQL) and is
rolled back at the end; each "with" round runs in the same kind of transaction without the
DROP. Rounds alternate per query (with/without, the order swapped every round) on the same
random addresses; the median round is reported, with one line of each plan (EXPLAIN) as
evidence of which scan answered it. Untimed warm-up rounds of both kinds come first.

The database: N subscribers (distinct mixed-case addresses), N/10 accounts, and N/2
downloads of one lead magnet by N/20 subscribers (10 each) spread over the last 29 days,
written by INSERT … SELECT generate_series, then ANALYZE.

    .venv/bin/python benchmarks/email_lookup.py [--subscribers 200000] [--rounds 3]
                        [--lookups 300] [--database-url postgres://…/name] [--keep]

It creates the database (postgres://postgres@127.0.0.1:5432/lodestone_bench_lookup unless
--database-url names another), migrates it with config.settings.test and drops it at the
end unless --keep. The database name must contain "bench": an existing one of that name is
dropped and made again.
"""

import argparse
import os
import random
import statistics
import sys
import time

from benchdb import bench_database, setup_django

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/lodestone_bench_lookup"
SOURCE_NAME = "lead-magnets/bench-launch-checklist.pdf"
SEED = 20261123


# Stored addresses, mixed case; looked up lower-cased (email__iexact must match them).
def subscriber_address(n: int) -> str:
    return f"Leila.Karimi.{n}@Lodestone-Mail{n % 37}.Example"


def account_address(n: int) -> str:
    return f"Dariush.Buyer.{n}@Shop-Mail{n % 41}.Example"


# The same addresses in SQL, for statements sent with parameters (hence %% for %).
SUBSCRIBER_SQL = "format('Leila.Karimi.%%s@Lodestone-Mail%%s.Example', {g}, {g} %% 37)"
ACCOUNT_SQL = "format('Dariush.Buyer.%%s@Shop-Mail%%s.Example', {g}, {g} %% 41)"


def downloader(k: int) -> int:
    """The subscriber number of the k-th downloader (0-based): spread over the list."""
    return k * 20 + 1


def fill(subscribers: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from funnels.models import Subscriber
    from media.models import DownloadDelivery

    accounts, downloaders, downloads = subscribers // 10, subscribers // 20, subscribers // 2
    sub_t = Subscriber._meta.db_table
    user_t = get_user_model()._meta.db_table
    dl_t = DownloadDelivery._meta.db_table
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {sub_t} (email, name, time_zone, status, created_at,
                                     audience_sync_error)
                SELECT {SUBSCRIBER_SQL.format(g="g")}, 'Leila Karimi', 'Asia/Tehran',
                       'confirmed', now() - g * interval '1 minute', ''
                FROM generate_series(1, %s) AS g""",
            [subscribers],
        )
        cursor.execute(
            f"""INSERT INTO {user_t} (password, last_login, is_superuser, email, first_name,
                                      last_name, is_staff, is_active, date_joined)
                SELECT '!', NULL, false, {ACCOUNT_SQL.format(g="g")}, 'Dariush', 'Buyer',
                       false, true, now() - g * interval '1 minute'
                FROM generate_series(1, %s) AS g""",
            [accounts],
        )
        # Download g is by downloader (g - 1) % downloaders, i.e. subscriber k * 20 + 1.
        who = f"(((g - 1) %% {downloaders}) * 20 + 1)"
        cursor.execute(
            f"""INSERT INTO {dl_t} (uid, marker, user_id, subscriber_email, recipient_name,
                                    order_reference, source_name, source_sha256,
                                    download_filename, sent_sha256, sent_size, stamped,
                                    ip_address, user_agent, created_at)
                SELECT gen_random_uuid(), 'bench-' || g, NULL,
                       {SUBSCRIBER_SQL.format(g=who)}, 'Leila Karimi', '', %s,
                       repeat('a', 64), 'launch-checklist.pdf', md5(g::text) || md5(g::text),
                       1048576, true, '203.0.113.9', 'Firefox/140',
                       now() - random() * interval '29 days'
                FROM generate_series(1, %s) AS g""",
            [SOURCE_NAME, downloads],
        )
    with connection.cursor() as cursor:
        for table in (sub_t, user_t, dl_t):
            cursor.execute(f"ANALYZE {table}")
    return {
        "subscribers": subscribers,
        "accounts": accounts,
        "downloaders": downloaders,
        "downloads": downloads,
        "seconds": time.perf_counter() - started,
    }


def lookups(sizes: dict) -> list[dict]:
    """Each measured query: its label, the index 6fd44fe added for it, the address pool."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from funnels.models import Subscriber
    from media.downloads import download_limit
    from media.models import DownloadDelivery

    user_model = get_user_model()
    count, window = download_limit()
    count = count if count > 0 else 5

    def subscriber(addr):
        return Subscriber.objects.filter(email__iexact=addr)

    def account(addr):
        return user_model.objects.filter(email__iexact=addr)

    def download_limit_rows(addr):
        return (
            DownloadDelivery.objects.filter(
                source_name=SOURCE_NAME,
                created_at__gte=timezone.now() - window,
                user__isnull=True,
                subscriber_email__iexact=addr,
            )
            .order_by("created_at")
            .values_list("created_at", flat=True)[:count]
        )

    def first_query(queryset):  # what QuerySet.first() sends
        return (queryset if queryset.ordered else queryset.order_by("pk"))[:1]

    return [
        {
            "label": "subscriber `.first()`",
            "index": "funnels_subscriber_email_up",
            "pool": [subscriber_address(n) for n in range(1, sizes["subscribers"] + 1)],
            "run": lambda addr: subscriber(addr).first() is not None,
            "explain": lambda addr: first_query(subscriber(addr)),
        },
        {
            "label": "account `.first()`",
            "index": "accounts_user_email_up",
            "pool": [account_address(n) for n in range(1, sizes["accounts"] + 1)],
            "run": lambda addr: account(addr).first() is not None,
            "explain": lambda addr: first_query(account(addr)),
        },
        {
            "label": f"download limit (`[:{count}]`, {window.days} days)",
            "index": "media_delivery_subscriber_lim",
            "pool": [subscriber_address(downloader(k)) for k in range(sizes["downloaders"])],
            "run": lambda addr: len(list(download_limit_rows(addr))) == count,
            "explain": download_limit_rows,
        },
    ]


def scan_line(plan: str) -> str:
    """The plan's scan node naming what was read, without costs; with its filter if any."""
    raw = plan.splitlines()
    lines = [line.strip().removeprefix("->").strip() for line in raw]
    scans = [i for i, line in enumerate(lines) if "Scan" in line]
    if not scans:
        return lines[0].split("  (")[0]
    pick = next((i for i in scans if " using " in lines[i] or "Bitmap Index" in lines[i]), scans[0])
    text = lines[pick].split("  (")[0]
    # The node's own details (Index Cond, Filter) come before the next "->" node.
    for i in range(pick + 1, len(lines)):
        if raw[i].lstrip().startswith("->"):
            break
        if lines[i].startswith("Filter:") and "upper" in lines[i]:
            text += ", Filter: upper(…) = upper(…)"
    return text


def timed(query: dict, addresses: list[str], with_index: bool, plans: dict | None) -> float:
    """Lookups per second over `addresses` in one transaction, rolled back at the end."""
    from django.db import connection, transaction

    with transaction.atomic():
        if not with_index:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP INDEX "{query["index"]}"')
        if plans is not None:
            plans[with_index] = scan_line(query["explain"](addresses[0]).explain())
        started = time.perf_counter()
        found = sum(query["run"](addr) for addr in addresses)
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    assert found == len(addresses), (query["label"], with_index, found, len(addresses))
    return len(addresses) / seconds


def index_present(name: str) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [name])
        return cursor.fetchone() is not None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=300, help="lookups per query and round")
    parser.add_argument("--database-url", default=DEFAULT_URL, help="the database to create")
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    opts = parser.parse_args()
    if opts.subscribers < 400:
        parser.error("--subscribers: at least 400")

    with bench_database(opts.database_url, keep=opts.keep):
        setup_django(opts.database_url, label="lookup")
        from django.core.management import call_command
        from django.db import connection

        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        migrate_seconds = time.perf_counter() - started
        sizes = fill(opts.subscribers)
        queries = lookups(sizes)
        for query in queries:
            assert index_present(query["index"]), query["index"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            server_version = cursor.fetchone()[0].split(" on ")[0]

        rng = random.Random(SEED)
        plans = {q["label"]: {} for q in queries}
        rates = {q["label"]: {True: [], False: []} for q in queries}
        # Warm-up: both kinds once, untimed; the plans are read here.
        for query in queries:
            sample = [a.lower() for a in rng.sample(query["pool"], min(30, len(query["pool"])))]
            for with_index in (True, False):
                timed(query, sample, with_index, plans[query["label"]])
        for round_no in range(opts.rounds):
            for query in queries:
                size = min(opts.lookups, len(query["pool"]))
                sample = [a.lower() for a in rng.sample(query["pool"], size)]
                order = (True, False) if round_no % 2 == 0 else (False, True)
                for with_index in order:
                    rates[query["label"]][with_index].append(timed(query, sample, with_index, None))
        for query in queries:  # every DROP INDEX was rolled back
            assert index_present(query["index"]), query["index"]

    print(
        f"\n{sizes['subscribers']} subscribers, {sizes['accounts']} accounts,"
        f" {sizes['downloads']} downloads of one magnet by {sizes['downloaders']} subscribers"
        f" (filled in {sizes['seconds']:.1f} s; migrate {migrate_seconds:.0f} s);"
        f" {opts.lookups} random addresses per query and round (lower-cased, all hits),"
        f" {opts.rounds} interleaved rounds, median round; {server_version};"
        f" load {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| lookup | with index (lookups/s) | range | without (lookups/s) | range"
        " | ratio with ÷ without | plan with index | plan without (before 6fd44fe) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for query in queries:
        label = query["label"]
        got, base = rates[label][True], rates[label][False]
        with_m, without_m = statistics.median(got), statistics.median(base)
        print(
            f"| {label} | {with_m:.0f} | {min(got):.0f}–{max(got):.0f}"
            f" | {without_m:.1f} | {min(base):.1f}–{max(base):.1f}"
            f" | {with_m / without_m:.1f}× | `{plans[label][True]}`"
            f" | `{plans[label][False]}` |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
