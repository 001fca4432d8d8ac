"""HTTP edges of courses: pages rendered according to ``lesson_access``, downloads,
and the progress endpoints. The rule itself lives in ``courses.selectors``."""

import contextlib
import json

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.utils import translation
from django.utils.cache import patch_cache_control
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST, require_safe

from media.downloads import http_status
from media.exceptions import DeliveryError

from . import exceptions, selectors, services
from .models import CoursePage, LessonDownload, LessonPage

# A progress report is one number; anything bigger is not one of ours.
MAX_PROGRESS_BODY = 4 * 1024


def _private(response: HttpResponse) -> HttpResponse:
    """Never stored by a shared cache or the browser: the page depends on who asks."""
    patch_cache_control(response, private=True, no_store=True)
    return response


def _course_language(course: CoursePage | None):
    """Render a course's pages in the language it is taught in (direction included)."""
    if course is not None and course.language:
        return translation.override(course.language)
    return contextlib.nullcontext()


def _render_page(request, page, *, status: int = 200, **overrides) -> HttpResponse:
    request.is_preview = False
    context = page.get_context(request)
    context.update(overrides)
    response = TemplateResponse(request, page.get_template(request), context, status=status)
    with _course_language(context.get("course")):
        response.render()
    return response


def course_page_serve(request, page, *args, **kwargs) -> HttpResponse:
    """A course or module page: public, but with the visitor's own progress and locks."""
    response = _render_page(request, page)
    return _private(response) if request.user.is_authenticated else response


def lesson_page_serve(request, lesson: LessonPage, *args, **kwargs) -> HttpResponse:
    access = selectors.lesson_access(request.user, lesson)
    if access.allowed:
        return _private(_render_page(request, lesson, access=access))
    return _private(lesson_refused(request, lesson, access))


def lesson_refused(request, lesson: LessonPage, access: selectors.Access) -> HttpResponse:
    """What a visitor sees instead of a lesson they may not open (yet)."""
    if access.reason == selectors.Reason.LOGIN_REQUIRED:
        return redirect_to_login(request.get_full_path())
    course = selectors.course_of(lesson)
    if access.reason == selectors.Reason.NOT_RELEASED:
        with _course_language(course):
            return render(
                request,
                "courses/lesson_not_released.html",
                {
                    "page": lesson,
                    "lesson": lesson,
                    "course": course,
                    "opens_at": access.opens_at,
                    "site_time_zone": selectors.site_time_zone(),
                },
                status=403,
            )
    if course is None:
        raise Http404("This lesson is not part of a course.")
    # Not bought: the course page itself, saying what to do, answered with 403.
    return _render_page(request, course, status=403, locked_lesson=lesson)


# --- Downloads ------------------------------------------------------------------------------


def _message(request, *, title: str, message: str, status: int, course=None) -> HttpResponse:
    response = render(
        request,
        "courses/message.html",
        {"title": title, "message": message, "course": course},
        status=status,
    )
    return _private(response)


# Outside ATOMIC_REQUESTS: media.downloads.download_deliver is its own transaction, with no
# savepoint, and an error page is rendered after it has rolled back.
@transaction.non_atomic_requests
@require_safe
def lesson_download(request, download_uuid):
    """A lesson's file, for whoever may see the lesson, stamped for them as it streams."""
    download = LessonDownload.objects.select_related("lesson").filter(uuid=download_uuid).first()
    if download is None or not (download.lesson.live or request.user.is_staff):
        return _message(
            request,
            title=_("Download not found"),
            message=_("This file is no longer available. It may have been replaced."),
            status=404,
        )
    lesson = download.lesson
    access = selectors.lesson_access(request.user, lesson)
    if not access.allowed:
        if access.reason == selectors.Reason.LOGIN_REQUIRED:
            return _private(redirect_to_login(request.get_full_path()))
        return _message(
            request,
            title=_("This download is for the course's students"),
            message=(
                _("It opens with its lesson.")
                if access.reason == selectors.Reason.NOT_RELEASED
                else _("Buy the course to download the files that come with its lessons.")
            ),
            status=403,
            course=selectors.course_of(lesson),
        )
    try:
        response = services.lesson_download_deliver(
            user=request.user, download=download, request=request
        )
    except DeliveryError as error:
        return _message(
            request,
            title=_("This download is not available right now"),
            message=str(error),
            status=http_status(error),
            course=selectors.course_of(lesson),
        )
    return _private(response)


# --- Progress -------------------------------------------------------------------------------


def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "") or (
        request.content_type == "application/json"
    )


def _payload(request) -> dict:
    if request.content_type == "application/json":
        if len(request.body) > MAX_PROGRESS_BODY:
            raise exceptions.CourseError(_("That request is too large."))
        try:
            data = json.loads(request.body or b"{}")
        except ValueError as exc:
            raise exceptions.CourseError(_("That request is not valid JSON.")) from exc
        if not isinstance(data, dict):
            raise exceptions.CourseError(_("That request is not valid JSON."))
        return data
    return request.POST


def _lesson_or_404(lesson_id: int) -> LessonPage:
    lesson = LessonPage.objects.live().filter(pk=lesson_id).first()
    if lesson is None:
        raise Http404("No such lesson.")
    return lesson


def _truthy(value) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in {"0", "false", "no", "off", ""}


def _json_error(error: exceptions.CourseError) -> JsonResponse:
    return _private(JsonResponse({"ok": False, "error": str(error.message)}, status=error.status))


@require_POST
def progress_save(request, lesson_id: int):
    """Where the learner is in the lesson's video, sent by lesson.js every few seconds."""
    lesson = _lesson_or_404(lesson_id)
    try:
        position = services.position_parse(_payload(request).get("position"))
        progress = services.lesson_progress_record(
            user=request.user, lesson=lesson, position_seconds=position
        )
    except exceptions.CourseError as error:
        return _json_error(error)
    return _private(
        JsonResponse(
            {
                "ok": True,
                "position": progress.position_seconds,
                "completed": progress.completed_at is not None,
            }
        )
    )


def _next_url(request, default: str) -> str:
    candidate = request.POST.get("next", "")
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


@require_POST
def lesson_complete(request, lesson_id: int):
    """Mark as complete (or, with completed=0, not complete): a form post without
    JavaScript, a JSON call with it."""
    lesson = _lesson_or_404(lesson_id)
    as_json = _wants_json(request)
    try:
        completed = _truthy(_payload(request).get("completed", True))
        progress = services.lesson_completion_set(
            user=request.user, lesson=lesson, completed=completed
        )
    except exceptions.SignInRequired as error:
        if as_json:
            return _json_error(error)
        return _private(redirect_to_login(lesson.url))
    except exceptions.LessonLocked as error:
        if as_json:
            return _json_error(error)
        return _message(
            request,
            title=_("This lesson is not open to you"),
            message=_("Buy the course to keep track of your progress in it."),
            status=403,
            course=selectors.course_of(lesson),
        )
    except exceptions.CourseError as error:
        return _json_error(error)

    if as_json:
        course = selectors.course_of(lesson)
        outline = selectors.course_outline(course=course, user=request.user) if course else None
        return _private(
            JsonResponse(
                {
                    "ok": True,
                    "completed": progress.completed_at is not None,
                    "completed_at": progress.completed_at.isoformat()
                    if progress.completed_at
                    else None,
                    "course": {
                        "completed": outline.completed if outline else 0,
                        "total": outline.total if outline else 0,
                        "percent": outline.percent if outline else 0,
                    },
                }
            )
        )
    messages.success(
        request,
        _("Lesson marked as complete.")
        if progress.completed_at
        else _("Lesson marked as not complete."),
    )
    response = HttpResponseRedirect(_next_url(request, lesson.url))
    response.status_code = 303
    return _private(response)
