"""Signed, expiring links to protected files.

The caller decides who may have a file (an entitlement, staff preview); this module only
makes sure the link it issues names that one file, for that one user, and expires.
- S3: a SigV4 presigned URL, valid for PROTECTED_URL_MAX_AGE seconds.
- Local: a URL to our own view, carrying a signature (django.core.signing) over the path,
  the user and the issue time. The view serves it with X-Accel-Redirect behind nginx, or
  streams it itself in the demo.
"""

from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.urls import reverse

from .exceptions import LinkExpired, LinkInvalid
from .storage import is_s3, protected_storage

SALT = "lodestone.media.protected-link"


def protected_url(*, name: str, user_id: int | None, filename: str | None = None) -> str:
    storage = protected_storage()
    if is_s3(storage):
        params = {}
        if filename:
            params["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
        return storage.url(name, parameters=params or None, expire=settings.PROTECTED_URL_MAX_AGE)
    token = signing.dumps({"n": name, "u": user_id, "f": filename}, salt=SALT, compress=True)
    return reverse("media:protected", kwargs={"token": token})


def protected_link_open(*, token: str, user_id: int | None) -> tuple[str, str | None]:
    """Check a local link; return (storage name, download filename)."""
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.PROTECTED_URL_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise LinkExpired("This download link has expired.") from exc
    except signing.BadSignature as exc:
        raise LinkInvalid("This download link is not valid.") from exc
    if data.get("u") is not None and data["u"] != user_id:
        raise LinkInvalid("This download link belongs to another account.")
    return data["n"], data.get("f")
