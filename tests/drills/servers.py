"""Private servers for the fault drills: each drill kills or restarts its own Redis,
PostgreSQL cluster, SeaweedFS or Celery worker, never the machine's shared ones.

The app processes (gunicorn, Celery) run `tests.drills.settings`: production settings as a
launch runs them (Redis cache and broker, persistent database connections with health
checks), with static files read from the source folders instead of a collectstatic run.
"""

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from tests.harness.ports import free_port
from tests.harness.processes import PROJECT_ROOT, ServerProcess, running, venv_bin
from tests.harness.web import http_get

DRILL_SETTINGS = "tests.drills.settings"
DRILL_SECRET_KEY = "drill-only-" + "k" * 56
START_TIMEOUT = 40


def pg_bin(name: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise RuntimeError("PostgreSQL server binaries are missing (/usr/lib/postgresql/*/bin).")
    return str(versions[-1] / name)


# --- Redis ------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server on a free loopback port, nothing kept on disk, that a drill may kill
    (SIGKILL, as a crash) and start again on the same port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.server: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.server = ServerProcess(
            name="drill Redis",
            fixture="private_redis",
            argv=[
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            log_path=self.log_path,
            stop_timeout=3,
        )
        self.server.start()
        self.server.wait_ready(self.ping, timeout=START_TIMEOUT, what="PING")

    def ping(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def kill(self) -> None:
        """A crash: SIGKILL, and everything it held in memory is gone."""
        assert self.server is not None and self.server.proc is not None
        os.killpg(self.server.proc.pid, signal.SIGKILL)
        self.server.proc.wait(10)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@contextlib.contextmanager
def private_redis_running(log_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(log_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- PostgreSQL ---------------------------------------------------------------------------


def _as_postgres_user() -> list[str]:
    # initdb and the server refuse to run as root; the machines run the suite as root.
    if os.geteuid() != 0:
        return []
    return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]


class PrivateCluster:
    """A PostgreSQL cluster of its own (initdb) in a temp dir, on a free port, trust auth,
    that a drill may stop and start while the app keeps running."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="lodestone-drill-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def _run(self, *argv: str, timeout: float = 60) -> None:
        with self.log_path.open("ab") as log:
            subprocess.run(
                [*_as_postgres_user(), *argv],
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                cwd=self.root,
            )

    def init(self) -> None:
        self._run(
            pg_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off -c max_connections=50"
        )
        self._run(
            pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session at once, as a restart or failover does."""
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def answers(self) -> bool:
        try:
            psycopg.connect(self.url("postgres"), connect_timeout=1).close()
        except psycopg.Error:
            return False
        return True

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def copy_database(self, source_url: str, name: str) -> str:
        """Copy a database (schema and rows) from another server; returns the copy's URL."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        dump = subprocess.run(
            ["pg_dump", "--no-owner", "--no-privileges", "-Fc", source_url],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            ["pg_restore", "--no-owner", "--no-privileges", "-d", self.url(name)],
            input=dump.stdout,
            check=True,
            capture_output=True,
            timeout=120,
        )
        return self.url(name)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_cluster_running(log_path: Path) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(log_path)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


# --- The app --------------------------------------------------------------------------------


def drill_env(
    *,
    database_url: str,
    var_dir: Path,
    site_url: str,
    redis_url: str = "",
    queue: str = "",
    email_url: str = "",
    **extra: str,
) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": DRILL_SETTINGS,
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "DJANGO_SECRET_KEY": DRILL_SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "LODESTONE_TRUSTED_PROXY_COUNT": "0",
        "DATABASE_URL": database_url,
        "LODESTONE_VAR_DIR": str(var_dir),
        "LODESTONE_PROTECTED_ROOT": str(var_dir / "protected"),
        "LODESTONE_SITE_URL": site_url,
        # A drill's burst comes from one address.
        "LODESTONE_OPTIN_IP_LIMITS": "1000000/60",
        "LODESTONE_OPTIN_EMAIL_LIMIT": "1000000/60",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    for name in (
        "REDIS_URL",
        "CELERY_TASK_DEFAULT_QUEUE",
        "EMAIL_URL",
        "DJANGO_ALLOW_ASYNC_UNSAFE",
    ):
        env.pop(name, None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    if queue:
        env["CELERY_TASK_DEFAULT_QUEUE"] = queue
    if email_url:
        env["EMAIL_URL"] = email_url
    return env


@dataclass
class App:
    url: str
    server: ServerProcess


@contextlib.contextmanager
def gunicorn_running(*, env: dict[str, str], port: int, log_path: Path) -> Iterator[App]:
    argv = [
        venv_bin("gunicorn"),
        "config.wsgi:application",
        "-c",
        str(PROJECT_ROOT / "tests" / "harness" / "gunicorn_conf.py"),
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "2",
        "--graceful-timeout",
        "3",
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
    ]
    server = ServerProcess(name="drill gunicorn", fixture="", argv=argv, log_path=log_path, env=env)
    url = f"http://127.0.0.1:{port}"
    with running(server):
        server.wait_ready(
            lambda: http_get(f"{url}/healthz", timeout=2).status == 200,
            timeout=START_TIMEOUT,
            what="/healthz to answer 200",
        )
        yield App(url=url, server=server)


@contextlib.contextmanager
def celery_worker_running(
    *, env: dict[str, str], queue: str, log_path: Path, pool: str = "solo"
) -> Iterator[ServerProcess]:
    """A worker consuming `queue`; ready once it answers a ping over its broker."""
    from celery import Celery

    node = f"{queue}@drill"
    argv = [
        venv_bin("celery"),
        "-A",
        "config",
        "worker",
        "-P",
        pool,
        "-c",
        "1",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-Q",
        queue,
        "-n",
        node,
        "--loglevel=INFO",
    ]
    server = ServerProcess(
        name="drill Celery worker", fixture="", argv=argv, log_path=log_path, env=env
    )
    control = Celery(broker=env["REDIS_URL"])
    with running(server):
        try:
            server.wait_ready(
                lambda: control.control.ping(destination=[node], timeout=0.5),
                timeout=START_TIMEOUT,
                what=f"worker {node} to answer a ping",
            )
            yield server
        finally:
            control.close()


def worker_children(server: ServerProcess) -> list[int]:
    """The pool processes of a prefork worker (the master is `server.proc`)."""
    assert server.proc is not None
    pid = server.proc.pid
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def unique_queue(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def wait_port_closed(port: int, timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} still open after {timeout} s")


def run_in_app(env: dict[str, str], code: str, *, timeout: float = 60) -> str:
    """Run Python in a fresh process configured like the app's (`manage.py shell -c`), as the
    beat or an operator would; returns what it printed."""
    result = subprocess.run(
        [str(Path(venv_bin("python"))), "manage.py", "shell", "-c", code],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py shell failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout
