"""The app served by gunicorn, as in production, and a stdlib HTTP client for tests."""

import contextlib
import http.client
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import urlsplit

from .processes import ServerProcess, running, venv_bin

START_TIMEOUT = 40


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    body: bytes


def http_get(url: str, *, headers: dict[str, str] | None = None, timeout: float = 10) -> Response:
    """GET without following redirects or adding anything to the URL (signatures stay as is)."""
    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = connection_class(parts.hostname, parts.port, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        return Response(status=response.status, headers=response.msg, body=response.read())
    finally:
        conn.close()


@dataclass(frozen=True)
class WebServer:
    url: str
    log_path: Path
    server: ServerProcess


@contextlib.contextmanager
def gunicorn_running(*, env: dict[str, str], port: int, log_path: Path) -> Iterator[WebServer]:
    argv = [
        venv_bin("gunicorn"),
        "config.wsgi:application",
        "-c",
        str(Path(__file__).with_name("gunicorn_conf.py")),
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "2",
        "--graceful-timeout",
        "5",
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
        "--log-level",
        "info",
    ]
    server = ServerProcess(
        name="gunicorn", fixture="web_server", argv=argv, log_path=log_path, env=env
    )
    url = f"http://127.0.0.1:{port}"
    with running(server):
        server.wait_ready(
            lambda: http_get(f"{url}/healthz", timeout=2).status == 200,
            timeout=START_TIMEOUT,
            what="/healthz to answer 200",
        )
        yield WebServer(url=url, log_path=log_path, server=server)
