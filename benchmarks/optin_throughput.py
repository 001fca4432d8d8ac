"""Opt-in throughput: sign-ups per second and latency of real opt-in POSTs against a real
server process (gunicorn, production settings) on PostgreSQL, next to the baseline issue #8
names — a minimal Django view that inserts one row (benchmarks/optin_bench_urls.py, mounted
only in this benchmark's server) — posted the same form body in the same run on the same
server. The ratio is the result.

After the load, a real Celery worker drains the stored sign-ups (subscriber, consent,
token, confirmation email) and the rows are counted: every sign-up answered 2xx must be
stored once and end as exactly one subscriber with one confirmation email.

    .venv/bin/python benchmarks/optin_throughput.py [--seconds 10] [--rounds 3] [--connections 64] [--workers 3]

Needs PostgreSQL on 127.0.0.1 (it creates and drops its own database), Redis, and `wrk`
(Debian package). Loopback only; bounded in time.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = ROOT / ".venv" / "bin" / "python"
DB_NAME = "lodestone_bench_optin"
PG = "postgres://postgres@127.0.0.1:5432"

WRK_SCRIPT = r"""
counter = 0
local thread_id = 0
setup = function(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
init = function(args)
  body_prefix = args[1]
  csrf_cookie = args[2]
  csrf_token = args[3]
  referer = args[4]
  run_id = args[5]
end
request = function()
  counter = counter + 1
  local email = string.format("bench-%s-%d-%d@lodestone-bench.fi", run_id, tid, counter)
  local body = body_prefix .. "&email=" .. email
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Accept"] = "application/json",
    ["Cookie"] = "csrftoken=" .. csrf_cookie,
    ["X-CSRFToken"] = csrf_token,
    ["Referer"] = referer,
    ["X-Forwarded-Proto"] = "https",
  }, body)
end
done = function(summary, latency, requests)
  io.write(string.format("JSON{\"requests\":%d,\"seconds\":%f,\"p50_ms\":%f,\"p99_ms\":%f,\"errors\":%d,\"non2xx\":%d}\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql: str) -> None:
    subprocess.run(["psql", f"{PG}/postgres", "-qc", sql], check=True, capture_output=True)


def manage(env, *args, input_text=None):
    return subprocess.run(
        [str(PY), "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        input=input_text,
    )


SETUP = """
from django.core.files.base import ContentFile
from wagtail.models import Page, Site
from funnels.models import LandingPage, LeadMagnet
m = LeadMagnet(title="Bench magnet")
m.file.save("bench.pdf", ContentFile(b"%PDF-1.4 bench"), save=False)
m.save()
root = Page.get_first_root_node()
page = LandingPage(title="Bench", slug="bench", body=[("optin_form", {"heading": "Get it", "magnet": m, "ask_name": True,
    "button_label": "Send", "consent_text": "I agree.", "double_opt_in": True, "tags": "bench"})])
root.add_child(instance=page)
page.save_revision().publish()
Site.objects.all().delete()
Site.objects.create(hostname="127.0.0.1", port=80, root_page=page, is_default_site=True)
print("FORM", page.pk, next(iter(page.optin_forms())))
"""


def count(sql: str) -> int:
    return int(
        subprocess.run(
            ["psql", f"{PG}/{DB_NAME}", "-tAc", sql], capture_output=True, text=True, check=True
        ).stdout.strip()
    )


def run_wrk(url, seconds, connections, script_path, *args):
    cmd = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        script_path,
        url,
    ]
    if args:
        cmd += ["--", *args]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    return json.loads(re.search(r"JSON(\{.*\})", out).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved baseline/opt-in rounds")
    parser.add_argument(
        "--drain-limit", type=int, default=600, help="seconds the worker may take to drain"
    )
    opts = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")

    tmp = Path(tempfile.mkdtemp(prefix="lodestone-bench-"))
    env = {
        **os.environ,
        # Production settings, as a real launch runs them (HTTPS redirect off: plain loopback).
        "DJANGO_SETTINGS_MODULE": "optin_bench_settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)]),
        "DJANGO_SECRET_KEY": "benchmark-only-" + "x" * 48,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "LODESTONE_TRUSTED_PROXY_COUNT": "0",
        "DJANGO_STATIC_ROOT": str(tmp / "static"),
        "DATABASE_URL": f"{PG}/{DB_NAME}",
        "LODESTONE_VAR_DIR": str(tmp),
        "LODESTONE_OPTIN_IP_LIMITS": "100000000/60",
        "LODESTONE_OPTIN_EMAIL_LIMIT": "100000000/60",
        # Mail goes to the outbox table and a broker nobody consumes in this run: the
        # benchmark measures the request path, not SMTP.
        "REDIS_URL": "redis://127.0.0.1:6379/14",
        "CELERY_TASK_DEFAULT_QUEUE": "bench-optin",
        "DJANGO_CONN_MAX_AGE": "60",
    }
    psql(f"DROP DATABASE IF EXISTS {DB_NAME}")
    psql(f"CREATE DATABASE {DB_NAME}")
    server = None
    try:
        manage(env, "migrate", "--noinput")
        subprocess.run(
            [
                "psql",
                f"{PG}/{DB_NAME}",
                "-qc",
                "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, email varchar(254),"
                " created_at timestamptz NOT NULL)",
            ],
            check=True,
            capture_output=True,
        )
        manage(env, "collectstatic", "--noinput")
        page_id, form_id = re.search(
            r"FORM (\d+) (\S+)", manage(env, "shell", input_text=SETUP).stdout
        ).groups()
        port = free_port()
        server = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/gunicorn"),
                "config.wsgi:application",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(opts.workers),
                "--access-logfile",
                "/dev/null",
                "--error-logfile",
                str(tmp / "gunicorn.log"),
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        html = opener.open(base + "/").read().decode()
        # The landing page is edge-cacheable: no CSRF cookie; the form is checked by origin.
        csrf_cookie = next((c.value for c in jar if c.name == "csrftoken"), "none")
        rendered_at = re.search(r'name="rendered_at" value="([^"]+)"', html).group(1)
        time.sleep(2.1)  # the form's bot check wants a human-like pause after rendering
        body = urllib.parse.urlencode(
            {"name": "Bench", "consent": "on", "rendered_at": rendered_at, "utm_source": "bench"}
        )
        (tmp / "post.lua").write_text(WRK_SCRIPT)

        run_id = os.urandom(4).hex()
        post_args = (body, csrf_cookie, csrf_cookie, f"https://127.0.0.1:{port}/")
        # Interleaved rounds (baseline, opt-in, baseline, opt-in, ...): drift on a shared
        # machine hits both sides alike; the result is the median of the rounds' ratios.
        # Warm-up, not counted: every worker process imports, connects and reads the form
        # once before the first measured round.
        warmup = [
            run_wrk(
                base + path, 3, opts.connections, str(tmp / "post.lua"), *post_args, run_id + tag
            )
            for path, tag in (
                ("/bench/insert-one-row/", "wb"),
                (f"/f/subscribe/{page_id}/{form_id}/", "wo"),
            )
        ]
        rounds = []
        for n in range(opts.rounds):
            load_before = os.getloadavg()[0]
            baseline = run_wrk(
                f"{base}/bench/insert-one-row/",
                opts.seconds,
                opts.connections,
                str(tmp / "post.lua"),
                *post_args,
                f"{run_id}b{n}",
            )
            optin = run_wrk(
                f"{base}/f/subscribe/{page_id}/{form_id}/",
                opts.seconds,
                opts.connections,
                str(tmp / "post.lua"),
                *post_args,
                f"{run_id}o{n}",
            )
            rounds.append((baseline, optin, load_before, os.getloadavg()[0]))
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        server = None
        stored = count("SELECT count(*) FROM funnels_signup")
        distinct = count("SELECT count(DISTINCT lower(email)) FROM funnels_signup")

        # The worker's half: drain every stored sign-up, then count what it made.
        worker = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/celery"),
                "-A",
                "config.celery_app",
                "worker",
                "-Q",
                env["CELERY_TASK_DEFAULT_QUEUE"],
                "-c",
                "2",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "WARNING",
                "--logfile",
                str(tmp / "worker.log"),
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        drain_started = time.monotonic()
        try:
            deadline = drain_started + opts.drain_limit
            while time.monotonic() < deadline:
                if not count("SELECT count(*) FROM funnels_signup WHERE status = 'received'"):
                    break
                time.sleep(0.5)
            drain_seconds = time.monotonic() - drain_started
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
        waiting = count("SELECT count(*) FROM funnels_signup WHERE status = 'received'")
        failed = count("SELECT count(*) FROM funnels_signup WHERE status = 'failed'")
        subscribers = count("SELECT count(*) FROM funnels_subscriber")
        confirmations = count(
            "SELECT count(*) FROM core_outboundemail WHERE kind = 'funnels:confirm'"
        )
        confirmations_distinct = count(
            'SELECT count(DISTINCT lower("to")) FROM core_outboundemail'
            " WHERE kind = 'funnels:confirm'"
        )
    finally:
        if server:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        psql(f"DROP DATABASE IF EXISTS {DB_NAME}")
        subprocess.run(["redis-cli", "-n", "14", "flushdb"], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    def rate(r):
        return r["requests"] / r["seconds"]

    print(
        f"\nOpt-in throughput — {opts.workers} gunicorn workers, {opts.connections} connections,"
        f" {opts.seconds}s each, {os.cpu_count()} cores"
    )
    print(f"{'':34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'non-2xx':>9}{'load':>7}")
    ratios = []
    for n, (baseline, optin, load_before, load_after) in enumerate(rounds, 1):
        for label, r, load in (
            (f"{n}. minimal view inserting one row", baseline, load_before),
            (f"{n}. opt-in POST (sign-up)", optin, load_after),
        ):
            print(
                f"{label:34}{rate(r):>10.1f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}"
                f"{r['errors']:>8}{r['non2xx']:>9}{load:>7.1f}"
            )
        ratios.append(rate(optin) / rate(baseline))
    print(
        "\nopt-in / minimal view throughput ratio: "
        f"{statistics.median(ratios):.2f} (median; rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    # Sign-ups answered 2xx, the warm-up's included (its rows are stored too).
    answered = sum(optin["requests"] - optin["non2xx"] for _b, optin, _l1, _l2 in rounds)
    answered += warmup[1]["requests"] - warmup[1]["non2xx"]
    print(
        f"sign-ups stored: {stored} ({distinct} distinct addresses; wrk counted {answered}"
        " answered 2xx — a few more may be stored, answered after wrk's clock stopped)"
    )
    print(
        f"worker: drained in {drain_seconds:.1f}s ({stored / max(drain_seconds, 0.001):.0f}/s);"
        f" still waiting {waiting}, failed {failed}; subscribers {subscribers},"
        f" confirmation emails {confirmations} to {confirmations_distinct} addresses"
    )
    ok = (
        stored == distinct == subscribers == confirmations == confirmations_distinct
        and stored >= answered
        and not waiting
        and not failed
    )
    print("rows: every sign-up exactly once" if ok else "rows: MISMATCH (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
