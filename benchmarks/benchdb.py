"""What the in-process PostgreSQL benchmarks share: a database of their own, created and
dropped around the run, and Django set up against it with nothing leaving the process (an
in-memory broker, protected files in a temporary folder).

    from benchdb import bench_database, setup_django
    with bench_database(url):          # DROP + CREATE, and DROP at the end
        setup_django(url, label="drain")
        ...
"""

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def psql(server_url: str, sql: str) -> None:
    subprocess.run(["psql", f"{server_url}/postgres", "-qc", sql], check=True, capture_output=True)


@contextlib.contextmanager
def bench_database(url: str, *, keep: bool = False):
    """A fresh, empty database at `url` for the block, dropped after it unless `keep`.
    Refuses a name without "bench" in it: it is dropped first."""
    server, name = url.rsplit("/", 1)
    if "bench" not in name:
        raise SystemExit(f"refusing to drop and create {name!r}: the name must contain 'bench'")
    psql(server, f"DROP DATABASE IF EXISTS {name}")
    psql(server, f"CREATE DATABASE {name}")
    try:
        yield
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if not keep:
            psql(server, f"DROP DATABASE IF EXISTS {name}")


def setup_django(database_url: str, *, label: str) -> None:
    """Django with the test settings on `database_url`; no broker folder under var/, no
    Redis, protected files under a temporary folder named after `label`."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=database_url,
        LODESTONE_SITE_URL="https://bench.example",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings

    settings.CELERY_BROKER_URL = "memory://"
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tempfile.mkdtemp(prefix=f"bench-{label}-"), "base_url": None},
        },
    }
