"""Reading the protected store in byte ranges, with its failures named.

A stamped download streams a byte range of a stored file (a prepared PDF base, or a ZIP
up to its central directory) and must not pull the whole file into memory or onto disk
first, as django-storages' S3File does. On S3 a ranged GET is streamed as it arrives; on
a filesystem store the file is read in chunks.

Failures become domain errors: a missing object is SourceMissing, a store that does not
answer (connection refused, timeout, 5xx, I/O error) is StorageUnavailable, which the
edge turns into a 503 asking the buyer to try again.
"""

import contextlib
from dataclasses import dataclass

from django.core.files.storage import FileSystemStorage, Storage

from ..exceptions import SourceMissing, StorageUnavailable
from ..storage import is_s3

CHUNK = 256 * 1024


@dataclass(frozen=True)
class StoredFile:
    name: str
    size: int
    version: str  # changes whenever the stored bytes may have changed


@contextlib.contextmanager
def storage_errors(name: str):
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except FileNotFoundError as exc:
        raise SourceMissing(f"The file {name} is not in the protected store.") from exc
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code", "")
        if status == 404 or code in ("NoSuchKey", "404", "NotFound"):
            raise SourceMissing(f"The file {name} is not in the protected store.") from exc
        raise StorageUnavailable(
            "The file store did not answer. Please try again in a minute."
        ) from exc
    except (BotoCoreError, OSError) as exc:
        raise StorageUnavailable(
            "The file store did not answer. Please try again in a minute."
        ) from exc


def _s3_object(storage: Storage, name: str):
    from storages.utils import clean_name

    return storage.bucket.Object(storage._normalize_name(clean_name(name)))


def stored_file(storage: Storage, name: str) -> StoredFile:
    with storage_errors(name):
        if is_s3(storage):
            obj = _s3_object(storage, name)
            obj.load()
            return StoredFile(name, obj.content_length, f"{obj.e_tag}:{obj.last_modified}")
        size = storage.size(name)
        return StoredFile(name, size, f"{size}:{storage.get_modified_time(name).isoformat()}")


def read_range(storage: Storage, name: str, start: int, length: int) -> bytes:
    return b"".join(open_range(storage, name, start, length))


def open_range(storage: Storage, name: str, start: int, length: int) -> "RangeStream":
    """Open bytes [start, start + length) of a stored file now (so that a missing file or
    an unreachable store fails here, before a response starts), and iterate them later."""
    with storage_errors(name):
        if length <= 0:
            return RangeStream(name, None, None, 0)
        if is_s3(storage):
            body = _s3_object(storage, name).get(Range=f"bytes={start}-{start + length - 1}")[
                "Body"
            ]
            return RangeStream(name, body, body.iter_chunks(CHUNK), length)
        if isinstance(storage, FileSystemStorage):
            handle = open(storage.path(name), "rb")  # noqa: SIM115 - RangeStream closes it
        else:
            handle = storage.open(name, "rb")
        handle.seek(start)
        return RangeStream(name, handle, None, length)


class RangeStream:
    """An iterator over a byte range that closes its source when done or closed early."""

    def __init__(self, name: str, source, chunks, length: int):
        self.name, self.source, self.chunks, self.left = name, source, chunks, length

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        if self.left <= 0:
            self.close()
            raise StopIteration
        with storage_errors(self.name):
            if self.chunks is not None:
                chunk = next(self.chunks, b"")
            else:
                chunk = self.source.read(min(CHUNK, self.left))
        if not chunk:
            self.close()
            raise StorageUnavailable(f"The stored file {self.name} ended early.")
        chunk = chunk[: self.left]
        self.left -= len(chunk)
        return chunk

    def close(self) -> None:
        if self.source is not None:
            with contextlib.suppress(Exception):
                self.source.close()
            self.source = None


def download_to(storage: Storage, name: str, target, size: int) -> None:
    """Copy a stored file into an open binary file."""
    for chunk in open_range(storage, name, 0, size):
        target.write(chunk)


def save_exactly(storage: Storage, name: str, content) -> None:
    """Store under exactly this name, replacing what was there (storages otherwise pick a
    fresh name when one is taken)."""
    with storage_errors(name):
        if storage.exists(name):
            storage.delete(name)
        saved = storage.save(name, content)
    if saved != name:
        with storage_errors(name):
            storage.delete(saved)
        raise StorageUnavailable(f"The file store saved {name} under another name.")


def delete_quietly(storage: Storage, name: str) -> None:
    with contextlib.suppress(Exception), storage_errors(name):
        storage.delete(name)
