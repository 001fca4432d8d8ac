"""Opt-in throughput: sign-ups per second and latency of real opt-in POSTs against a real
server process (gunicorn) on PostgreSQL, next to a minimal Django view (/healthz: one
SELECT 1) measured in the same run on the same server. The ratio is the result.

    .venv/bin/python benchmarks/optin_throughput.py [--seconds 15] [--connections 8] [--workers 3]

Needs PostgreSQL on 127.0.0.1 (it creates and drops its own database) and `wrk`
(Debian package). Loopback only; bounded in time.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
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
end
request = function()
  counter = counter + 1
  local email = string.format("bench-%d-%d-%d@lodestone-bench.fi", tid, counter, math.random(1, 1000000000))
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

GET_SCRIPT = r"""
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
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3)
    opts = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")

    tmp = Path(tempfile.mkdtemp(prefix="lodestone-bench-"))
    env = {
        **os.environ,
        # Production settings, as a real launch runs them (HTTPS redirect off: plain loopback).
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
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
        csrf_cookie = next(c.value for c in jar if c.name == "csrftoken")
        rendered_at = re.search(r'name="rendered_at" value="([^"]+)"', html).group(1)
        time.sleep(2.1)  # the form's bot check wants a human-like pause after rendering
        body = urllib.parse.urlencode(
            {"name": "Bench", "consent": "on", "rendered_at": rendered_at, "utm_source": "bench"}
        )
        (tmp / "post.lua").write_text(WRK_SCRIPT)
        (tmp / "get.lua").write_text(GET_SCRIPT)

        baseline = run_wrk(base + "/healthz", opts.seconds, opts.connections, str(tmp / "get.lua"))
        optin = run_wrk(
            f"{base}/f/subscribe/{page_id}/{form_id}/",
            opts.seconds,
            opts.connections,
            str(tmp / "post.lua"),
            body,
            csrf_cookie,
            csrf_cookie,
            f"https://127.0.0.1:{port}/",
        )
        count = subprocess.run(
            ["psql", f"{PG}/{DB_NAME}", "-tAc", "SELECT count(*) FROM funnels_subscriber"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
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
        f"\nOpt-in throughput — {opts.workers} gunicorn workers, {opts.connections} connections, {opts.seconds}s each, {os.cpu_count()} cores"
    )
    print(f"{'':28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'non-2xx':>9}")
    for label, r in (("minimal view (/healthz)", baseline), ("opt-in POST (sign-up)", optin)):
        print(
            f"{label:28}{rate(r):>10.1f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['errors']:>8}{r['non2xx']:>9}"
        )
    print(f"\nopt-in / minimal view throughput ratio: {rate(optin) / rate(baseline):.2f}")
    print(
        f"subscribers stored: {count} (requests answered 2xx: {optin['requests'] - optin['non2xx']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
