"""Who may watch a video: staff always, anyone else when a registered checker says so.

media knows nothing about courses or purchases. The app that does (courses: "is this
video in a lesson of a course the user is entitled to?") registers a checker from its
AppConfig.ready():

    from media.access import register_video_access

    def lesson_video_access(user, video) -> bool: ...

    register_video_access(lesson_video_access)

Every playlist, poster and status request asks `can_view_video` again, so revoking an
entitlement stops a viewer at their next playlist request.
"""

from collections.abc import Callable

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from .models import Video

VideoAccessChecker = Callable[[AbstractBaseUser | AnonymousUser, Video], bool]

video_access_checkers: list[VideoAccessChecker] = []


def register_video_access(checker: VideoAccessChecker) -> VideoAccessChecker:
    """Add a checker (idempotent, so a second `ready()` adds nothing); usable as a decorator."""
    if checker not in video_access_checkers:
        video_access_checkers.append(checker)
    return checker


def unregister_video_access(checker: VideoAccessChecker) -> None:
    if checker in video_access_checkers:
        video_access_checkers.remove(checker)


def can_view_video(user: AbstractBaseUser | AnonymousUser, video: Video) -> bool:
    """True for active staff (creators preview everything); otherwise any checker decides.

    Anonymous users reach the checkers too, so a free preview lesson can allow them.
    An exception in a checker propagates: access fails closed, with an error logged.
    """
    if user.is_authenticated and not user.is_active:
        return False
    if user.is_authenticated and (user.is_staff or user.is_superuser):
        return True
    return any(checker(user, video) for checker in video_access_checkers)
