"""Delivering a protected file to one buyer: stamped with their name, recorded, limited.

`download_deliver` is the one way a purchased file or a lead magnet leaves the protected
store. The caller has decided that this person may have the file (an entitlement, a
confirmed subscription); this service then
1. finds the file's prepared form (media.stamping.prepare: once per file version),
2. refuses when the buyer has reached the download limit for this file,
3. records a DownloadDelivery row with a fresh marker and the SHA-256 of the exact
   bytes about to be sent,
4. returns a streaming response: the prepared base straight from storage, then the
   buyer's part (a PDF incremental update, or a ZIP/EPUB's licence and central
   directory), generated in well under a millisecond.
No per-buyer copy is ever stored. See media/stamping/pdf.py for the PDF design.

Errors are DeliveryError subclasses with buyer-facing messages; `http_status` maps them
to a status code for the edge (429 for the limit, 503 for a store that did not answer).
"""

import mimetypes
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.formats import date_format

from .accel import AccelHead, accel_head, accel_redirect, accel_tail_write
from .exceptions import (
    DeliveryError,
    DownloadLimitReached,
    DownloadUnavailable,
    LinkExpired,
    LinkInvalid,
    SourceMissing,
    SourceProblem,
    StorageUnavailable,
)
from .models import DownloadDelivery
from .stamping.epub import epub_suffix
from .stamping.markers import marker_new
from .stamping.pdf import Licensee, pdf_suffix
from .stamping.prepare import (
    Prepared,
    base_hasher,
    kind_of,
    prepare_local,
    prepared_get,
    prepared_peek,
)
from .stamping.storage_io import StoredFile
from .stamping.zip import zip_suffix
from .storage import protected_storage

DEFAULT_LIMIT = 5
DEFAULT_WINDOW_DAYS = 30


class DownloadResponse(StreamingHttpResponse):
    """The stamped file as a streaming attachment; `.delivery` is its ledger row."""

    delivery: DownloadDelivery


class AccelDownloadResponse(HttpResponse):
    """Behind our nginx: an empty answer whose X-Accel-Redirect makes nginx send the same
    bytes the streaming path would (see media/accel.py); `.delivery` is its ledger row."""

    delivery: DownloadDelivery


def download_limit() -> tuple[int, timedelta]:
    """(downloads allowed per buyer and file, in this window); 0 means no limit."""
    count = int(getattr(settings, "DOWNLOAD_LIMIT_COUNT", DEFAULT_LIMIT))
    days = float(getattr(settings, "DOWNLOAD_LIMIT_WINDOW_DAYS", DEFAULT_WINDOW_DAYS))
    return count, timedelta(days=days)


def download_deliver(
    *,
    source_name: str,
    user=None,
    subscriber_email: str = "",
    recipient_name: str = "",
    order_reference: str = "",
    filename: str,
    request=None,
    allow_unstamped: bool | None = None,
    on_recorded: Callable[[DownloadDelivery], object] | None = None,
) -> DownloadResponse | AccelDownloadResponse:
    """Stream `source_name` to one person, stamped and recorded.

    `user` (an account) or `subscriber_email` (a lead-magnet subscriber) names the
    recipient; the stamp shows `recipient_name` (default: the account's full name) and
    the email. `allow_unstamped` (default: settings.DOWNLOAD_ALLOW_UNSTAMPED, off) sends
    a file that cannot be stamped (damaged, encrypted) as it is instead of refusing.

    Raises DownloadLimitReached, DownloadUnavailable (the file cannot be stamped; the
    creator sees why through `source_problem`), SourceMissing, StorageUnavailable.
    `on_recorded(delivery)` runs right after the ledger row is written, in the same
    transaction: the caller's own record of the download commits or rolls back with it.
    """
    email = (subscriber_email or getattr(user, "email", "") or "").strip()
    if user is None and not email:
        raise ValueError("A download needs a user or a subscriber email to name its recipient.")
    if not recipient_name and user is not None:
        full_name = user.get_full_name() if hasattr(user, "get_full_name") else ""
        recipient_name = full_name if full_name != email else ""
    if allow_unstamped is None:
        allow_unstamped = bool(getattr(settings, "DOWNLOAD_ALLOW_UNSTAMPED", False))

    storage = protected_storage()
    prepared = prepared_get(source_name, storage=storage)
    if prepared.problem and not allow_unstamped:
        raise DownloadUnavailable(
            "This file cannot be delivered right now. The creator has been told; "
            "please try again later."
        )
    ip_address, user_agent = _client(request)
    # Behind our nginx, nginx sends the bytes: the prepared head from a local cache, then
    # this buyer's tail from a small file (media.accel). Filled before the ledger row, so
    # a store that does not answer records nothing.
    head = accel_head(storage, prepared) if getattr(settings, "DOWNLOAD_X_ACCEL", False) else None
    # Called outside a transaction (views marked transaction.non_atomic_requests), this
    # block is the whole transaction: no savepoint, each of which costs two round trips.
    with transaction.atomic():
        _limit_enforce(user=user, email=email, source_name=source_name, filename=filename)
        issued_at = timezone.now()
        # One attempt: the marker has 80 random bits, so a clash with a stored one is less
        # likely than a disk error; the unique constraint still refuses it if it happens.
        licensee = Licensee(recipient_name.strip(), email, order_reference, marker_new())
        suffix = _buyer_part(prepared, licensee, issued_at)
        if head is not None and not suffix.startswith(head.prefix):
            head = None  # the buyer's part no longer starts with the cached prefix
        if head is not None:
            hasher = head.hasher()
            hasher.update(memoryview(suffix)[len(head.prefix) :])
        else:
            hasher = base_hasher(storage, prepared)
            hasher.update(suffix)
        delivery = DownloadDelivery.objects.create(
            marker=licensee.marker,
            user=user if getattr(user, "pk", None) else None,
            subscriber_email=subscriber_email.strip(),
            recipient_name=recipient_name.strip()[:200],
            order_reference=order_reference[:64],
            source_name=source_name,
            source_sha256=prepared.source_sha256,
            download_filename=filename[:255],
            sent_sha256=hasher.hexdigest(),
            sent_size=prepared.base_length + len(suffix),
            stamped=prepared.stampable,
            ip_address=ip_address,
            user_agent=user_agent,
            created_at=issued_at,
        )
        if on_recorded is not None:
            on_recorded(delivery)
        if head is not None:
            # Written inside the transaction: a full disk rolls the row back.
            tail = accel_tail_write(suffix[len(head.prefix) :])
            return _accel_response(head, tail, delivery, filename)
        # Opened last and inside the transaction: a store that does not answer rolls the
        # row back, so a failed attempt does not count against the buyer's limit.
        base = _open_base(storage, prepared)
    return _response(base, suffix, delivery, filename)


def source_problem(name: str) -> str:
    """Why a protected file cannot be stamped, for its creator; "" when it can.

    Prepares the file if that has not happened yet (seconds for a long PDF).
    """
    return prepared_get(name).problem


def download_prepare_later(source_name: str) -> None:
    """Queue the preparation of a newly uploaded file, once the upload commits."""
    from .stamping.tasks import download_prepare

    download_prepare.delay_on_commit(source_name)


def upload_problem(upload, *, name: str = "") -> str:
    """Why an uploaded file, not yet stored, could not be stamped for its buyers, with what
    the creator can do about it; "" when it can (or when it is no PDF, EPUB or ZIP).

    Runs the same preparation a first download would, on a temporary copy (a fraction of a
    second for a long PDF), so an editor can refuse the file before anyone buys it.
    """
    name = name or getattr(upload, "name", "") or "upload"
    upload.seek(0)
    head = upload.read(1024)
    upload.seek(0)
    kind = kind_of(name, head)
    if kind == "plain":
        return ""
    with tempfile.TemporaryDirectory(prefix="lodestone-upload-check-") as work:
        work = Path(work)
        path = _local_copy(upload, work)
        stored = StoredFile(name=name, size=path.stat().st_size, version="upload")
        problem = prepare_local(stored, path, work).problem
    upload.seek(0)
    return problem


@dataclass(frozen=True)
class DownloadStatus:
    """Where a stored file stands for stamped delivery, for its creator."""

    state: str  # "ready", "preparing", "problem", "missing" or "unknown"
    message: str


def download_status(name: str) -> DownloadStatus:
    """Whether a stored file is ready to be stamped for buyers; never prepares it (the
    queued task does), so an admin page can show it for every file at once."""
    try:
        prepared = prepared_peek(name)
    except SourceMissing:
        return DownloadStatus(
            "missing", "This file is missing from the protected store. Upload it again."
        )
    except StorageUnavailable:
        return DownloadStatus(
            "unknown", "The protected store did not answer; reload the page to see the status."
        )
    if prepared is None:
        return DownloadStatus(
            "preparing",
            "Being prepared for stamped downloads (seconds to a minute). "
            "Reload the page to see the result.",
        )
    if prepared.problem:
        if getattr(settings, "DOWNLOAD_ALLOW_UNSTAMPED", False):
            after = "Buyers get it unstamped, as this site allows."
        else:
            after = "Buyers cannot download it until you upload a copy that can be stamped."
        return DownloadStatus("problem", f"Cannot be stamped: {prepared.problem} {after}")
    if prepared.stampable:
        return DownloadStatus(
            "ready", "Ready: every download is stamped with its buyer's name and email."
        )
    return DownloadStatus(
        "ready", "Ready: sent as it is (only PDF, EPUB and ZIP files carry a buyer's stamp)."
    )


def http_status(error: DeliveryError) -> int:
    if isinstance(error, DownloadLimitReached):
        return 429
    if isinstance(error, StorageUnavailable | DownloadUnavailable | SourceProblem):
        return 503
    if isinstance(error, SourceMissing):
        return 404
    if isinstance(error, LinkExpired | LinkInvalid):
        return 403
    return 400


# --- Internals ------------------------------------------------------------------------------


def _client(request) -> tuple[str | None, str]:
    if request is None:
        return None, ""
    from core.http import client_ip

    return client_ip(request), request.META.get("HTTP_USER_AGENT", "")[:500]


def _limit_enforce(*, user, email: str, source_name: str, filename: str) -> None:
    count, window = download_limit()
    if count <= 0:
        return
    who = f"user:{user.pk}" if getattr(user, "pk", None) else f"email:{email.lower()}"
    if connection.vendor == "postgresql":
        # Two downloads at once by the same buyer must not both take the last slot.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"lodestone.downloads:{who}:{source_name}"],
            )
    since = timezone.now() - window
    rows = DownloadDelivery.objects.filter(source_name=source_name, created_at__gte=since)
    if getattr(user, "pk", None):
        rows = rows.filter(user=user)
    else:
        rows = rows.filter(user__isnull=True, subscriber_email__iexact=email)
    recent = list(rows.order_by("created_at").values_list("created_at", flat=True)[:count])
    if len(recent) >= count:
        again = timezone.localtime(recent[0] + window)
        days = window.days
        raise DownloadLimitReached(
            f"You have downloaded {filename} {count} times in the last {days} days, the most "
            f"we allow. You can download it again from {date_format(again, 'j F Y, H:i')}. "
            "If you need it sooner, please get in touch."
        )


def _local_copy(upload, work: Path) -> Path:
    """A path to the upload's bytes: Django's own temporary file for a large upload."""
    try:
        return Path(upload.temporary_file_path())
    except AttributeError:
        pass
    path = work / "source"
    with open(path, "wb") as target:
        for chunk in upload.chunks():
            target.write(chunk)
    return path


def _buyer_part(prepared: Prepared, licensee: Licensee, issued_at) -> bytes:
    if not prepared.stampable:
        return b""
    if prepared.kind == "pdf":
        return pdf_suffix(prepared.pdf, licensee, issued_at=issued_at)
    if prepared.kind == "epub":
        return epub_suffix(prepared.epub, licensee, issued_at=issued_at)
    return zip_suffix(prepared.zip, licensee, issued_at=issued_at)


def _open_base(storage, prepared: Prepared):
    from .stamping.storage_io import open_range

    return open_range(storage, prepared.base_name, 0, prepared.base_length)


def _attachment_headers(response, filename: str) -> None:
    response["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    # Each request is a new delivery with its own marker: a resumed range of another
    # copy would not fit, so ranges are not offered.
    response["Accept-Ranges"] = "none"


def _accel_response(
    head: AccelHead, tail: str, delivery: DownloadDelivery, filename: str
) -> AccelDownloadResponse:
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    response = AccelDownloadResponse(content_type=content_type)
    response.delivery = delivery
    response["X-Accel-Redirect"] = accel_redirect(head, tail)
    _attachment_headers(response, filename)
    return response


def _response(base, suffix: bytes, delivery: DownloadDelivery, filename: str) -> DownloadResponse:
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    response = DownloadResponse(_Body(base, suffix), content_type=content_type)
    response.delivery = delivery
    response["Content-Length"] = str(delivery.sent_size)
    _attachment_headers(response, filename)
    return response


class _Body:
    """The base's chunks, then the buyer's part. Django calls close() when the request
    ends, finished or not, which closes the store's stream."""

    def __init__(self, base, suffix: bytes):
        self.base, self.suffix = base, suffix

    def __iter__(self):
        yield from self.base
        if self.suffix:
            yield self.suffix

    def close(self) -> None:
        self.base.close()
