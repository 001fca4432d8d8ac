"""Publishing a course or a lesson applies the course's forensic-watermark switch.

Wagtail's page_published fires for every way a page goes live (the editor, scheduled
publishing, bulk actions, the API), so the switch acts "on publish" whichever was used.
Connected in CoursesConfig.ready(); the rule itself is in courses/watermark.py.
"""

from wagtail.signals import page_published

from .models import CoursePage, LessonPage
from .watermark import course_videos_watermark_sync, lesson_video_watermark_sync


def course_published(sender, instance, **kwargs):
    course_videos_watermark_sync(course=instance)


def lesson_published(sender, instance, **kwargs):
    lesson_video_watermark_sync(lesson=instance)


def connect() -> None:
    page_published.connect(
        course_published, sender=CoursePage, dispatch_uid="courses.watermark.course"
    )
    page_published.connect(
        lesson_published, sender=LessonPage, dispatch_uid="courses.watermark.lesson"
    )
