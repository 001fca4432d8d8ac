"""Video playback: per-viewer playlists, signed segments, the poster and the status.

Each view asks media.access.can_view_video on every request (the segment view checks
the segment token instead: it names one file, for the session's user, until it
expires). Every answer is `Cache-Control: private, no-store`: the URLs inside are
personal and short-lived, and no shared cache may keep them.
"""

import uuid
from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_safe

from core.http import client_ip

from . import playlists
from .access import can_view_video
from .exceptions import DeliveryError
from .models import Video
from .services import CONTENT_TYPES
from .storage import is_s3, protected_storage
from .watermark.services import video_delivery_ensure

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


def _private(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _forbidden(message: str = "You do not have access to this video.") -> HttpResponse:
    return _private(HttpResponse(message, status=403, content_type="text/plain; charset=utf-8"))


def _viewer_id(request) -> int | None:
    return request.user.pk if request.user.is_authenticated else None


def _video_for(request, uid: uuid.UUID) -> Video:
    return get_object_or_404(Video, uid=uid)


def _ready_or_404(video: Video) -> None:
    # A watermarked video is not ready until its B variant is: it never streams unmarked.
    if not video.is_playable:
        raise Http404("This video is not ready yet.")


def _codeword(request, video: Video) -> str | None:
    """The viewer's A/B codeword for a marked video (made on first request), else None."""
    if not video.is_marked:
        return None
    delivery = video_delivery_ensure(
        video=video,
        user=request.user,
        ip_address=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )
    return delivery.codeword


@require_safe
def video_master(request, uid: uuid.UUID):
    video = _video_for(request, uid)
    if not can_view_video(request.user, video):
        return _forbidden()
    _ready_or_404(video)
    # The ledger row is written here, at the first playlist a viewer asks for.
    _codeword(request, video)
    body = playlists.master_for_viewer(video=video, user_id=_viewer_id(request))
    return _private(HttpResponse(body, content_type=PLAYLIST_TYPE))


@require_safe
def video_rendition(request, uid: uuid.UUID, rendition: str):
    try:
        playlists.rendition_token_check(
            token=request.GET.get("t", ""), video_uid=str(uid), user_id=_viewer_id(request)
        )
    except DeliveryError as exc:
        return _forbidden(str(exc))
    video = _video_for(request, uid)
    if not can_view_video(request.user, video):
        return _forbidden()
    _ready_or_404(video)
    found = next((r for r in video.renditions if r["name"] == rendition), None)
    if found is None:
        raise Http404("No such rendition.")
    body = playlists.rendition_for_viewer(
        storage=protected_storage(),
        video=video,
        rendition=found,
        user_id=_viewer_id(request),
        codeword=_codeword(request, video),
    )
    return _private(HttpResponse(body, content_type=PLAYLIST_TYPE))


def _serve(name: str, content_type: str) -> HttpResponse:
    """The file itself (demo), or an X-Accel-Redirect for nginx to send it."""
    storage = protected_storage()
    if settings.PROTECTED_SERVE_METHOD == "nginx":
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.PROTECTED_ACCEL_PREFIX + quote(name)
        return _private(response)
    try:
        handle = storage.open(name, "rb")
    except FileNotFoundError as exc:
        raise Http404("No such file.") from exc
    return _private(FileResponse(handle, content_type=content_type))


@require_safe
def video_segment(request, token: str):
    try:
        name = playlists.segment_token_open(token=token, user_id=_viewer_id(request))
    except DeliveryError as exc:
        return _forbidden(str(exc))
    if not name.startswith("videos/"):
        return _forbidden()
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    return _serve(name, CONTENT_TYPES.get(suffix, "application/octet-stream"))


@require_safe
def video_poster(request, uid: uuid.UUID):
    video = _video_for(request, uid)
    if not can_view_video(request.user, video):
        return _forbidden()
    if not video.poster:
        raise Http404("This video has no poster yet.")
    storage = protected_storage()
    if is_s3(storage):
        url = storage.url(video.poster, expire=playlists.url_ttl())
        return _private(HttpResponseRedirect(url))
    return _serve(video.poster, "image/jpeg")


@require_safe
def video_status(request, uid: uuid.UUID):
    """For the player while a video is processing; the reason of a failure is for staff."""
    video = _video_for(request, uid)
    if not can_view_video(request.user, video):
        return _forbidden()
    staff = request.user.is_staff
    data = {
        "status": video.playback_status,
        "status_label": video.playback_status_label if staff else video.viewer_status_label,
        "progress": video.playback_progress,
        "ready": video.is_playable,
    }
    if staff and video.playback_error:
        data["error"] = video.playback_error
    return _private(JsonResponse(data))
