"""Stamped PDF downloads on the production-like stack against nginx serving the unstamped
file, both through the same nginx in one run (the download phase of launch_load.py alone):

    .venv/bin/python benchmarks/stamped_downloads.py [--seconds 10] [--connections 16] [--photos 8]

Starts its own stack (infra/stack.py, LODESTONE_X_ACCEL on unless --python-path), puts a
300-page sample PDF in as a lead magnet, downloads it once (preparing it), then runs wrk on
the static file and on the stamped download link. Stops the stack at the end.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "infra"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import launch_load  # noqa: E402
import stack  # noqa: E402

SETUP = r"""
import json
from django.core.files.base import ContentFile
from funnels.models import LeadMagnet, Subscriber
from funnels import services as funnels_services
from media.stamping.samples import sample_pdf

pdf = sample_pdf(300, photos=PHOTOS)
open(BENCH_DIR + "/book.pdf", "wb").write(pdf)
title = f"Stamped bench book {PHOTOS}"
magnet = LeadMagnet.objects.filter(title=title).first()
if magnet is None:
    magnet = LeadMagnet(title=title, download_filename="book.pdf")
    magnet.file.save(f"stamped-bench-{PHOTOS}.pdf", ContentFile(pdf), save=False)
    magnet.save()
subscriber, _ = Subscriber.objects.get_or_create(email="reader@bench.lodestone-mail.fi",
    defaults={"name": "Reader", "status": Subscriber.Status.CONFIRMED})
print("SETUP" + json.dumps({"size": len(pdf),
    "download": funnels_services.magnet_download_url(subscriber, magnet, absolute=False)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--photos",
        type=int,
        default=8,
        help="distinct photos in the 300-page sample: 8 makes a 0.6 MB book, 300 a 14 MB one",
    )
    parser.add_argument("--python-path", action="store_true", help="LODESTONE_X_ACCEL off")
    opts = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: bash infra/install-system-packages.sh")
    if any(stack.running_pid(name) for name in stack.PROCESSES):
        sys.exit("The stack is running; stop it first (infra/stack.py stop).")
    os.environ.update(launch_load.BENCH_ENV)
    os.environ["LODESTONE_X_ACCEL"] = "false" if opts.python_path else "true"
    subprocess.run([launch_load.PY, str(ROOT / "infra/stack.py"), "start", "--no-demo"], check=True)
    results = {}
    try:
        bench_dir = stack.STACK / "bench"
        bench_dir.mkdir(exist_ok=True)
        setup = subprocess.run(
            [
                launch_load.PY,
                "manage.py",
                "shell",
                "-c",
                f"BENCH_DIR = {str(bench_dir)!r}\nPHOTOS = {opts.photos}\n" + SETUP,
            ],
            cwd=ROOT,
            env=stack.app_env(),
            check=True,
            capture_output=True,
            text=True,
        )
        info = json.loads(re.search(r"SETUP(\{.*\})", setup.stdout).group(1))
        origin = stack.site_url()
        launch_load.urllib.request.urlopen(origin + info["download"], timeout=120).read()
        for name, url in (
            ("pdf_static", origin + "/_bench/book.pdf"),
            ("pdf_stamped", origin + info["download"]),
        ):
            print(f"  {name}…", flush=True)
            # Warm-up, not measured: every gunicorn worker reads the prepared head once to
            # hold its hash state (media.accel), ~0.4 s for a 14 MB book.
            launch_load.run_wrk(url, seconds=2, connections=opts.connections, script="")
            results[name] = launch_load.run_wrk(
                url, seconds=opts.seconds, connections=opts.connections, script=""
            )
            results[name]["load"] = launch_load.load()
    finally:
        subprocess.run([launch_load.PY, str(ROOT / "infra/stack.py"), "stop"], check=False)
    mode = "Python streaming" if opts.python_path else "nginx (X-Accel)"
    print(f"\n300-page PDF, {info['size'] / 1e6:.1f} MB, {opts.connections} connections, {mode}")
    for name, r in results.items():
        print(
            f"  {name:12} {r['rate']:>9.1f} req/s  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms"
            f"  errors {r['errors']}  non-2xx {r['non2xx']}  load {r['load']}"
        )
    ratio = results["pdf_stamped"]["rate"] / results["pdf_static"]["rate"]
    print(f"  stamped / static: {ratio:.2f}  (goal ≥ 0.6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
