# ruff: noqa: S105, S310, S603, S607 (a launcher: fixed local programs, loopback URLs, test-only keys)
"""A production-like Lodestone stack on this machine, on loopback, in var/stack/.

    .venv/bin/python infra/stack.py start     # start everything, migrate, load the demo, print URLs
    .venv/bin/python infra/stack.py status    # what runs, and whether it answers
    .venv/bin/python infra/stack.py stop      # stop every process it started

The process layout of infra/Procfile and infra/README.md: nginx (infra/stack/nginx.conf.template,
a copy of infra/nginx/lodestone.conf's locations) → gunicorn (infra/gunicorn.conf.py,
production settings) → PostgreSQL (database `lodestone_stack` on the local server) and Redis
(database 3 of the local server: broker and cache), a Celery worker, a media worker (transcodes,
watermarks, PDF preparation: their own queue) and beat, SeaweedFS as
the private S3 bucket for protected files, an SMTP sink (aiosmtpd, one file per message
under var/stack/mail/) and the Stripe stand-in (tests/stripe_standin, test mode: no real
money). Ports start at LODESTONE_STACK_PORT (default 8480); see `PORTS` below.
"""

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "var" / "stack"
BIN = Path(sys.executable).parent
BASE_PORT = int(os.environ.get("LODESTONE_STACK_PORT", "8480"))
PORTS = {
    "nginx": BASE_PORT,
    "gunicorn": BASE_PORT + 1,
    "stripe": BASE_PORT + 2,
    "smtp": BASE_PORT + 3,
    "purge": BASE_PORT + 4,
    # SeaweedFS also opens a gRPC port 10000 above each of these.
    "s3": BASE_PORT + 10000,
    "weed-master": BASE_PORT + 10001,
    "weed-volume": BASE_PORT + 10002,
    "weed-filer": BASE_PORT + 10003,
}
PG = os.environ.get("LODESTONE_STACK_PG", "postgres://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("LODESTONE_STACK_DB", "lodestone_stack")
REDIS_URL = os.environ.get("LODESTONE_STACK_REDIS_URL", "redis://127.0.0.1:6379/3")
BUCKET = "lodestone-stack"
STRIPE_KEY = "sk_test_lodestone_stack_standin"
WEBHOOK_SECRET = "whsec_lodestone_stack_standin"
# Start order; stop goes the other way.
PROCESSES = ["seaweedfs", "smtp", "stripe", "gunicorn", "worker", "media-worker", "beat", "nginx"]
QUEUE = "lodestone-stack"
MEDIA_QUEUE = "lodestone-stack-media"


def site_url() -> str:
    return f"http://127.0.0.1:{PORTS['nginx']}"


def secrets_file() -> dict:
    """Generated once per stack and kept in var/stack/secrets.json (never committed)."""
    path = STACK / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    data = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "AWS_ACCESS_KEY_ID": "AK" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
    }
    path.write_text(json.dumps(data, indent=2))
    path.chmod(0o600)
    return data


def app_env() -> dict[str, str]:
    keys = secrets_file()
    var = STACK / "var"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": keys["DJANGO_SECRET_KEY"],
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"{site_url()},http://localhost:{PORTS['nginx']}",
        # Plain HTTP on loopback: no TLS to redirect to, and no HSTS for 127.0.0.1.
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
        "DATABASE_URL": f"{PG}/{DB_NAME}",
        "REDIS_URL": REDIS_URL,
        "CELERY_TASK_DEFAULT_QUEUE": QUEUE,
        "CELERY_MEDIA_QUEUE": MEDIA_QUEUE,
        "EMAIL_URL": f"smtp://127.0.0.1:{PORTS['smtp']}",
        "DEFAULT_FROM_EMAIL": "Lodestone stack <hello@lodestone.localhost>",
        "AWS_STORAGE_BUCKET_NAME": BUCKET,
        "AWS_ACCESS_KEY_ID": keys["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": keys["AWS_SECRET_ACCESS_KEY"],
        "AWS_S3_ENDPOINT_URL": f"http://127.0.0.1:{PORTS['s3']}",
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": f"http://127.0.0.1:{PORTS['stripe']}",
        "LODESTONE_SITE_URL": site_url(),
        "LODESTONE_VAR_DIR": str(var),
        "DJANGO_STATIC_ROOT": str(STACK / "static"),
        "DJANGO_MEDIA_ROOT": str(var / "media"),
        "LODESTONE_PROTECTED_ROOT": str(var / "protected"),
        "LODESTONE_TRUSTED_PROXY_COUNT": "1",
        # nginx sends stamped downloads (the /_stamped/ locations of the nginx template).
        "LODESTONE_X_ACCEL": os.environ.get("LODESTONE_X_ACCEL", "true"),
        "GUNICORN_BIND": f"127.0.0.1:{PORTS['gunicorn']}",
        "PYTHONUNBUFFERED": "1",
    }
    if purge_module():
        env["LODESTONE_FRONTEND_CACHE_PURGE_URL"] = f"http://127.0.0.1:{PORTS['purge']}"
    env.pop("DJANGO_DEBUG", None)
    return env


def purge_module() -> Path | None:
    path = Path("/usr/lib/nginx/modules/ngx_http_cache_purge_module.so")
    return path if path.exists() else None


# --- Processes --------------------------------------------------------------------------------


def pid_path(name: str) -> Path:
    return STACK / "pids" / f"{name}.pid"


def log_path(name: str) -> Path:
    return STACK / "logs" / f"{name}.log"


def running_pid(name: str) -> int | None:
    try:
        pid = int(pid_path(name).read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def spawn(name: str, argv: list[str], env: dict[str, str]) -> int:
    """Start a process in a group of its own, logging to var/stack/logs/<name>.log."""
    if pid := running_pid(name):
        print(f"  {name}: already running (pid {pid})")
        return pid
    with log_path(name).open("ab") as log:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_path(name).write_text(str(proc.pid))
    return proc.pid


def wait_for(what: str, check, *, timeout: float = 60, name: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception as exc:  # not yet
            last = exc
        else:
            last = None
        if name and not running_pid(name):
            sys.exit(f"{name} exited; see {log_path(name)}")
        if time.monotonic() > deadline:
            sys.exit(f"Gave up waiting for {what} ({last!r}); see var/stack/logs/.")
        time.sleep(0.2)


def port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_status(url: str, timeout: float = 3) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def manage(env: dict[str, str], *args: str) -> None:
    print(f"  manage.py {' '.join(args)}")
    with log_path("release").open("ab") as log:
        subprocess.run(
            [str(BIN / "python"), "manage.py", *args],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


# --- Start ---------------------------------------------------------------------------------


def database_ensure() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            print(f"  created database {DB_NAME}")


def start_seaweedfs(env: dict[str, str]) -> None:
    keys = secrets_file()
    weed_dir = STACK / "seaweedfs"
    (weed_dir / "data").mkdir(parents=True, exist_ok=True)
    (weed_dir / "tmp").mkdir(exist_ok=True)
    config = weed_dir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "lodestone",
                        "credentials": [
                            {
                                "accessKey": keys["AWS_ACCESS_KEY_ID"],
                                "secretKey": keys["AWS_SECRET_ACCESS_KEY"],
                            }
                        ],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    spawn(
        "seaweedfs",
        [
            str(BIN / "weed"),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={weed_dir / 'data'}",
            "-s3",
            f"-s3.port={PORTS['s3']}",
            f"-s3.config={config}",
            f"-master.port={PORTS['weed-master']}",
            f"-volume.port={PORTS['weed-volume']}",
            f"-filer.port={PORTS['weed-filer']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
        ],
        {**env, "TMPDIR": str(weed_dir / "tmp")},
    )


def bucket_ensure(env: dict[str, str]) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

    def ready() -> bool:
        try:
            client.create_bucket(Bucket=BUCKET)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise
        client.put_object(Bucket=BUCKET, Key="stack-probe", Body=b"ok")
        client.delete_object(Bucket=BUCKET, Key="stack-probe")
        return True

    wait_for("the S3 bucket", ready, timeout=90, name="seaweedfs")


def fill(template: Path, **values) -> str:
    """${NAME} placeholders only: nginx's own $variables stay as they are."""
    text = template.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", str(value))
    if missing := re.findall(r"\$\{[A-Z_]+\}", text):
        raise ValueError(f"{template}: no value for {missing}")
    return text


def nginx_conf(env: dict[str, str]) -> Path:
    module = purge_module()
    purge = ""
    if module:
        purge = fill(ROOT / "infra/stack/purge-server.conf.template", PURGE_PORT=PORTS["purge"])
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "cache"):
        (STACK / "nginx" / sub).mkdir(parents=True, exist_ok=True)
    (STACK / "bench").mkdir(exist_ok=True)
    text = fill(
        ROOT / "infra/stack/nginx.conf.template",
        STACK=STACK,
        PORT=PORTS["nginx"],
        APP_PORT=PORTS["gunicorn"],
        STATIC_ROOT=env["DJANGO_STATIC_ROOT"],
        MEDIA_ROOT=env["DJANGO_MEDIA_ROOT"],
        PROTECTED_ROOT=env["LODESTONE_PROTECTED_ROOT"],
        DOWNLOADS_ROOT=Path(env["LODESTONE_VAR_DIR"]) / "downloads",
        ACCESS_LOG=os.environ.get("LODESTONE_STACK_NGINX_ACCESS_LOG", "off"),
        LOAD_MODULES=f"load_module {module};" if module else "",
        PURGE_SERVER=purge,
    )
    path = STACK / "nginx.conf"
    path.write_text(text)
    return path


def start(args) -> None:
    for sub in ("pids", "logs", "mail", "var/media", "var/protected"):
        (STACK / sub).mkdir(parents=True, exist_ok=True)
    env = app_env()
    print(f"Starting the Lodestone stack in {STACK.relative_to(ROOT)}/")
    database_ensure()
    start_seaweedfs(env)
    spawn(
        "smtp",
        [
            str(BIN / "python"),
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{PORTS['smtp']}",
            "-c",
            "aiosmtpd.handlers.Mailbox",
            str(STACK / "mail"),
        ],
        env,
    )
    spawn(
        "stripe",
        [str(BIN / "python"), "-m", "tests.stripe_standin", "--port", str(PORTS["stripe"])],
        env,
    )
    bucket_ensure(env)
    wait_for("the SMTP sink", lambda: port_answers(PORTS["smtp"]), name="smtp")
    wait_for("the Stripe stand-in", lambda: port_answers(PORTS["stripe"]), name="stripe")

    # The `release` line of infra/Procfile, then the demo content.
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput")
    if not args.no_demo:
        manage(env, "load_demo", "--port", str(PORTS["nginx"]))

    workers = os.environ.get("GUNICORN_WORKERS", str(args.workers))
    spawn(
        "gunicorn",
        [
            str(BIN / "gunicorn"),
            "config.wsgi:application",
            "--config",
            "infra/gunicorn.conf.py",
            "--workers",
            workers,
        ],
        {**env, "GUNICORN_ACCESSLOG": os.environ.get("GUNICORN_ACCESSLOG", "-")},
    )
    spawn(
        "worker",
        [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            QUEUE,
            "--loglevel",
            "INFO",
            "--concurrency",
            os.environ.get("CELERY_CONCURRENCY", "2"),
            "--max-tasks-per-child",
            "200",
        ],
        env,
    )
    # infra/Procfile's media-worker: the media queue only, one job at a time by default.
    spawn(
        "media-worker",
        [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            MEDIA_QUEUE,
            "-n",
            "media@%h",
            "--loglevel",
            "INFO",
            "--concurrency",
            os.environ.get("CELERY_MEDIA_CONCURRENCY", "1"),
            "--max-tasks-per-child",
            "200",
        ],
        env,
    )
    spawn(
        "beat",
        [
            str(BIN / "celery"),
            "-A",
            "config",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(STACK / "celerybeat-schedule"),
            "--pidfile",
            str(STACK / "pids" / "celerybeat.pid"),
        ],
        env,
    )
    conf = nginx_conf(env)
    subprocess.run(
        ["nginx", "-t", "-q", "-c", str(conf), "-p", str(STACK / "nginx")],
        check=True,
        stderr=subprocess.STDOUT,
    )
    spawn("nginx", ["nginx", "-c", str(conf), "-p", str(STACK / "nginx")], env)
    wait_for(
        "gunicorn", lambda: http_status(f"{site_url()}/healthz") == 200, timeout=60, name="gunicorn"
    )
    # The stand-in keeps nothing across restarts: register the webhook endpoint, put the
    # offers in (payments/demo.py, as infra/Procfile.demo does).
    manage(env, "shell", "-c", "from payments.demo import standin_connect; standin_connect()")
    print_urls()


def print_urls() -> None:
    print(
        f"""
Lodestone stack is up (production settings, test payments only):
  site            {site_url()}/   (nginx → gunicorn on :{PORTS["gunicorn"]})
  admin           {site_url()}/admin/  (creator login: var/stack/var/demo-credentials.txt)
  Stripe stand-in http://127.0.0.1:{PORTS["stripe"]}/   (webhooks go to {site_url()}/pay/stripe/webhook/)
  S3 (SeaweedFS)  http://127.0.0.1:{PORTS["s3"]}/ bucket {BUCKET} (keys in var/stack/secrets.json)
  SMTP sink       127.0.0.1:{PORTS["smtp"]} → var/stack/mail/
  database        {PG}/{DB_NAME}, Redis {REDIS_URL}
  logs            var/stack/logs/
Stop it with: .venv/bin/python infra/stack.py stop"""
    )


# --- Stop and status -----------------------------------------------------------------------


def stop(_args) -> None:
    for name in reversed(PROCESSES):
        pid = running_pid(name)
        if pid is None:
            pid_path(name).unlink(missing_ok=True)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        pid_path(name).unlink(missing_ok=True)
        print(f"  stopped {name} (pid {pid})")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def status(_args) -> int:
    down = 0
    for name in PROCESSES:
        pid = running_pid(name)
        print(f"  {name:12} {'pid ' + str(pid) if pid else 'not running'}")
        down += pid is None
    if running_pid("nginx"):
        try:
            print(f"  {site_url()}/healthz → {http_status(site_url() + '/healthz')}")
        except OSError as exc:
            print(f"  {site_url()}/healthz → {exc}")
    return 1 if down else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start_parser = sub.add_parser("start")
    start_parser.add_argument(
        "--workers", type=int, default=(os.cpu_count() or 1) * 2 + 1, help="gunicorn workers"
    )
    start_parser.add_argument("--no-demo", action="store_true", help="skip load_demo")
    sub.add_parser("stop")
    sub.add_parser("status")
    args = parser.parse_args()
    if not shutil.which("nginx"):
        sys.exit("nginx is missing: bash infra/install-system-packages.sh")
    if args.command == "start":
        try:
            start(args)
        except BaseException:
            print("Start failed; stopping what was started. Logs: var/stack/logs/")
            stop(args)
            raise
        return 0
    if args.command == "stop":
        stop(args)
        return 0
    return status(args)


if __name__ == "__main__":
    sys.exit(main())
