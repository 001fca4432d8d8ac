"""The course's forensic-watermark switch, carried out on its videos.

The mark is a property of a video, not of a course: a video has one HLS output, one B
variant and one ledger, and its playlists are asked for by video, whatever lesson plays
it. So the course switch drives media's per-video switch (media.watermark.services):

- a video played by a live lesson of a live course with the switch on is watermarked;
- a video played by live lessons, none of them in such a course, is not;
- a video no live lesson plays (a webinar replay, an unused upload) keeps its own switch.

The rule is applied, when a course or a lesson is published, to the videos of that
course's live lessons; it is a function of the published state only, so publishing
again changes nothing and two publishes at once flip a video once. A video shared with
another course stays watermarked while any of its courses has the switch on.
"""

from django.db import transaction

from media.watermark.services import video_watermarks_set

from .models import CoursePage, LessonPage


def _watermarked_course_paths() -> list[str]:
    return list(
        CoursePage.objects.live().filter(forensic_watermark=True).values_list("path", flat=True)
    )


@transaction.atomic
def course_videos_watermark_sync(*, course: CoursePage) -> list[int]:
    """Apply the course switch to the videos of the course's live lessons; returns the ids
    of the videos whose switch changed (their B variant is queued on commit)."""
    video_ids = set(
        LessonPage.objects.live()
        .descendant_of(course)
        .exclude(video=None)
        .values_list("video_id", flat=True)
    )
    if not video_ids:
        return []
    marked_paths = _watermarked_course_paths()
    wanted = {
        video_id
        for path, video_id in LessonPage.objects.live()
        .filter(video_id__in=video_ids)
        .values_list("path", "video_id")
        if any(path.startswith(course_path) for course_path in marked_paths)
    }
    return video_watermarks_set(on=wanted, off=video_ids - wanted)


def lesson_video_watermark_sync(*, lesson: LessonPage) -> list[int]:
    course = CoursePage.objects.ancestor_of(lesson).first()
    if course is None or not lesson.video_id:
        return []
    return course_videos_watermark_sync(course=course)
