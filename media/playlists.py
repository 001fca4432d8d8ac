"""Per-viewer HLS playlists: every URI in them is signed for one viewer and expires.

- The master playlist points at our rendition-playlist view, each URI carrying a token
  bound to (user id, video uid, expiry).
- A rendition playlist is the stored one with each segment URI (and the EXT-X-MAP init
  segment) replaced by a signed URL: on S3 a SigV4 presigned URL, locally our own
  `/protected/video/seg/<token>/`, an HMAC over (storage name, user id, expiry) that the
  segment view checks against the session presenting it.

Lifetimes. A VOD playlist is fetched once and played for as long as the video lasts, so
segment i's URL expires TTL seconds after a viewer at normal speed would need it:
issued + TTL + start of segment i. The player (site/static/js/player.js) re-fetches the
playlists for URLs that expire before they are used (after a pause, a seek back); a stale
URL gets a 403. S3 presigned URLs cannot be bound to a user: whoever holds one can fetch
that one segment until it expires, which is why TTL is short (PROTECTED_VIDEO_URL_TTL,
120 s by default). Local segment URLs are bound to the viewer's account as well.

Cost. Stored playlists never change (each transcode writes a new folder), so each is read
from storage once per process. Local tokens are one HMAC-SHA256 each (~4 µs). boto3 takes
~0.3 ms per presigned URL (endpoint resolution, event hooks); `S3Presigner` asks boto3 for
the first URL of a playlist, checks that it computes the identical signature for it, and
then signs the rest itself (~5 µs each). See benchmarks/playlist_generation.py.
"""

import base64
import binascii
import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.core.files.storage import Storage
from django.urls import reverse

from .exceptions import LinkExpired, LinkInvalid
from .storage import is_s3
from .transcode import attribute_list, master_playlist

DEFAULT_URL_TTL = 120
# SigV4 refuses X-Amz-Expires above a week.
S3_MAX_EXPIRES = 7 * 24 * 3600
SEGMENT_MAC_BYTES = 16  # HMAC-SHA256 truncated to 128 bits (as in RFC 4868)


def url_ttl() -> int:
    return int(getattr(settings, "PROTECTED_VIDEO_URL_TTL", DEFAULT_URL_TTL))


# --- Keys and tokens ---------------------------------------------------------------------

_keys: dict[tuple[str, ...], list[bytes]] = {}


def _signing_keys() -> list[bytes]:
    """One key per secret (SECRET_KEY first, then its fallbacks), derived once per process."""
    secrets = (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", []))
    keys = _keys.get(secrets)
    if keys is None:
        keys = [
            hashlib.sha256(b"lodestone.media.video-url" + secret.encode()).digest()
            for secret in secrets
        ]
        _keys.clear()
        _keys[secrets] = keys
    return keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")[:SEGMENT_MAC_BYTES]


def _user_part(user_id: int | None) -> bytes:
    return b"-" if user_id is None else str(user_id).encode()


def _verify(message: bytes, mac: str, expires: int) -> None:
    try:
        presented = _unb64(mac)
    except (binascii.Error, ValueError) as exc:
        raise LinkInvalid("This video link is not valid.") from exc
    if not any(hmac.compare_digest(_mac(key, message), presented) for key in _signing_keys()):
        raise LinkInvalid("This video link is not valid.")
    if expires < time.time():
        raise LinkExpired("This video link has expired.")


def segment_token(*, name: str, user_id: int | None, expires: int) -> str:
    """`<name>.<expiry>.<mac>`: the storage name (base64url), expiry (hex unix seconds)."""
    exp = f"{expires:x}"
    message = b"seg\0" + name.encode() + b"\0" + _user_part(user_id) + b"\0" + exp.encode()
    return f"{_b64(name.encode())}.{exp}.{_b64(_mac(_signing_keys()[0], message))}"


def segment_token_open(*, token: str, user_id: int | None) -> str:
    """The storage name a segment token grants to this user; LinkInvalid/LinkExpired if not."""
    try:
        name_part, exp, mac = token.split(".")
        name = _unb64(name_part).decode()
        expires = int(exp, 16)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise LinkInvalid("This video link is not valid.") from exc
    message = b"seg\0" + name.encode() + b"\0" + _user_part(user_id) + b"\0" + exp.encode()
    _verify(message, mac, expires)
    return name


def rendition_token(*, video_uid: str, user_id: int | None, expires: int) -> str:
    exp = f"{expires:x}"
    message = b"pl\0" + video_uid.encode() + b"\0" + _user_part(user_id) + b"\0" + exp.encode()
    return f"{exp}.{_b64(_mac(_signing_keys()[0], message))}"


def rendition_token_check(*, token: str, video_uid: str, user_id: int | None) -> None:
    try:
        exp, mac = token.split(".")
        expires = int(exp, 16)
    except ValueError as exc:
        raise LinkInvalid("This video link is not valid.") from exc
    message = b"pl\0" + video_uid.encode() + b"\0" + _user_part(user_id) + b"\0" + exp.encode()
    _verify(message, mac, expires)


# --- Stored playlists ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredPlaylist:
    """A media playlist as ffmpeg wrote it, split where URIs go.

    `parts` alternates literal text and URIs: text, uri, text, uri, ..., text.
    `starts[i]` is the start time (s) of the media behind URI i; the init segment gets
    the whole duration, as a player needs it again at every switch to this rendition.
    """

    parts: tuple[str, ...]
    uris: tuple[str, ...]
    starts: tuple[float, ...]
    duration: float
    # Which URI is the EXT-X-MAP init segment (None: no init segment).
    map_index: int | None = None
    # Per-folder values derived from the URIs (storage names, their encodings), kept
    # with the playlist so each viewer's request only signs.
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def derived(self, key: tuple, make: Callable[[], object]):
        value = self.memo.get(key)
        if value is None:
            value = self.memo[key] = make()
        return value


def parse_media_playlist(text: str) -> StoredPlaylist:
    parts: list[str] = []
    uris: list[str] = []
    starts: list[float] = []
    literal: list[str] = []
    elapsed, duration_next, map_index = 0.0, 0.0, None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MAP:"):
            uri = attribute_list(line[len("#EXT-X-MAP:") :])["URI"]
            before, after = line.split(f'URI="{uri}"', 1)
            parts.append("".join([*literal, before, 'URI="']))
            literal = ['"', after, "\n"]
            map_index = len(uris)
            uris.append(uri)
            starts.append(0.0)
        elif line and not line.startswith("#"):
            parts.append("".join(literal))
            literal = ["\n"]
            uris.append(line)
            starts.append(elapsed)
            elapsed += duration_next
            duration_next = 0.0
        else:
            if line.startswith("#EXTINF:"):
                duration_next = float(line[len("#EXTINF:") :].split(",", 1)[0])
            literal += [line, "\n"]
    parts.append("".join(literal))
    if map_index is not None:
        starts[map_index] = elapsed
    return StoredPlaylist(
        parts=tuple(parts),
        uris=tuple(uris),
        starts=tuple(starts),
        duration=elapsed,
        map_index=map_index,
    )


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, StoredPlaylist] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> StoredPlaylist | None:
        with self.lock:
            item = self.items.get(key)
            if item is not None:
                self.items.move_to_end(key)
            return item

    def put(self, key: str, item: StoredPlaylist) -> None:
        with self.lock:
            self.items[key] = item
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_stored = _LRU(512)


def stored_playlist(storage: Storage, name: str) -> StoredPlaylist:
    """The parsed playlist at `name`, read from storage once per process.

    Safe to keep: every transcode writes under a new folder, so a name's content never
    changes (a re-transcode gives the video a new hls_prefix).
    """
    playlist = _stored.get(name)
    if playlist is None:
        with storage.open(name, "rb") as handle:
            playlist = parse_media_playlist(handle.read().decode())
        _stored.put(name, playlist)
    return playlist


# --- Signers -------------------------------------------------------------------------------


def _segment_url_prefix() -> str:
    return reverse("media:video_segment", kwargs={"token": "T"})[: -len("T/")]


def _local_encoded(playlist: StoredPlaylist, folder: str) -> list[tuple[bytes, str]]:
    return playlist.derived(
        ("local", folder),
        lambda: [
            (b"seg\0" + f"{folder}/{uri}".encode() + b"\0", _b64(f"{folder}/{uri}".encode()))
            for uri in playlist.uris
        ],
    )


def variant_mask(playlist: StoredPlaylist, codeword: str) -> list[bool]:
    """Per URI of `playlist`: True where this codeword plays the B variant. Media segment
    i (the init segment excluded, it is shared) takes bit i mod len(codeword)."""
    ordinals = playlist.derived(("ordinals",), lambda: _segment_ordinals(playlist))
    size = len(codeword)
    return [o is not None and codeword[o % size] == "1" for o in ordinals]


def _segment_ordinals(playlist: StoredPlaylist) -> list[int | None]:
    ordinals: list[int | None] = []
    count = 0
    for index in range(len(playlist.uris)):
        if index == playlist.map_index:
            ordinals.append(None)
        else:
            ordinals.append(count)
            count += 1
    return ordinals


def _pick(a: list, b: list, mask: list[bool] | None) -> list:
    if mask is None:
        return a
    return [second if chosen else first for first, second, chosen in zip(a, b, mask, strict=True)]


def local_segment_urls(
    playlist: StoredPlaylist,
    folder: str,
    lifetimes: list[int],
    user_id: int | None,
    now: int,
    *,
    b_folder: str | None = None,
    mask: list[bool] | None = None,
) -> list[str]:
    """Our own signed URL for each URI of `playlist` (stored under `folder`; the URIs
    `mask` selects from `b_folder` instead)."""
    encoded = _local_encoded(playlist, folder)
    if b_folder is not None and mask is not None:
        encoded = _pick(encoded, _local_encoded(playlist, b_folder), mask)
    prefix = _segment_url_prefix()
    key = _signing_keys()[0]
    user = _user_part(user_id) + b"\0"
    urls = []
    for (message, name64), lifetime in zip(encoded, lifetimes, strict=True):
        exp = f"{now + lifetime:x}"
        mac = _b64(hmac.digest(key, message + user + exp.encode(), "sha256")[:SEGMENT_MAC_BYTES])
        urls.append(f"{prefix}{name64}.{exp}.{mac}/")
    return urls


class S3Presigner:
    """SigV4 query-string presigning for many objects of one S3Storage, fast.

    boto3 signs the first object; the signing key, scope and URL shape are taken from
    that URL, and the signature for it is recomputed here. Only if the two agree are the
    remaining URLs signed here; otherwise (a configuration this does not understand:
    no static keys, a CloudFront domain, another signature version) every URL comes
    from boto3, as storage.url() makes it.
    """

    def __init__(self, storage, first_name: str, first_expires_in: int) -> None:
        self.storage = storage
        first_expires_in = min(first_expires_in, S3_MAX_EXPIRES)
        self.first_name = first_name
        self.first_url = storage.url(first_name, expire=first_expires_in)
        self.fast = self._learn(first_name, first_expires_in)

    def object_path(self, name: str) -> str:
        """The URL path of the object behind a storage name, after the bucket part."""
        location = (self.storage.location or "").strip("/")
        key = f"{location}/{name}" if location else name
        return quote(key, safe="/~")

    def _learn(self, name: str, expires_in: int) -> bool:
        secret = getattr(self.storage, "secret_key", None)
        parts = urlsplit(self.first_url)
        params = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
        object_path = self.object_path(name)
        if (
            not secret
            or params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256"
            or params.get("X-Amz-SignedHeaders") != "host"
            or params.get("X-Amz-Expires") != str(expires_in)
            or not parts.path.endswith(object_path)
        ):
            return False
        scope = params["X-Amz-Credential"].replace("%2F", "/").split("/", 1)[1]
        day, region, service, _terminal = scope.split("/")
        key = hmac.digest(("AWS4" + secret).encode(), day.encode(), "sha256")
        for step in (region, service, "aws4_request"):
            key = hmac.digest(key, step.encode(), "sha256")
        self.key = key
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host = parts.netloc
        self.path_prefix = parts.path[: -len(object_path)]
        self.amz_date = params["X-Amz-Date"]
        self.scope = scope
        # Canonical query: every parameter but the signature, sorted (boto3's order
        # already), with X-Amz-Expires as the one that varies.
        pairs = [(k, v) for k, v in sorted(params.items()) if k not in ("X-Amz-Signature",)]
        self.before_expires = "&".join(f"{k}={v}" for k, v in pairs if k < "X-Amz-Expires")
        self.after_expires = "&".join(f"{k}={v}" for k, v in pairs if k > "X-Amz-Expires")
        return self._sign(name, expires_in) == self.first_url

    def _sign(self, name: str, expires_in: int) -> str:
        return self.sign_path(self.object_path(name), expires_in)

    def sign_path(self, object_path: str, expires_in: int) -> str:
        path = self.path_prefix + object_path
        query = f"{self.before_expires}&X-Amz-Expires={expires_in}"
        if self.after_expires:
            query += "&" + self.after_expires
        canonical = f"GET\n{path}\n{query}\nhost:{self.host}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{self.amz_date}\n{self.scope}\n"
            + hashlib.sha256(canonical.encode()).hexdigest()
        )
        signature = hmac.new(self.key, to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{self.origin}{path}?{query}&X-Amz-Signature={signature}"

    def __call__(self, name: str, expires_in: int) -> str:
        expires_in = min(expires_in, S3_MAX_EXPIRES)
        if self.fast:
            return self._sign(name, expires_in)
        return self.storage.url(name, expire=expires_in)


# --- Per-viewer playlists -------------------------------------------------------------------


def master_for_viewer(*, video, user_id: int | None, now: int | None = None) -> str:
    """The master playlist with each rendition URI carrying this viewer's token.

    Built from Video.renditions alone (no storage read). The rendition token lives for
    the whole video plus the TTL: a player loads another rendition's playlist only when
    it switches quality, possibly near the end; the token is useless to anyone else.
    """
    now = int(time.time()) if now is None else now
    token = rendition_token(
        video_uid=str(video.uid),
        user_id=user_id,
        expires=now + url_ttl() + math.ceil(video.duration_seconds or 0),
    )

    def uri(rendition: dict) -> str:
        path = reverse(
            "media:video_rendition", kwargs={"uid": video.uid, "rendition": rendition["name"]}
        )
        return f"{path}?t={token}"

    return master_playlist(video.renditions, uri)


def rendition_for_viewer(
    *,
    storage: Storage,
    video,
    rendition: dict,
    user_id: int | None,
    now: int | None = None,
    codeword: str | None = None,
) -> str:
    """The stored rendition playlist with every segment URI signed for this viewer.

    With `codeword` (a forensically watermarked video, media/watermark/), each media
    segment comes from the A or the B variant as the codeword says; the init segment is
    A's (B's is byte-identical). Signing cost is the same: one signature per URI.
    """
    now = int(time.time()) if now is None else now
    folder = f"{video.hls_prefix}/{rendition['name']}"
    playlist = stored_playlist(storage, f"{video.hls_prefix}/{rendition['playlist']}")
    ttl = url_ttl()
    if not playlist.uris:
        return "".join(playlist.parts)
    b_folder, mask = None, None
    if codeword:
        b_folder = f"{video.watermark['prefix']}/{rendition['name']}"
        mask = variant_mask(playlist, codeword)
    names = playlist.derived(("names", folder), lambda: [f"{folder}/{u}" for u in playlist.uris])
    lifetimes = playlist.derived(
        ("lifetimes", ttl), lambda: [ttl + math.ceil(start) for start in playlist.starts]
    )
    if not is_s3(storage):
        urls = local_segment_urls(
            playlist, folder, lifetimes, user_id, now, b_folder=b_folder, mask=mask
        )
    else:
        if b_folder is not None:
            b_names = playlist.derived(
                ("names", b_folder), lambda: [f"{b_folder}/{u}" for u in playlist.uris]
            )
            names = _pick(names, b_names, mask)
        presigner = S3Presigner(storage, names[0], lifetimes[0])
        if presigner.fast:

            def object_paths(of_folder: str) -> list[str]:
                return playlist.derived(
                    ("s3", of_folder, storage.location),
                    lambda: [presigner.object_path(f"{of_folder}/{u}") for u in playlist.uris],
                )

            paths = object_paths(folder)
            if b_folder is not None:
                paths = _pick(paths, object_paths(b_folder), mask)
            urls = [
                presigner.sign_path(path, life) for path, life in zip(paths, lifetimes, strict=True)
            ]
        else:
            urls = [presigner(name, life) for name, life in zip(names, lifetimes, strict=True)]
    out = [playlist.parts[0]]
    for url, text in zip(urls, playlist.parts[1:], strict=True):
        out.append(url)
        out.append(text)
    return "".join(out)
