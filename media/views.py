import mimetypes
from pathlib import PurePosixPath
from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse
from django.views.decorators.http import require_safe

from .delivery import protected_link_open
from .exceptions import DeliveryError
from .storage import protected_storage


@require_safe
def protected_file(request, token: str):
    user_id = request.user.pk if request.user.is_authenticated else None
    try:
        name, filename = protected_link_open(token=token, user_id=user_id)
    except DeliveryError as exc:
        return HttpResponse(str(exc), status=403, content_type="text/plain; charset=utf-8")
    storage = protected_storage()
    if not storage.exists(name):
        raise Http404("No such file.")
    filename = filename or PurePosixPath(name).name
    disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if settings.PROTECTED_SERVE_METHOD == "nginx":
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.PROTECTED_ACCEL_PREFIX + quote(name)
    else:
        response = FileResponse(storage.open(name, "rb"), content_type=content_type)
    response["Content-Disposition"] = disposition
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
