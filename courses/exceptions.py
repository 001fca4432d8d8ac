"""Course errors; each message is safe to show to the learner as it stands."""

from django.utils.translation import gettext_lazy as _


class CourseError(Exception):
    message = _("Something went wrong. Please try again.")
    status = 400

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message


class LessonLocked(CourseError):
    """The user may not use this lesson now (no purchase, not yet released, signed out)."""

    message = _("This lesson is not open to you.")
    status = 403

    def __init__(self, access, message: str | None = None):
        super().__init__(message)
        self.access = access


class SignInRequired(LessonLocked):
    message = _("Please sign in to keep track of your progress.")


class InvalidPosition(CourseError):
    message = _("The playback position must be a number of seconds.")
