"""Reads: who may see a lesson, and what a learner's course looks like.

``lesson_access(user, lesson)`` is the rule every lesson page, download and progress
write goes through. The course outline applies the same rule (``_decide``) to every
lesson at once, so a lock shown in the outline and a lesson refused always agree.
"""

import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from django.conf import settings
from django.utils import timezone

from payments.models import Entitlement, Offer, Price
from payments.selectors import has_access

from .models import CourseCatalogPage, CoursePage, LessonPage, LessonProgress, ModulePage


class Reason(StrEnum):
    STAFF_PREVIEW = "staff_preview"
    FREE_PREVIEW = "free_preview"
    ENTITLED = "entitled"
    LOGIN_REQUIRED = "login_required"
    NOT_ENTITLED = "not_entitled"
    NOT_RELEASED = "not_released"


@dataclass(frozen=True)
class Access:
    allowed: bool
    reason: str
    # When a lesson not yet released opens for this user (aware, UTC).
    opens_at: datetime | None = None


def _is_staff(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def site_time_zone() -> zoneinfo.ZoneInfo:
    """The creator's time zone (brand settings), in which fixed release dates begin."""
    from core.services import brand_settings

    name = brand_settings().default_time_zone or settings.TIME_ZONE
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def module_opens_at(module: ModulePage, *, access_started_at: datetime | None) -> datetime | None:
    """When ``module`` opens for a buyer whose access started then; None: it is not dripped.

    Days count from the moment access started (a purchase at 15:00 opens "after 7 days"
    at 15:00 a week later); a fixed date opens at midnight in the site's time zone.
    """
    moments = []
    if module.release_after_days:
        start = access_started_at or timezone.now()
        moments.append(start + timedelta(days=module.release_after_days))
    if module.release_on is not None:
        moments.append(release_date_start(module.release_on))
    return max(moments) if moments else None


def release_date_start(day: date) -> datetime:
    """The moment a fixed release date begins: midnight in the site's time zone."""
    return datetime.combine(day, time.min, tzinfo=site_time_zone()).astimezone(
        zoneinfo.ZoneInfo("UTC")
    )


def _decide(
    *,
    user,
    is_free_preview: bool,
    product_id: int | None,
    entitled: bool,
    opens_at: datetime | None,
    now: datetime,
) -> Access:
    """The rule, in one place."""
    if _is_staff(user):
        return Access(True, Reason.STAFF_PREVIEW)
    if is_free_preview:
        return Access(True, Reason.FREE_PREVIEW)
    if user is None or not user.is_authenticated:
        return Access(False, Reason.LOGIN_REQUIRED)
    if product_id is None or not entitled:
        return Access(False, Reason.NOT_ENTITLED)
    if opens_at is not None and opens_at > now:
        return Access(False, Reason.NOT_RELEASED, opens_at)
    return Access(True, Reason.ENTITLED)


def course_of(page) -> CoursePage | None:
    return CoursePage.objects.ancestor_of(page, inclusive=True).first()


def module_of(lesson: LessonPage) -> ModulePage | None:
    return ModulePage.objects.ancestor_of(lesson).first()


def access_started_at(user, product_id: int | None) -> datetime | None:
    """When ``user``'s active entitlement to the product started; None without one."""
    if product_id is None or user is None or not user.is_authenticated:
        return None
    return (
        Entitlement.objects.active()
        .filter(user_id=user.pk, product_id=product_id)
        .values_list("starts_at", flat=True)
        .first()
    )


def lesson_access(user, lesson: LessonPage) -> Access:
    """May ``user`` see ``lesson`` now? Staff always (preview), anyone for a free preview,
    otherwise only a buyer of the course (``payments.selectors.has_access``) once the
    lesson's module is released for them."""
    if _is_staff(user) or lesson.is_free_preview or not user or not user.is_authenticated:
        # Decided without touching the database.
        return _decide(
            user=user,
            is_free_preview=lesson.is_free_preview,
            product_id=None,
            entitled=False,
            opens_at=None,
            now=timezone.now(),
        )
    course = course_of(lesson)
    product_id = course.product_id if course else None
    # One query answers both "entitled?" (payments.selectors.has_access: an active
    # entitlement) and "since when?" (what a drip-fed module opens from).
    started_at = access_started_at(user, product_id)
    entitled = started_at is not None
    opens_at = None
    if entitled:
        module = module_of(lesson)
        if module is not None:
            opens_at = module_opens_at(module, access_started_at=started_at)
    return _decide(
        user=user,
        is_free_preview=False,
        product_id=product_id,
        entitled=entitled,
        opens_at=opens_at,
        now=timezone.now(),
    )


# --- The learner's view of a course ------------------------------------------------------


@dataclass
class LessonEntry:
    lesson: LessonPage
    access: Access
    completed: bool = False
    number: int = 0

    @property
    def locked(self) -> bool:
        return not self.access.allowed


@dataclass
class ModuleEntry:
    module: ModulePage
    number: int
    # For a buyer: when the module opens for them; None when it is open.
    opens_at: datetime | None
    lessons: list[LessonEntry] = field(default_factory=list)

    @property
    def completed_count(self) -> int:
        return sum(1 for entry in self.lessons if entry.completed)

    @property
    def released(self) -> bool:
        return self.opens_at is None

    @property
    def fixed_opens_at(self) -> datetime | None:
        """The module's fixed release date as a moment, while it is still ahead."""
        if self.module.release_on is None:
            return None
        moment = release_date_start(self.module.release_on)
        return moment if moment > timezone.now() else None


@dataclass
class CourseOutline:
    course: CoursePage
    modules: list[ModuleEntry]
    entitled: bool
    is_staff: bool
    total: int
    completed: int
    # Release dates are shown in this zone (the browser's own, once lesson.js runs).
    time_zone: zoneinfo.ZoneInfo

    @property
    def percent(self) -> int:
        return round(100 * self.completed / self.total) if self.total else 0

    @property
    def lessons(self) -> list[LessonEntry]:
        return [entry for module in self.modules for entry in module.lessons]

    @property
    def resume(self) -> LessonEntry | None:
        """Where "continue" leads: the first open lesson not yet completed."""
        open_lessons = [entry for entry in self.lessons if not entry.locked]
        for entry in open_lessons:
            if not entry.completed:
                return entry
        return open_lessons[0] if open_lessons else None

    @property
    def first_free_preview(self) -> LessonEntry | None:
        return next((e for e in self.lessons if e.lesson.is_free_preview), None)

    def entry_for(self, lesson: LessonPage) -> LessonEntry | None:
        return next((e for e in self.lessons if e.lesson.pk == lesson.pk), None)

    def neighbours(self, lesson: LessonPage) -> tuple[LessonEntry | None, LessonEntry | None]:
        lessons = self.lessons
        for index, entry in enumerate(lessons):
            if entry.lesson.pk == lesson.pk:
                before = lessons[index - 1] if index > 0 else None
                after = lessons[index + 1] if index + 1 < len(lessons) else None
                return before, after
        return None, None


def completed_lesson_ids(user, lesson_ids) -> set[int]:
    if user is None or not user.is_authenticated:
        return set()
    return set(
        LessonProgress.objects.filter(
            user_id=user.pk, lesson_id__in=list(lesson_ids), completed_at__isnull=False
        ).values_list("lesson_id", flat=True)
    )


def course_outline(*, course: CoursePage, user) -> CourseOutline:
    """Modules and live lessons in tree order, each with this user's access and completion;
    four queries whatever the course's size."""
    modules = list(ModulePage.objects.child_of(course).live().order_by("path"))
    lessons = list(LessonPage.objects.descendant_of(course).live().order_by("path"))
    entitled = course.product_id is not None and has_access(user, course.product_id)
    started_at = access_started_at(user, course.product_id) if entitled else None
    completed = completed_lesson_ids(user, [lesson.pk for lesson in lessons])
    now = timezone.now()

    by_parent: dict[str, list[LessonPage]] = {}
    for lesson in lessons:
        by_parent.setdefault(lesson.path[: -LessonPage.steplen], []).append(lesson)

    entries: list[ModuleEntry] = []
    number = 0
    for module_number, module in enumerate(modules, start=1):
        opens_at = module_opens_at(module, access_started_at=started_at) if entitled else None
        if opens_at is not None and opens_at <= now:
            opens_at = None
        entry = ModuleEntry(module=module, number=module_number, opens_at=opens_at)
        for lesson in by_parent.get(module.path, []):
            number += 1
            access = _decide(
                user=user,
                is_free_preview=lesson.is_free_preview,
                product_id=course.product_id,
                entitled=entitled,
                opens_at=opens_at,
                now=now,
            )
            entry.lessons.append(
                LessonEntry(
                    lesson=lesson, access=access, completed=lesson.pk in completed, number=number
                )
            )
        entries.append(entry)
    total = sum(len(m.lessons) for m in entries)
    done = sum(m.completed_count for m in entries)
    return CourseOutline(
        course=course,
        modules=entries,
        entitled=entitled,
        is_staff=_is_staff(user),
        total=total,
        completed=done,
        time_zone=site_time_zone(),
    )


def lesson_progress_for(user, lesson: LessonPage) -> LessonProgress | None:
    if user is None or not user.is_authenticated or lesson.pk is None:
        return None
    return LessonProgress.objects.filter(user_id=user.pk, lesson_id=lesson.pk).first()


def lesson_view(*, lesson: LessonPage, user) -> dict:
    """Everything a lesson page shows around the lesson itself."""
    course = course_of(lesson) if lesson.pk else None
    module = module_of(lesson) if lesson.pk else None
    outline = course_outline(course=course, user=user) if course else None
    previous, following = outline.neighbours(lesson) if outline else (None, None)
    progress = lesson_progress_for(user, lesson)
    return {
        "course": course,
        "module": module,
        "outline": outline,
        "current_entry": outline.entry_for(lesson) if outline else None,
        "price": offer_price(course.offer) if course else None,
        "previous_entry": previous,
        "next_entry": following,
        "progress": progress,
        "is_completed": bool(progress and progress.completed_at),
        "downloads": list(lesson.downloads.all()),
        "can_record_progress": bool(user and user.is_authenticated and lesson.pk),
    }


# --- Catalog and prices --------------------------------------------------------------------


def offer_price(offer: Offer | None) -> Price | None:
    """The price a buy button shows: the offer's first active one, if it can be bought."""
    if offer is None or not offer.is_published:
        return None
    return offer.prices.filter(is_active=True).order_by("pk").first()


@dataclass
class CatalogEntry:
    course: CoursePage
    price: Price | None
    lesson_count: int
    owned: bool


def catalog_entries(*, catalog: CourseCatalogPage, user) -> list[CatalogEntry]:
    courses = list(
        CoursePage.objects.child_of(catalog)
        .live()
        .select_related("cover_image", "offer")
        .order_by("path")
    )
    prices: dict[int, Price] = {}
    offer_ids = {c.offer_id for c in courses if c.offer_id and c.offer.is_published}
    for price in Price.objects.filter(offer_id__in=offer_ids, is_active=True).order_by("pk"):
        prices.setdefault(price.offer_id, price)
    owned: set[int] = set()
    if user is not None and user.is_authenticated:
        owned = set(
            Entitlement.objects.active()
            .filter(user_id=user.pk, product_id__in=[c.product_id for c in courses])
            .values_list("product_id", flat=True)
        )
    # Counted as the outline counts them: live lessons in live modules.
    live_modules = set(
        ModulePage.objects.descendant_of(catalog).live().values_list("path", flat=True)
    )
    course_path_length = (catalog.depth + 1) * CoursePage.steplen
    lesson_counts: dict[str, int] = {}
    for path in LessonPage.objects.descendant_of(catalog).live().values_list("path", flat=True):
        if path[: -LessonPage.steplen] in live_modules:
            key = path[:course_path_length]
            lesson_counts[key] = lesson_counts.get(key, 0) + 1
    return [
        CatalogEntry(
            course=course,
            price=prices.get(course.offer_id) if course.offer_id else None,
            lesson_count=lesson_counts.get(course.path, 0),
            owned=course.product_id in owned,
        )
        for course in courses
    ]


def course_students(*, course: CoursePage) -> list[dict]:
    """Everyone who holds (or held) the course's product, with their progress: the
    creator's "Students" view."""
    if course.product_id is None:
        return []
    # The lessons the outline counts, so 2/4 here is 2/4 on the learner's course page.
    lesson_ids = [entry.lesson.pk for entry in course_outline(course=course, user=None).lessons]
    entitlements = (
        Entitlement.objects.filter(product_id=course.product_id)
        .select_related("user")
        .order_by("-starts_at")
    )
    done: dict[int, int] = {}
    last_seen: dict[int, datetime] = {}
    for user_id, completed_at, updated_at in LessonProgress.objects.filter(
        lesson_id__in=lesson_ids, user_id__in=entitlements.values("user_id")
    ).values_list("user_id", "completed_at", "updated_at"):
        if completed_at is not None:
            done[user_id] = done.get(user_id, 0) + 1
        if user_id not in last_seen or updated_at > last_seen[user_id]:
            last_seen[user_id] = updated_at
    now = timezone.now()
    total = len(lesson_ids)
    rows = []
    for ent in entitlements:
        completed = done.get(ent.user_id, 0)
        rows.append(
            {
                "user": ent.user,
                "entitlement": ent,
                "active": ent.is_active(now),
                "completed": completed,
                "total": total,
                "percent": round(100 * completed / total) if total else 0,
                "last_activity": last_seen.get(ent.user_id),
            }
        )
    return rows


def lesson_video_access(user, video) -> bool:
    """media's question "may this user watch this video?", answered for courses: yes when
    the video is in a live lesson the user may see (``lesson_access``). Registered with
    media.access in CoursesConfig.ready(); media itself lets staff through first."""
    return any(
        lesson_access(user, lesson).allowed
        for lesson in LessonPage.objects.live().filter(video_id=video.pk)
    )
