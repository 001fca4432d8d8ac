"""Launch-day load on the production-like stack (infra/stack.py), each figure next to its
baseline measured in the same run, through the same nginx:

    .venv/bin/python benchmarks/launch_load.py [--seconds 10] [--connections 64] [--checkouts 1000]

| phase | what | baseline |
| --- | --- | --- |
| landing | GET a landing page with an opt-in form, through nginx (edge cache) → gunicorn | nginx serving the same bytes as a static file |
| opt-in | POST the opt-in form (unique addresses), 64 connections | /healthz, a minimal Django view (one query), as benchmarks/optin_throughput.py |
| download | GET a stamped 300-page PDF (Django checks and records; nginx sends it, media/accel.py) | nginx serving the unstamped file |
| checkout | POST the buy button: a Checkout Session on the Stripe stand-in | — |
| webhooks | N distinct `checkout.session.completed` events + 10% duplicates, signed like Stripe, 64 at once, through nginx | — |

After the run the rows are counted: every answered sign-up is stored once, and N webhooks
made exactly N orders and N entitlements. Starts its own stack (stopping it at the end; stop
a running one first), loopback only, bounded in time (each wrk phase `--seconds`). Needs
wrk (infra/install-system-packages.sh).
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "infra"))
import stack  # noqa: E402  (infra/stack.py)

PY = str(Path(sys.executable))
BENCH_ENV = {
    # Launch-day settings for the run: no per-IP opt-in limit (wrk is one IP), no download
    # cap (one buyer downloads thousands of times), no access logs on the hot path.
    "LODESTONE_OPTIN_IP_LIMITS": "1000000000/60",
    "LODESTONE_OPTIN_EMAIL_LIMIT": "1000000000/60",
    "LODESTONE_DOWNLOAD_LIMIT_COUNT": "0",
    "GUNICORN_ACCESSLOG": "/dev/null",
}

REPORT = r"""
done = function(summary, latency, requests)
  io.write(string.format("JSON{\"requests\":%d,\"seconds\":%f,\"p50_ms\":%f,\"p99_ms\":%f,\"errors\":%d,\"non2xx\":%d,\"bytes\":%d}\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.bytes))
end
"""

OPTIN = r"""
local counter = 0
local thread_id = 0
setup = function(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
init = function(args)
  body_prefix = args[1]
  origin = args[2]
  run_id = args[3]
end
request = function()
  counter = counter + 1
  local email = string.format("launch-%s-%d-%d@bench.lodestone-mail.fi", run_id, tid, counter)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Accept"] = "application/json",
    ["Origin"] = origin,
    ["Referer"] = origin .. "/",
  }, body_prefix .. "&email=" .. email)
end
"""

CHECKOUT = r"""
init = function(args)
  cookie = args[1]
  token = args[2]
  origin = args[3]
end
request = function()
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Cookie"] = "csrftoken=" .. cookie,
    ["X-CSRFToken"] = token,
    ["Origin"] = origin,
    ["Referer"] = origin .. "/",
  }, "csrfmiddlewaretoken=" .. token)
end
response = function(status, headers, body)
  if status ~= 303 then io.write("CHECKOUT-STATUS " .. status .. "\n") end
end
"""

SETUP = r"""
import json, time
from django.conf import settings
from django.core import signing
from django.core.files.base import ContentFile
from wagtail.models import Site
from funnels.forms import RENDERED_SALT
from funnels.models import LandingPage, LeadMagnet, Subscriber
from funnels import services as funnels_services
from media.stamping.samples import sample_pdf
from payments.models import Offer, Price, Product
from payments import services as payments_services

pdf = sample_pdf(300, photos=8)
open(BENCH_DIR + "/book.pdf", "wb").write(pdf)
magnet = LeadMagnet.objects.filter(title="Launch bench book").first()
if magnet is None:
    magnet = LeadMagnet(title="Launch bench book", download_filename="book.pdf")
    magnet.file.save("launch-bench-book.pdf", ContentFile(pdf), save=False)
    magnet.save()
page = LandingPage.objects.filter(slug="launch-bench").first()
if page is None:
    root = Site.objects.get(is_default_site=True).root_page
    page = LandingPage(title="Launch week", slug="launch-bench", body=[
        ("hero", {"headline": "Doors open Monday", "subheadline": "Six weeks to your first course."}),
        ("optin_form", {"heading": "Get the checklist", "magnet": magnet, "ask_name": True,
            "button_label": "Send it", "consent_text": "Send me the checklist. Unsubscribe any time.",
            "double_opt_in": True, "tags": "launch"}),
    ])
    root.add_child(instance=page)
    page.save_revision().publish()
subscriber, _ = Subscriber.objects.get_or_create(email="reader@bench.lodestone-mail.fi",
    defaults={"name": "Reader", "status": Subscriber.Status.CONFIRMED})
offer = Offer.objects.filter(slug="launch-bench-offer").first()
if offer is None:
    offer = Offer.objects.create(slug="launch-bench-offer", title="Launch bench course", is_published=True)
    offer.products.set([Product.objects.create(kind=Product.Kind.COURSE, slug="launch-bench-course", title="Launch bench course")])
    Price.objects.create(offer=offer, amount=4900, currency="usd")
payments_services.offer_sync_to_stripe(offer_id=offer.pk)
print("SETUP" + json.dumps({
    "landing": page.url, "page_id": page.pk, "form_id": str(next(iter(page.optin_forms()))),
    "download": funnels_services.magnet_download_url(subscriber, magnet, absolute=False),
    "offer": offer.slug,
    "rendered_at": signing.dumps(int(time.time()) - 60, salt=RENDERED_SALT),
}))
"""


def run_wrk(url: str, *, seconds: int, connections: int, script: str, args=()) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script + REPORT)
    threads = min(2, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    cmd += ["-s", handle.name, url]
    if args:
        cmd += ["--", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + 60)
    os.unlink(handle.name)
    result = json.loads(re.search(r"JSON(\{.*\})", out.stdout).group(1))
    result["rate"] = result["requests"] / result["seconds"]
    result["other_status"] = sorted(set(re.findall(r"CHECKOUT-STATUS (\d+)", out.stdout)))
    return result


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def sql(query: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(f"{stack.PG}/{stack.DB_NAME}") as conn:
        return conn.execute(query).fetchall()


def control(method: str, path: str, data=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.PORTS['stripe']}/_control/{path}",
        data=json.dumps(data).encode() if data is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def csrf_for(url: str) -> tuple[str, str]:
    from http.cookiejar import CookieJar

    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    html = opener.open(url, timeout=30).read().decode()
    cookie = next((c.value for c in jar if c.name == "csrftoken"), "")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    return cookie, token.group(1) if token else cookie


def buy_once(url: str, origin: str) -> str:
    """One checkout through the buy button; the Checkout Session id it redirected to."""
    cookie, token = csrf_for(url)
    body = urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode()
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request(
        "POST",
        parts.path,
        body=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={cookie}",
            "Origin": origin,
            "Referer": origin + "/",
        },
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 303:
        raise RuntimeError(f"buy answered {response.status}")
    return response.getheader("Location").rstrip("/").rsplit("/", 1)[-1]


def sign(payload: str, secret: str) -> str:
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def webhook_burst(origin: str, events: list[dict], *, duplicates: float, connections: int):
    deliveries = [json.dumps(e) for e in events]
    deliveries += random.Random(8).sample(deliveries, int(len(deliveries) * duplicates))
    random.Random(9).shuffle(deliveries)
    parts = urllib.parse.urlsplit(origin)
    chunks = [deliveries[i::connections] for i in range(connections)]

    def post_all(chunk: list[str]) -> list[tuple[int, float]]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        out = []
        for payload in chunk:
            started = time.perf_counter()
            conn.request(
                "POST",
                "/pay/stripe/webhook/",
                body=payload.encode(),
                headers={
                    "Content-Type": "application/json",
                    "Stripe-Signature": sign(payload, stack.WEBHOOK_SECRET),
                },
            )
            response = conn.getresponse()
            response.read()
            out.append((response.status, (time.perf_counter() - started) * 1000))
        conn.close()
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        results = [r for chunk in pool.map(post_all, chunks) for r in chunk]
    elapsed = time.perf_counter() - started
    latencies = sorted(ms for _s, ms in results)
    return {
        "requests": len(results),
        "seconds": elapsed,
        "rate": len(results) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "errors": 0,
        "non2xx": sum(1 for s, _ms in results if s != 200),
        "duplicates_sent": len(deliveries) - len(events),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="per wrk phase")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--checkouts", type=int, default=1000, help="distinct webhook events")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    opts = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: bash infra/install-system-packages.sh")
    if any(stack.running_pid(name) for name in stack.PROCESSES):
        sys.exit(
            "The stack is running; stop it first (infra/stack.py stop): the benchmark starts its own."
        )

    os.environ.update(BENCH_ENV)
    print(f"Starting the stack (load {load()})…", flush=True)
    subprocess.run([PY, str(ROOT / "infra/stack.py"), "start", "--no-demo"], check=True)
    results: dict[str, dict] = {}
    counts: dict[str, object] = {}
    try:
        origin = stack.site_url()
        bench_dir = stack.STACK / "bench"
        bench_dir.mkdir(exist_ok=True)
        setup = subprocess.run(
            [PY, "manage.py", "shell", "-c", f"BENCH_DIR = {str(bench_dir)!r}\n" + SETUP],
            cwd=ROOT,
            env=stack.app_env(),
            check=True,
            capture_output=True,
            text=True,
        )
        info = json.loads(re.search(r"SETUP(\{.*\})", setup.stdout).group(1))
        landing_url = origin + info["landing"]
        for _ in range(2):  # fill the edge cache
            page = urllib.request.urlopen(landing_url, timeout=30)
            body, cache_status = page.read(), page.headers.get("X-Cache-Status", "")
            cache_control = page.headers.get("Cache-Control", "")
        (bench_dir / "landing.html").write_bytes(body)
        urllib.request.urlopen(origin + info["download"], timeout=120).read()  # prepares once

        s, c = opts.seconds, opts.connections
        phases = [
            ("landing_static", origin + "/_bench/landing.html", ""),
            ("landing", landing_url, ""),
            ("minimal_view", origin + "/healthz", ""),
        ]
        for name, url, script in phases:
            print(f"  {name}…", flush=True)
            results[name] = run_wrk(url, seconds=s, connections=c, script=script)
            results[name]["load"] = load()
        optin_body = urllib.parse.urlencode(
            {"name": "Launch", "consent": "on", "rendered_at": info["rendered_at"]}
        )
        run_id = f"{int(time.time())}{random.randrange(1000)}"  # addresses new to this run
        print("  opt-in…", flush=True)
        results["optin"] = run_wrk(
            f"{origin}/f/subscribe/{info['page_id']}/{info['form_id']}/",
            seconds=s,
            connections=c,
            script=OPTIN,
            args=(optin_body, origin, run_id),
        )
        results["optin"]["load"] = load()
        # The request stores the sign-up row; the stack's worker makes the subscriber later.
        stored = sql(f"SELECT count(*) FROM funnels_signup WHERE email LIKE 'launch-{run_id}-%%'")[
            0
        ][0]
        doubled = sql(
            "SELECT count(*) FROM (SELECT lower(email) FROM funnels_signup "
            "GROUP BY lower(email) HAVING count(*) > 1) d"
        )[0][0]
        counts["optin_answered_2xx"] = results["optin"]["requests"] - results["optin"]["non2xx"]
        counts["optin_stored"] = stored
        counts["optin_duplicated"] = doubled

        dl_conns = min(c, 16)
        for name, url in (
            ("pdf_static", origin + "/_bench/book.pdf"),
            ("pdf_stamped", origin + info["download"]),
        ):
            print(f"  {name}…", flush=True)
            results[name] = run_wrk(url, seconds=s, connections=dl_conns, script="")
            results[name]["load"] = load()

        buy_url = f"{origin}/pay/buy/{info['offer']}/"
        # The stand-in starts empty each run; the database keeps earlier runs' attempts.
        first_attempt = sql("SELECT coalesce(max(id), 0) FROM payments_checkoutattempt")[0][0]
        cookie, token = csrf_for(buy_url)
        print("  checkout…", flush=True)
        results["checkout"] = run_wrk(
            buy_url,
            seconds=s,
            connections=min(c, 16),
            script=CHECKOUT,
            args=(cookie, token, origin),
        )
        results["checkout"]["load"] = load()

        # Enough open Checkout Sessions for the webhook burst, made through the buy button.
        sessions = [
            row[0]
            for row in sql(
                "SELECT stripe_checkout_session_id FROM payments_checkoutattempt "
                f"WHERE stripe_checkout_session_id <> '' AND id > {int(first_attempt)} ORDER BY id"
            )
        ][: opts.checkouts]
        missing = opts.checkouts - len(sessions)
        if missing > 0:
            print(f"  {missing} more checkouts for the webhook burst…", flush=True)
            with ThreadPoolExecutor(max_workers=8) as pool:
                sessions += list(pool.map(lambda _i: buy_once(buy_url, origin), range(missing)))
        control("POST", "webhooks/auto", {"enabled": False})
        print(f"  paying {len(sessions)} sessions on the stand-in…", flush=True)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(
                pool.map(
                    lambda pair: control(
                        "POST",
                        f"checkout/sessions/{pair[1]}/complete",
                        {
                            "email": f"buyer-{run_id}-{pair[0]}@bench.lodestone-mail.fi",
                            "name": "Buyer",
                        },
                    ),
                    enumerate(sessions),
                )
            )
        wanted = set(sessions)
        events = [
            e
            for e in control("GET", "events?type=checkout.session.completed")
            if e["data"]["object"]["id"] in wanted
        ]
        print(f"  webhook burst: {len(events)} events + 10% duplicates…", flush=True)
        results["webhooks"] = webhook_burst(origin, events, duplicates=0.10, connections=c)
        results["webhooks"]["load"] = load()
        ids = "','".join(e["id"] for e in events)
        counts["webhook_events"] = len(events)
        counts["stripe_events_stored"] = sql(
            f"SELECT count(*) FROM payments_stripeevent WHERE stripe_id IN ('{ids}')"
        )[0][0]
        counts["orders"] = sql(
            "SELECT count(*) FROM payments_order WHERE stripe_checkout_session_id IN ('"
            + "','".join(sessions)
            + "')"
        )[0][0]
        counts["entitlements"] = sql(
            "SELECT count(*) FROM payments_entitlement e JOIN payments_order o ON e.order_id = o.id "
            "WHERE o.stripe_checkout_session_id IN ('" + "','".join(sessions) + "')"
        )[0][0]
        counts["landing_cache"] = f"{cache_status or '-'} ({cache_control})"
    finally:
        if not opts.keep_stack:
            subprocess.run([PY, str(ROOT / "infra/stack.py"), "stop"], check=False)

    report(results, counts, opts)
    return 0


def report(results: dict, counts: dict, opts) -> None:
    def ratio(a: str, b: str) -> float:
        return results[a]["rate"] / results[b]["rate"]

    print(
        f"\nLaunch load — {opts.seconds}s per phase, {opts.connections} connections, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(
        f"{'phase':16}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'non-2xx':>9}{'load':>7}"
    )
    for name, r in results.items():
        print(
            f"{name:16}{r['rate']:>10.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['errors']:>8}{r['non2xx']:>9}{r.get('load', ''):>7}"
        )
    print("\nratios (goal):")
    print(f"  landing / static landing      {ratio('landing', 'landing_static'):.2f}  (≥ 0.8)")
    print(f"  opt-in / minimal view         {ratio('optin', 'minimal_view'):.2f}  (≥ 0.5)")
    print(f"  opt-in p99                    {results['optin']['p99_ms']:.0f} ms  (≤ 100 ms)")
    print(f"  stamped PDF / static PDF      {ratio('pdf_stamped', 'pdf_static'):.2f}  (≥ 0.6)")
    print("\nrows after the run:")
    for key, value in counts.items():
        print(f"  {key:24} {value}")
    ok = (
        counts["orders"] == counts["webhook_events"] == counts["entitlements"]
        and counts["stripe_events_stored"] == counts["webhook_events"]
        and counts["optin_duplicated"] == 0
        and counts["optin_stored"] >= counts["optin_answered_2xx"]
    )
    print(f"\nexactly once: {'yes' if ok else 'NO'}")
    out = stack.STACK / "bench" / "results.json"
    out.write_text(json.dumps({"results": results, "counts": counts}, indent=2))
    print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
