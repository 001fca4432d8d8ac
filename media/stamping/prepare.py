"""Preparing a protected file for per-buyer delivery, once per version, kept in the store.

Next to each source the protected store holds `<source>.stamping.json`: the source's
version and SHA-256, what kind of file it is, a problem found while preparing it (for
the creator), and what a download streams before the buyer's part:
- PDF: `<source>.prepared-<sha16>.pdf`, the prepared base (media.stamping.pdf), whole;
- EPUB and ZIP: the source itself, up to its central directory (media.stamping.zip);
- anything else, or a PDF that cannot be stamped: the source itself, whole.

Preparation runs from a Celery task when a file is uploaded, or on the first download;
a PostgreSQL advisory lock makes a second process wait for the first instead of doing
the work twice. Each process keeps what it has read, checked against the source's size
and modification time (an S3 ETag) so a replaced file is prepared again; the check (an S3
HEAD, a quarter of a download's cost) is made at most every
settings.DOWNLOAD_SOURCE_RECHECK_SECONDS per file and process, so a replacement reaches
every process within that time.
"""

import contextlib
import hashlib
import json
import logging
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.db import connection

from ..exceptions import SourceProblem
from ..storage import protected_storage
from .epub import PreparedEpub, epub_prepare
from .pdf import FORMAT_VERSION, PreparedPdf, pdf_prepare
from .storage_io import (
    StoredFile,
    delete_quietly,
    download_to,
    open_range,
    save_exactly,
    storage_errors,
    stored_file,
)
from .zip import PreparedZip, zip_prepare, zip_tail_length

logger = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".stamping.json"
CACHE_SIZE = 256


@dataclass
class Prepared:
    source_name: str
    source_version: str
    source_size: int
    source_sha256: str
    kind: str  # "pdf", "epub", "zip" or "plain"
    problem: str  # for the creator; "" when the file can be stamped
    base_name: str  # what a download streams before the buyer's part...
    base_length: int  # ...this many bytes of it...
    base_sha256: str  # ...whose SHA-256 is this
    pdf: PreparedPdf | None = None
    zip: PreparedZip | None = None
    epub: PreparedEpub | None = None
    version: int = FORMAT_VERSION

    @property
    def stampable(self) -> bool:
        return not self.problem and self.kind in ("pdf", "epub", "zip")

    def to_json(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k not in ("pdf", "zip", "epub")}
        for key in ("pdf", "zip", "epub"):
            value = getattr(self, key)
            data[key] = value.to_json() if value is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Prepared":
        data = dict(data)
        data["pdf"] = PreparedPdf.from_json(data["pdf"]) if data.get("pdf") else None
        data["zip"] = PreparedZip.from_json(data["zip"]) if data.get("zip") else None
        data["epub"] = PreparedEpub.from_json(data["epub"]) if data.get("epub") else None
        return cls(**data)


def manifest_name(source_name: str) -> str:
    return source_name + MANIFEST_SUFFIX


def base_name_for(source_name: str, sha256: str) -> str:
    return f"{source_name}.prepared-{sha256[:16]}-v{FORMAT_VERSION}.pdf"


def is_derived_name(name: str) -> bool:
    """A file this module wrote (never itself a source)."""
    return name.endswith(MANIFEST_SUFFIX) or ".prepared-" in PurePosixPath(name).name


# --- Per process: what this process has already read -----------------------------------------

_lock = threading.Lock()
_prepared: OrderedDict[str, Prepared] = OrderedDict()
_checked: dict[str, float] = {}  # source name -> time.monotonic() of its last version check
_hashers: OrderedDict[tuple[str, int, str], "hashlib._Hash"] = OrderedDict()


def _remember(cache: OrderedDict, key, value) -> None:
    with _lock:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)


def prepared_get(source_name: str, *, storage: Storage | None = None) -> Prepared:
    """The prepared form of a protected file, preparing it now if nobody has yet.

    Raises SourceMissing or StorageUnavailable; a file that cannot be stamped is not an
    error here: its `problem` says why.
    """
    storage = storage or protected_storage()
    recheck = getattr(settings, "DOWNLOAD_SOURCE_RECHECK_SECONDS", 0)
    with _lock:
        cached = _prepared.get(source_name)
        checked = _checked.get(source_name)
    if cached is not None and checked is not None and time.monotonic() - checked < recheck:
        return cached
    source = stored_file(storage, source_name)
    if cached is None or cached.source_version != source.version:
        cached = _manifest_read(storage, source)
        if cached is None:
            with _advisory_lock(source_name):
                cached = _manifest_read(storage, source) or _prepare_and_store(storage, source)
    _remember(_prepared, source_name, cached)
    with _lock:
        _checked[source_name] = time.monotonic()
        while len(_checked) > CACHE_SIZE:
            _checked.pop(next(iter(_checked)))
    return cached


def prepared_peek(source_name: str, *, storage: Storage | None = None) -> Prepared | None:
    """The prepared form of a protected file if it is ready, else None; never prepares.

    For status displays: cheap (one small read). Raises SourceMissing or
    StorageUnavailable.
    """
    storage = storage or protected_storage()
    source = stored_file(storage, source_name)
    with _lock:
        cached = _prepared.get(source_name)
    if cached is not None and cached.source_version == source.version:
        return cached
    return _manifest_read(storage, source)


def base_hasher(storage: Storage, prepared: Prepared):
    """A SHA-256 state that has consumed the base: the hash of base + buyer's part is
    then `hasher.copy().update(part)`, without reading the base per download."""
    key = (prepared.base_name, prepared.base_length, prepared.base_sha256)
    with _lock:
        hasher = _hashers.get(key)
    if hasher is None:
        hasher = hashlib.sha256()
        for chunk in open_range(storage, prepared.base_name, 0, prepared.base_length):
            hasher.update(chunk)
        if hasher.hexdigest() != prepared.base_sha256:
            # The stored base is not what was prepared: prepare again rather than send it.
            delete_quietly(storage, manifest_name(prepared.source_name))
            with _lock:
                _prepared.pop(prepared.source_name, None)
            raise SourceProblem(f"The prepared copy of {prepared.source_name} changed in storage.")
        _remember(_hashers, key, hasher)
    return hasher.copy()


def forget_cached() -> None:
    """Drop what this process remembers (tests switch storages between runs)."""
    with _lock:
        _prepared.clear()
        _hashers.clear()


# --- Reading and writing the manifest -----------------------------------------------------


def _manifest_read(storage: Storage, source: StoredFile) -> Prepared | None:
    name = manifest_name(source.name)
    with storage_errors(name):
        if not storage.exists(name):
            return None
        with storage.open(name, "rb") as handle:
            raw = handle.read()
    try:
        prepared = Prepared.from_json(json.loads(raw))
    except (ValueError, TypeError, KeyError):
        logger.warning("Unreadable stamping manifest %s; preparing again", name)
        return None
    if prepared.version != FORMAT_VERSION or prepared.source_version != source.version:
        return None
    return prepared


def _prepare_and_store(storage: Storage, source: StoredFile) -> Prepared:
    previous = None
    with contextlib.suppress(Exception), storage.open(manifest_name(source.name), "rb") as handle:
        previous = json.loads(handle.read()).get("base_name")
    with tempfile.TemporaryDirectory(prefix="lodestone-stamp-") as work:
        local = Path(work) / "source"
        with open(local, "wb") as target:
            download_to(storage, source.name, target, source.size)
        prepared = prepare_local(source, local, Path(work))
        if prepared.kind == "pdf" and prepared.stampable:
            with open(Path(work) / "base.pdf", "rb") as base:
                save_exactly(storage, prepared.base_name, File(base))
    body = json.dumps(prepared.to_json(), separators=(",", ":")).encode()
    save_exactly(storage, manifest_name(source.name), ContentFile(body))
    if previous and previous not in (prepared.base_name, source.name):
        delete_quietly(storage, previous)
    logger.info(
        "Prepared %s for stamped delivery: %s, %s bytes before the buyer's part",
        source.name,
        prepared.kind,
        prepared.base_length,
    )
    if prepared.problem:
        # The creator sees this through media.downloads.source_problem (admin, upload task).
        logger.error("Protected file %s cannot be stamped: %s", source.name, prepared.problem)
    return prepared


def prepare_local(source: StoredFile, path: Path, work: Path) -> Prepared:
    """Prepare a source copied to local disk; a PDF's base is written to work/base.pdf."""
    with open(path, "rb") as handle:
        sha = hashlib.file_digest(handle, "sha256").hexdigest()
        handle.seek(0)
        head = handle.read(1024)
    kind = kind_of(source.name, head)
    plain = Prepared(
        source_name=source.name,
        source_version=source.version,
        source_size=source.size,
        source_sha256=sha,
        kind=kind,
        problem="",
        base_name=source.name,
        base_length=source.size,
        base_sha256=sha,
    )
    try:
        if kind == "pdf":
            pdf = pdf_prepare(path, work / "base.pdf")
            plain.pdf = pdf
            plain.base_name = base_name_for(source.name, sha)
            plain.base_length, plain.base_sha256 = pdf.base_size, pdf.base_sha256
        elif kind in ("zip", "epub"):
            prepared_zip = _zip_from(path, source.size)
            plain.base_length = prepared_zip.cd_offset
            plain.base_sha256 = _prefix_sha256(path, prepared_zip.cd_offset)
            if kind == "epub":
                with zipfile.ZipFile(path) as archive:
                    plain.epub = epub_prepare(prepared_zip, archive.read)
            else:
                plain.zip = prepared_zip
    except SourceProblem as problem:
        plain.problem = str(problem)
        plain.pdf = plain.zip = plain.epub = None
        plain.base_name, plain.base_length, plain.base_sha256 = source.name, source.size, sha
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        plain.problem = (
            f"This {kind.upper()} file is damaged and cannot be stamped ({exc}). Export it "
            "again from the program that made it and upload that copy."
        )
        plain.pdf = plain.zip = plain.epub = None
        plain.base_name, plain.base_length, plain.base_sha256 = source.name, source.size, sha
    return plain


def kind_of(name: str, head: bytes) -> str:
    """ "pdf", "epub", "zip" (the kinds a buyer's stamp goes into) or "plain"."""
    ext = PurePosixPath(name).suffix.lower()
    if ext == ".pdf" or head.startswith(b"%PDF"):
        return "pdf"
    if ext == ".epub":
        return "epub"
    if ext == ".zip" or head.startswith(b"PK\x03\x04"):
        return "zip"
    return "plain"


def _zip_from(path: Path, size: int) -> PreparedZip:
    def read_range(start: int, length: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(length)

    tail_length = zip_tail_length(size)
    return zip_prepare(
        size=size, tail=read_range(size - tail_length, tail_length), read_range=read_range
    )


def _prefix_sha256(path: Path, length: int) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        left = length
        while left > 0:
            chunk = handle.read(min(1 << 20, left))
            if not chunk:
                break
            hasher.update(chunk)
            left -= len(chunk)
    return hasher.hexdigest()


@contextlib.contextmanager
def _advisory_lock(source_name: str):
    """One preparation per file at a time, across processes (PostgreSQL session lock)."""
    if connection.vendor != "postgresql":
        yield
        return
    digest = hashlib.sha256(b"lodestone.stamping:" + source_name.encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
