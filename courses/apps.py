from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CoursesConfig(AppConfig):
    name = "courses"
    verbose_name = _("Courses")

    def ready(self):
        from media.access import register_video_access

        from .selectors import lesson_video_access

        # The media app's player asks this on every playlist request: a lesson's video
        # plays for exactly those who may see the lesson.
        register_video_access(lesson_video_access)

        from .receivers_watermark import connect

        # Publishing a course or a lesson applies the course's forensic-watermark switch.
        connect()
