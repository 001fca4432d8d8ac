"""Writes: a course's product, a learner's progress, and the links that hand out files."""

import math

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.text import slugify

from payments.models import Product

from . import exceptions
from .models import CoursePage, LessonDownload, LessonPage, LessonProgress
from .selectors import course_of, lesson_access

# A position beyond this is a client bug, not a very long lesson.
MAX_POSITION_SECONDS = 24 * 3600


def _product_slug_candidates(course: CoursePage):
    base = slugify(f"course-{course.slug}")[:90].strip("-")
    if base == "course":  # a slug in a script slugify drops (Persian, Arabic)
        base = f"course-{course.pk}"
    yield base
    for number in range(2, 20):
        yield f"{base}-{number}"
    yield f"{base}-{get_random_string(8).lower()}"


@transaction.atomic
def course_product_ensure(*, course: CoursePage) -> Product:
    """The product buyers of ``course`` are entitled to, created on first need.

    Called by the Wagtail hooks after a course is created or copied in the admin. The
    product is also written into the course's revisions: the editor's next save starts
    from the latest revision, and publishing one without the product would empty the
    field again.
    """
    locked = CoursePage.objects.select_for_update().get(pk=course.pk)
    if locked.product_id is not None:
        course.product_id = locked.product_id
        return locked.product
    product = None
    for slug in _product_slug_candidates(locked):
        if Product.objects.filter(slug=slug).exists():
            continue
        try:
            with transaction.atomic():
                product = Product.objects.create(
                    kind=Product.Kind.COURSE,
                    title=locked.title[:200],
                    slug=slug,
                    description=locked.subtitle,
                )
            break
        except IntegrityError:  # taken by a concurrent save since we looked
            continue
    if product is None:
        raise exceptions.CourseError("Could not name a product for this course.")
    CoursePage.objects.filter(pk=locked.pk).update(product=product)
    for revision in locked.revisions.all():
        if revision.content.get("product") is None:
            revision.content["product"] = product.pk
            revision.save(update_fields=["content"])
    course.product_id = product.pk
    return product


def course_products_ensure_below(*, page) -> list[Product]:
    """Products for every course at or under ``page`` that has none (a copied tree)."""
    return [
        course_product_ensure(course=course)
        for course in CoursePage.objects.descendant_of(page, inclusive=True).filter(
            product__isnull=True
        )
    ]


def position_parse(value) -> int:
    """Seconds from a client's number (float or string); anything else is refused."""
    try:
        seconds = float(value)
    except (TypeError, ValueError) as exc:
        raise exceptions.InvalidPosition() from exc
    if not math.isfinite(seconds) or seconds < 0:
        raise exceptions.InvalidPosition()
    return min(int(seconds), MAX_POSITION_SECONDS)


def _require_access(user, lesson: LessonPage) -> None:
    if user is None or not user.is_authenticated:
        raise exceptions.SignInRequired(lesson_access(user, lesson))
    access = lesson_access(user, lesson)
    if not access.allowed:
        raise exceptions.LessonLocked(access)


def _touch(*, user, lesson: LessonPage, position_seconds: int | None) -> None:
    """Insert the (user, lesson) row, or update it in the same statement: two tabs saving
    at once cannot collide on the unique constraint."""
    now = timezone.now()
    row = LessonProgress(
        user=user, lesson=lesson, position_seconds=position_seconds or 0, updated_at=now
    )
    LessonProgress.objects.bulk_create(
        [row],
        update_conflicts=True,
        unique_fields=["user", "lesson"],
        update_fields=["updated_at"]
        if position_seconds is None
        else ["position_seconds", "updated_at"],
    )


@transaction.atomic
def lesson_progress_record(*, user, lesson: LessonPage, position_seconds: int) -> LessonProgress:
    """Remember where ``user`` is in ``lesson``'s video. Saving the same position again
    changes nothing but the time."""
    _require_access(user, lesson)
    duration = lesson.video.duration_seconds if lesson.video_id and lesson.video else None
    if duration:
        position_seconds = min(position_seconds, math.ceil(duration))
    _touch(user=user, lesson=lesson, position_seconds=position_seconds)
    return LessonProgress.objects.get(user=user, lesson=lesson)


@transaction.atomic
def lesson_completion_set(*, user, lesson: LessonPage, completed: bool = True) -> LessonProgress:
    """Mark ``lesson`` done (or not done) for ``user``. Marking it done twice keeps the
    first completion time."""
    _require_access(user, lesson)
    _touch(user=user, lesson=lesson, position_seconds=None)
    rows = LessonProgress.objects.filter(user=user, lesson=lesson)
    if completed:
        rows.filter(completed_at__isnull=True).update(completed_at=timezone.now())
    else:
        rows.exclude(completed_at__isnull=True).update(completed_at=None)
    return rows.get()


def lesson_download_deliver(*, user, download: LessonDownload, request):
    """Stream ``download`` to ``user``, stamped with their name and email and recorded in
    media's DownloadDelivery ledger (with the order that gave access, when there is one);
    the caller has checked ``lesson_access`` for its lesson.

    Raises media.exceptions.DeliveryError (limit reached, file unavailable, store down)
    with a message for the buyer.
    """
    from media.downloads import download_deliver
    from payments.selectors import entitlements_for

    course = course_of(download.lesson)
    entitlement = (
        entitlements_for(user).filter(product_id=course.product_id).select_related("order").first()
        if getattr(course, "product_id", None)
        else None
    )
    order = entitlement.order if entitlement and entitlement.order_id else None
    return download_deliver(
        source_name=download.file.name,
        user=user,
        order_reference=str(order.pk) if order else "",
        filename=download.filename,
        request=request,
    )
