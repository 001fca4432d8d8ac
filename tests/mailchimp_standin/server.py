"""The HTTP front of the stand-in and the handle tests drive it with.

A `ThreadingHTTPServer` on 127.0.0.1 in a daemon thread. Every request is recorded on
arrival; then injected faults apply (they model trouble in front of Mailchimp, so they come
before authentication), then HTTP Basic authentication, then `Store.dispatch`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from .state import ApiError, Store, subscriber_hash

API_PREFIX = "/3.0"
RESULTS_PREFIX = "/batch-results/"
MAX_HANG_SECONDS = 60.0
JSON_TYPE = "application/json; charset=utf-8"
PROBLEM_TYPE = "application/problem+json; charset=utf-8"

_FAULT_TEXT = {
    429: ("Too Many Requests", "You have exceeded the limit of 10 simultaneous connections."),
    500: (
        "Internal Server Error",
        "An unexpected internal error has occurred. Please contact Support for more information.",
    ),
    503: (
        "Service Unavailable",
        "This service is temporarily unavailable. Please try again later.",
    ),
}


@dataclass
class RecordedRequest:
    """One HTTP request as the stand-in saw it. `status` is None until it is answered."""

    method: str
    path: str  # as sent, without the query string, e.g. /3.0/lists/abc/members/5d41…
    query: dict[str, str]
    headers: dict[str, str]
    body: str  # raw text ("" when none)
    json: object  # parsed body; None when empty, "null" or not JSON
    api_key: str | None  # the Basic-auth password, whatever it was
    auth_ok: bool = False
    status: int | None = None
    response: object = None  # parsed JSON answer, None for 204 / archives
    fault: str | None = None  # "status:500", "hang:2.0" when an injected fault applied
    received_at: float = field(default_factory=time.monotonic)

    @property
    def api_path(self) -> str:
        """The path relative to /3.0, as the client's `resource_path` names it."""
        if self.path.startswith(API_PREFIX):
            return self.path[len(API_PREFIX) :] or "/"
        return self.path


@dataclass
class _Fault:
    remaining: int
    method: str | None
    path: re.Pattern | None
    status: int | None
    hang: float | None
    headers: dict[str, str]
    body: object

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.search(path) is not None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 resets connections under parallel clients
    standin: MailchimpStandin


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "openresty"
    sys_version = ""
    timeout = 30  # idle keep-alive connections give their thread back

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def log_message(self, format, *args):  # quiet: the request log is the record
        pass

    def _handle(self) -> None:
        standin = self.server.standin
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        record = standin._record_arrival(self, parts.path, dict(parse_qsl(parts.query)), raw)
        request_id = str(uuid.uuid4())
        try:
            status, payload, headers = standin._respond(record, parts.path, raw, request_id)
        except ApiError as error:
            status, payload, headers = error.status, error.document(request_id), error.headers
        except Exception as error:  # a stand-in bug must still answer, loudly
            status, payload, headers = (
                500,
                ApiError(500, "Stand-in Error", f"{type(error).__name__}: {error}").document(
                    request_id
                ),
                {},
            )
        if isinstance(payload, bytes):
            body, content_type = payload, headers.pop("Content-Type", "application/gzip")
        else:
            body = b"" if payload is None else json.dumps(payload).encode("utf-8")
            content_type = JSON_TYPE if status < 400 else PROBLEM_TYPE
        standin._record_answer(record, status, None if isinstance(payload, bytes) else payload)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Request-Id", request_id)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing left to tell it


class MailchimpStandin:
    """Control handle of a running stand-in. Create it with `start_mailchimp_standin`."""

    def __init__(self, *, port: int = 0, dc: str = "us1", fake_domains=None):
        kwargs = {} if fake_domains is None else {"fake_domains": frozenset(fake_domains)}
        self.dc = dc
        self.api_key = f"{secrets.token_hex(16)}-{dc}"
        self._store = Store(dc=dc, **kwargs)
        self._log: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.standin = self
        self.port = self._server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.origin}{API_PREFIX}"
        self._store.origin = self.origin
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mailchimp-standin:{self.port}",
            daemon=True,
        )
        self._thread.start()

    # ---- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()  # releases hanging requests at once
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MailchimpStandin:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget audiences, members, batches, faults and the request log; keep port and key."""
        self._store.reset()
        with self._changed:
            self._log.clear()
            self._faults.clear()

    def settings(self) -> dict[str, str]:
        """Values for Lodestone's MAILCHIMP_* settings that point the app here."""
        return {
            "MAILCHIMP_API_KEY": self.api_key,
            "MAILCHIMP_SERVER_PREFIX": self.dc,
            "MAILCHIMP_API_HOST": self.url,
        }

    # ---- state -------------------------------------------------------------------------

    def create_audience(
        self,
        name: str = "Lodestone",
        *,
        merge_fields: dict | list | tuple | None = None,
        list_id: str | None = None,
    ) -> str:
        """Create an audience and return its id.

        `merge_fields`: tags (`["FNAME", "LNAME"]`, the default) or a dict of tag -> spec,
        where spec is a type string or `{"type": "text", "required": True, "name": "…"}`.
        """
        return self._store.create_audience(name, merge_fields, list_id)

    def audience(self, list_id: str) -> dict:
        with self._store.lock:
            return self._store.audience_json(self._store.audience(list_id))

    def member(self, list_id: str, email: str) -> dict | None:
        """The member as `GET …/members/{hash}` would show it, or None if absent."""
        with self._store.lock:
            audience = self._store.audiences.get(list_id)
            if audience is None:
                raise KeyError(f"no audience {list_id}")
            member_hash = subscriber_hash(email)
            member = audience.members.get(member_hash)
            if member is None:
                return None
            return self._store.member_json(audience, member_hash, member)

    def members(self, list_id: str) -> list[dict]:
        with self._store.lock:
            audience = self._store.audience(list_id)
            return [self._store.member_json(audience, h, m) for h, m in audience.members.items()]

    def add_member(
        self,
        list_id: str,
        email: str,
        *,
        status: str = "subscribed",
        merge_fields: dict | None = None,
        tags: tuple[str, ...] | list[str] = (),
    ) -> dict:
        """Seed a member directly (no request recorded), e.g. one who unsubscribed earlier."""
        body = {"email_address": email, "status": status, "tags": list(tags)}
        if merge_fields:
            body["merge_fields"] = merge_fields
        _, member = self._store.dispatch(
            "POST",
            f"/lists/{list_id}/members",
            {"skip_merge_validation": "true"},
            json.dumps(body).encode(),
        )
        return member

    def was_permanently_deleted(self, list_id: str, email: str) -> bool:
        with self._store.lock:
            return subscriber_hash(email) in self._store.audience(list_id).forgotten

    # ---- batches -----------------------------------------------------------------------

    @property
    def batch_mode(self) -> str:
        """How batches run: "immediate" or "manual".

        "immediate" (default): a batch has finished by the time POST /batches returns (the
        answer itself still says "pending", as Mailchimp's does). "manual": batches stay
        pending until `finish_batches()`.
        """
        return self._store.batch_mode

    @batch_mode.setter
    def batch_mode(self, mode: str) -> None:
        if mode not in ("immediate", "manual"):
            raise ValueError('batch_mode is "immediate" or "manual"')
        with self._store.lock:
            self._store.batch_mode = mode

    def finish_batches(self) -> list[str]:
        """Run every pending batch; returns their ids."""
        return self._store.finish_pending_batches()

    def batch(self, batch_id: str) -> dict:
        """The batch as `GET /batches/{id}` shows it, plus `results` (the archive's list)."""
        with self._store.lock:
            batch = self._store.batches[batch_id]
            return {**self._store.batch_json(batch), "results": list(batch.results)}

    @property
    def batches(self) -> list[dict]:
        with self._store.lock:
            return [self._store.batch_json(b) for b in self._store.batches.values()]

    # ---- faults ------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        body: object = None,
    ) -> None:
        """Answer the next `times` matching requests with `status` and a problem document.

        `method` matches exactly; `path` is a regular expression searched in the request
        path (e.g. r"/members/"). `body` replaces the problem document if given.
        """
        if not 400 <= status <= 599:
            raise ValueError("fail_next wants an error status (4xx or 5xx)")
        self._add_fault(
            times, method, path, status=status, hang=None, headers=headers or {}, body=body
        )

    def hang_next(
        self,
        seconds: float,
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
    ) -> None:
        """Hold the next `times` matching requests for `seconds` (stop() releases them), then
        answer normally, or with `status` if given. For client-timeout tests."""
        if not 0 < seconds <= MAX_HANG_SECONDS:
            raise ValueError(f"hang between 0 and {MAX_HANG_SECONDS} seconds")
        self._add_fault(times, method, path, status=status, hang=seconds, headers={}, body=None)

    def clear_faults(self) -> None:
        with self._changed:
            self._faults.clear()

    def _add_fault(self, times, method, path, **kwargs) -> None:
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = _Fault(
            remaining=times,
            method=method.upper() if method else None,
            path=re.compile(path) if path else None,
            **kwargs,
        )
        with self._changed:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._changed:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ---- request log -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since start or reset(), oldest first (a copy)."""
        with self._changed:
            return list(self._log)

    def requests_to(self, method: str | None = None, path: str | None = None):
        """Recorded requests filtered by exact method and a regex searched in the path."""
        pattern = re.compile(path) if path else None
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.search(r.path))
        ]

    def wait_for_requests(
        self,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        timeout: float = 5.0,
        answered: bool = True,
    ) -> list[RecordedRequest]:
        """Block until `count` matching requests arrived (and were answered, by default).

        For code that calls Mailchimp from another thread or process (a Celery worker).
        """
        pattern = re.compile(path) if path else None

        def matching():
            return [
                r
                for r in self._log
                if (method is None or r.method == method.upper())
                and (pattern is None or pattern.search(r.path))
                and (not answered or r.status is not None)
            ]

        with self._changed:
            if not self._changed.wait_for(lambda: len(matching()) >= count, timeout=timeout):
                seen = [f"{r.method} {r.path} -> {r.status}" for r in self._log]
                raise TimeoutError(
                    f"expected {count} request(s) matching {method} {path} within "
                    f"{timeout}s; saw: {seen}"
                )
            return matching()

    def _record_arrival(self, handler, path: str, query: dict, raw: bytes) -> RecordedRequest:
        text = raw.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        record = RecordedRequest(
            method=handler.command,
            path=path,
            query=query,
            headers=dict(handler.headers.items()),
            body=text,
            json=parsed,
            api_key=_basic_password(handler.headers.get("Authorization")),
        )
        with self._changed:
            self._log.append(record)
            self._changed.notify_all()
        return record

    def _record_answer(self, record: RecordedRequest, status: int, payload) -> None:
        with self._changed:
            record.status = status
            record.response = payload
            self._changed.notify_all()

    # ---- the request pipeline ----------------------------------------------------------

    def _respond(self, record: RecordedRequest, path: str, raw: bytes, request_id: str):
        fault = self._take_fault(record.method, path)
        if fault is not None and fault.hang is not None:
            record.fault = f"hang:{fault.hang}"
            self._stopping.wait(fault.hang)
        if fault is not None and fault.status is not None:
            record.fault = (record.fault + "," if record.fault else "") + f"status:{fault.status}"
            title, detail = _FAULT_TEXT.get(
                fault.status, (HTTPStatus(fault.status).phrase, "Injected by the stand-in.")
            )
            payload = (
                fault.body
                if fault.body is not None
                else ApiError(fault.status, title, detail).document(request_id)
            )
            return fault.status, payload, dict(fault.headers)

        if path.startswith(RESULTS_PREFIX):  # like Mailchimp's S3 link: no API key needed
            batch_id = path[len(RESULTS_PREFIX) :].removesuffix(".tar.gz")
            archive = self._store.batch_results_archive(batch_id)
            if archive is None or record.method != "GET":
                raise ApiError(404, "Resource Not Found", "No such batch result archive.")
            return 200, archive, {"Content-Type": "application/x-gzip"}

        if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
            raise ApiError(404, "Resource Not Found", "The requested resource could not be found.")

        self._authenticate(record)
        status, payload = self._store.dispatch(
            record.method, path[len(API_PREFIX) :], record.query, raw
        )
        return status, payload, {}

    def _authenticate(self, record: RecordedRequest) -> None:
        header = record.headers.get("Authorization")
        if not header:
            raise ApiError(401, "API Key Missing", "Your request did not include an API key.")
        # Any username; the key is the password and its -dc suffix must name this datacenter.
        if record.api_key is None or not secrets.compare_digest(
            record.api_key.encode(), self.api_key.encode()
        ):
            raise ApiError(
                401,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            )
        record.auth_ok = True


def _basic_password(header: str | None) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


def start_mailchimp_standin(
    port: int = 0, *, dc: str = "us1", fake_domains=None
) -> MailchimpStandin:
    """Start a stand-in on 127.0.0.1 (`port=0`: a free port). Stop it with `.stop()`."""
    return MailchimpStandin(port=port, dc=dc, fake_domains=fake_domains)


def configured_client(standin: MailchimpStandin, *, api_key: str | None = None, timeout=None):
    """An official `mailchimp_marketing.Client` pointed at the stand-in.

    The client builds its URL from a fixed Mailchimp host, so the host is overwritten after
    `set_config` (which would otherwise not change it).
    """
    import mailchimp_marketing

    key = api_key if api_key is not None else standin.api_key
    config = {"api_key": key, "server": standin.dc}
    if timeout is not None:
        config["timeout"] = timeout
    client = mailchimp_marketing.Client()
    client.set_config(config)
    client.api_client.host = standin.url
    return client
