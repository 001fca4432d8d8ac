"""Stamped downloads sent by nginx (settings.DOWNLOAD_X_ACCEL, behind our nginx).

A stamped file is base + buyer's part, and the buyer's part of a PDF starts with bytes
that are the same for every buyer (the page tree template, media/stamping/pdf.py). So a
download is split as
- the *head*: the prepared base plus that constant prefix, one file per file version in
  a local cache on the web host (var/downloads/heads/, filled from the protected store
  once, written to a temporary name and renamed, bounded in size, least recently used
  evicted), and
- the *tail*: what only this buyer gets (a few KB: their stamp, metadata, the update's
  cross-reference table), written to var/downloads/tails/<10 s bucket>/<random>.bin.
Django answers `X-Accel-Redirect: /_stamped/<head>?t=<tail>`; nginx sends the head with
sendfile and appends the tail with ngx_http_addition_module (`add_after_body`; the tail's
subrequest reads `$lodestone_tail`, which nginx subrequests share with their parent).
The bytes are exactly those of the streaming path; the ledger's SHA-256 is that of head +
tail, from a hash state of the head kept per process.

nginx opens the tail within the same event-loop turn as the head (the addition filter
issues its subrequest as soon as the head's single file buffer passes), so tails are
deleted once their bucket is a minute old. The nginx locations are in
infra/nginx/lodestone.conf.
"""

import contextlib
import hashlib
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.storage import Storage

from .exceptions import StorageUnavailable
from .stamping.prepare import Prepared
from .stamping.storage_io import open_range

ACCEL_PREFIX = "/_stamped/"
CACHE_MAX_BYTES = 4 << 30  # heads kept on the web host; override with DOWNLOAD_CACHE_MAX_BYTES
TAIL_BUCKET_SECONDS = 10
TAIL_KEEP_SECONDS = 60
IN_USE_SECONDS = 300  # a head used this recently is never evicted
TOUCH_AFTER = 60


@dataclass
class AccelHead:
    name: str  # file name under heads/
    path: Path
    prefix: bytes  # what the buyer's part starts with for every buyer
    state: "hashlib._Hash"  # SHA-256 having consumed the whole head

    def hasher(self):
        return self.state.copy()


_lock = threading.Lock()
_heads: dict[tuple, AccelHead] = {}
_last_sweep = 0.0


def cache_root() -> Path:
    return Path(settings.VAR_DIR) / "downloads"


def accel_head(storage: Storage, prepared: Prepared) -> AccelHead:
    """The local head for this prepared file, filling the cache from the store if needed.

    Raises SourceMissing or StorageUnavailable (before anything is recorded)."""
    prefix = b"\n" + prepared.pdf.template if prepared.kind == "pdf" and prepared.stampable else b""
    key = (str(cache_root()), prepared.base_name, prepared.base_sha256, len(prefix))
    with _lock:
        head = _heads.get(key)
    if head is not None:
        try:
            age = time.time() - head.path.stat().st_mtime
        except FileNotFoundError:
            head = None  # evicted by another process: fill again
        else:
            if age > TOUCH_AFTER:
                with contextlib.suppress(OSError):
                    os.utime(head.path)
            return head
    prefix_sha = hashlib.sha256(prefix).hexdigest()[:16]
    name = f"{prepared.base_sha256[:32]}-{prefix_sha}.bin"
    path = cache_root() / "heads" / name
    state = _read_head(path, prepared, prefix) or _fill_head(storage, path, prepared, prefix)
    head = AccelHead(name, path, prefix, state)
    with _lock:
        _heads[key] = head
        while len(_heads) > 256:
            _heads.pop(next(iter(_heads)))
    return head


def accel_tail_write(tail: bytes) -> str:
    """Write one buyer's tail; its name relative to tails/ for the redirect."""
    now = time.time()
    bucket = str(int(now) // TAIL_BUCKET_SECONDS)
    folder = cache_root() / "tails" / bucket
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{bucket}/{secrets.token_urlsafe(18)}.bin"
    fd = os.open(cache_root() / "tails" / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(tail)
    _sweep_tails(now)
    return name


def accel_redirect(head: AccelHead, tail: str) -> str:
    return f"{ACCEL_PREFIX}{head.name}?t={tail}"


# --- Internals ------------------------------------------------------------------------------


def _read_head(path: Path, prepared: Prepared, prefix: bytes):
    """The hash state of a head another process already wrote, or None if it is missing
    or not what it should be (then it is written again)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return None
    with handle:
        state = hashlib.sha256()
        left = prepared.base_length
        while left > 0:
            chunk = handle.read(min(1 << 20, left))
            if not chunk:
                return None
            state.update(chunk)
            left -= len(chunk)
        if state.hexdigest() != prepared.base_sha256 or handle.read() != prefix:
            return None
    state.update(prefix)
    return state


def _fill_head(storage: Storage, path: Path, prepared: Prepared, prefix: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{secrets.token_hex(8)}")
    state = hashlib.sha256()
    try:
        with open(temporary, "wb") as handle:
            for chunk in open_range(storage, prepared.base_name, 0, prepared.base_length):
                state.update(chunk)
                handle.write(chunk)
            if state.hexdigest() != prepared.base_sha256:
                raise StorageUnavailable(
                    "The file store returned a different file. Please try again in a minute."
                )
            handle.write(prefix)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)  # atomic: nginx never sees half a head
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    state.update(prefix)
    _evict(keep=path)
    return state


def _evict(*, keep: Path) -> None:
    """Least recently used heads go once the cache is over its size; never one in use."""
    limit = int(getattr(settings, "DOWNLOAD_CACHE_MAX_BYTES", CACHE_MAX_BYTES))
    entries = []
    for entry in os.scandir(keep.parent):
        with contextlib.suppress(FileNotFoundError):
            info = entry.stat()
            entries.append((info.st_mtime, info.st_size, Path(entry.path)))
    total = sum(size for _m, size, _p in entries)
    now = time.time()
    for _mtime, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if path == keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            # Stale temporaries and heads unused for a while; checked again right before.
            if now - path.stat().st_mtime < IN_USE_SECONDS:
                continue
            path.unlink()
            total -= size


def _sweep_tails(now: float) -> None:
    global _last_sweep
    if now - _last_sweep < TAIL_BUCKET_SECONDS:
        return
    _last_sweep = now
    oldest = int(now - TAIL_KEEP_SECONDS) // TAIL_BUCKET_SECONDS
    root = cache_root() / "tails"
    for entry in os.scandir(root):
        if entry.name.isdigit() and int(entry.name) < oldest:
            shutil.rmtree(entry.path, ignore_errors=True)
