"""Courses as a page tree, Catalog → Course → Module → Lesson, plus lesson downloads and
each learner's progress.

Who may see a lesson is decided in ``courses.selectors.lesson_access``; the page classes
here only route a request to a rendering of that decision. A course grants nothing by
itself: access is an entitlement to its ``product`` (payments), the one row every
protected view checks.
"""

import uuid
from http import HTTPMethod
from pathlib import PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _
from modelcluster.fields import ParentalKey
from wagtail.admin.forms import WagtailAdminPageForm
from wagtail.admin.panels import FieldPanel, FieldRowPanel, InlinePanel, MultiFieldPanel
from wagtail.fields import RichTextField, StreamField
from wagtail.models import Orderable, Page
from wagtail.search import index

from media.storage import protected_field_storage

from .blocks import LessonBodyBlocks
from .forms import LessonPageForm

# Learners read these pages; the forms on them post to /learn/ URLs.
READ_ONLY = [HTTPMethod.GET, HTTPMethod.HEAD, HTTPMethod.OPTIONS]
DESCRIPTION_FEATURES = ["h2", "h3", "bold", "italic", "link", "ol", "ul"]
INTRO_FEATURES = ["bold", "italic", "link", "ol", "ul"]


class CourseCatalogPage(Page):
    """Lists the live courses under it, each with its price."""

    intro = RichTextField(blank=True, features=INTRO_FEATURES)

    content_panels = [*Page.content_panels, FieldPanel("intro")]
    allowed_http_methods = READ_ONLY
    parent_page_types = ["core.HomePage"]
    subpage_types = ["courses.CoursePage"]
    template = "courses/course_catalog_page.html"

    class Meta:
        verbose_name = _("course catalog")

    def get_context(self, request, *args, **kwargs):
        from .selectors import catalog_entries

        context = super().get_context(request, *args, **kwargs)
        context["entries"] = catalog_entries(catalog=self, user=request.user)
        return context


class CoursePageForm(WagtailAdminPageForm):
    def clean(self):
        cleaned_data = super().clean()
        if self.instance.product_id and not cleaned_data.get("product"):
            # Emptying the field would lock every buyer out and mint a new product on
            # save; choosing another product is the way to move a course.
            cleaned_data["product"] = self.instance.product
        return cleaned_data


class CoursePage(Page):
    subtitle = models.CharField(max_length=255, blank=True)
    description = RichTextField(blank=True, features=DESCRIPTION_FEATURES)
    cover_image = models.ForeignKey(
        "wagtailimages.Image",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("Shown in the catalog and on the course page (16:9 works best)."),
    )
    language = models.CharField(
        max_length=10,
        blank=True,
        choices=settings.LANGUAGES,
        help_text=_(
            "The language the course is taught in. Its pages are laid out for that language "
            "(right to left for Persian and Arabic). Empty: the visitor's language."
        ),
    )
    # What buyers are entitled to. PROTECT: deleting it would silently lock out everyone
    # who paid. Left empty in the editor, one is created when the course is first saved
    # (courses.services.course_product_ensure, from a Wagtail hook).
    product = models.OneToOneField(
        "payments.Product",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="course_page",
        limit_choices_to={"kind": "course"},
        help_text=_("Leave empty to create one for this course when you save it."),
    )
    offer = models.ForeignKey(
        "payments.Offer",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("The offer the buy button leads to. Without one there is no buy button."),
    )
    # Drives media's per-video switch for the videos of this course's live lessons when
    # the course or a lesson is published (courses/watermark.py).
    forensic_watermark = models.BooleanField(
        _("Forensic watermark on this course's videos"),
        default=False,
        help_text=_(
            "Every learner streams a unique, invisible pattern and sees their email moving "
            "over the picture, so a leaked recording can be traced to the account it came "
            "from. Publishing the course with this on adds the watermark to every lesson "
            "video, and to videos added later, in the background (progress under Videos); "
            "a video pauses for learners until its watermark is ready. Off: playlists are "
            "unmarked again."
        ),
    )

    content_panels = [
        *Page.content_panels,
        FieldPanel("subtitle"),
        FieldPanel("cover_image"),
        FieldPanel("description"),
        FieldPanel("language"),
    ]
    settings_panels = [
        MultiFieldPanel(
            [FieldPanel("product"), FieldPanel("offer")], heading=_("Selling this course")
        ),
        MultiFieldPanel([FieldPanel("forensic_watermark")], heading=_("Protecting the videos")),
        *Page.settings_panels,
    ]
    search_fields = [
        *Page.search_fields,
        index.SearchField("subtitle"),
        index.SearchField("description"),
    ]
    base_form_class = CoursePageForm
    # A copied course gets a product of its own (after_copy_page hook): one product is
    # one course, and the copy's buyers are not the original's.
    exclude_fields_in_copy = ["product"]
    allowed_http_methods = READ_ONLY
    parent_page_types = ["courses.CourseCatalogPage"]
    subpage_types = ["courses.ModulePage"]
    template = "courses/course_page.html"

    class Meta:
        verbose_name = _("course")

    def get_context(self, request, *args, **kwargs):
        from .selectors import course_outline, offer_price

        context = super().get_context(request, *args, **kwargs)
        context["course"] = self
        context["outline"] = course_outline(course=self, user=request.user)
        context["price"] = offer_price(self.offer)
        return context

    def serve(self, request, *args, **kwargs):
        from .views import course_page_serve

        return course_page_serve(request, self, *args, **kwargs)


class ModulePage(Page):
    """A section of a course. Drip: its lessons open a number of days after the buyer's
    access started, or on a fixed date (in the site's time zone)."""

    intro = RichTextField(blank=True, features=INTRO_FEATURES)
    release_after_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text=_("Opens this many days after the buyer got access. Empty: straight away."),
    )
    release_on = models.DateField(
        null=True,
        blank=True,
        help_text=_("Or opens for everyone on this date (midnight, the site's time zone)."),
    )

    content_panels = [
        *Page.content_panels,
        FieldPanel("intro"),
        MultiFieldPanel(
            [FieldRowPanel([FieldPanel("release_after_days"), FieldPanel("release_on")])],
            heading=_("Release (drip)"),
        ),
    ]
    allowed_http_methods = READ_ONLY
    parent_page_types = ["courses.CoursePage"]
    subpage_types = ["courses.LessonPage"]
    template = "courses/module_page.html"

    class Meta:
        verbose_name = _("course module")

    def clean(self):
        super().clean()
        if self.release_after_days is not None and self.release_on is not None:
            raise ValidationError(
                _("Choose either a number of days after purchase or a date, not both.")
            )

    def get_context(self, request, *args, **kwargs):
        from .selectors import course_of, course_outline, offer_price

        context = super().get_context(request, *args, **kwargs)
        course = course_of(self)
        context["course"] = course
        context["outline"] = course_outline(course=course, user=request.user) if course else None
        context["price"] = offer_price(course.offer) if course else None
        return context

    def serve(self, request, *args, **kwargs):
        from .views import course_page_serve

        return course_page_serve(request, self, *args, **kwargs)


class LessonPage(Page):
    is_free_preview = models.BooleanField(
        default=False,
        verbose_name=_("free preview"),
        help_text=_("Anyone can watch and read this lesson, without buying or signing in."),
    )
    body = StreamField(LessonBodyBlocks(), blank=True, use_json_field=True)
    # Played by the media app's player (courses/includes/lesson_video.html is the seam).
    video = models.ForeignKey(
        "lodestone_media.Video",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    content_panels = [
        *Page.content_panels,
        FieldPanel("is_free_preview"),
        FieldPanel("video"),
        FieldPanel("body"),
        InlinePanel("downloads", heading=_("Downloads"), label=_("Download")),
    ]
    search_fields = [*Page.search_fields, index.SearchField("body")]
    base_form_class = LessonPageForm
    # Download ids are unique: a copied lesson starts without downloads rather than
    # sharing the original's links (and failing on their uniqueness).
    exclude_fields_in_copy = ["downloads"]
    allowed_http_methods = READ_ONLY
    parent_page_types = ["courses.ModulePage"]
    subpage_types = []
    template = "courses/lesson_page.html"

    class Meta:
        verbose_name = _("lesson")

    def get_context(self, request, *args, **kwargs):
        from .selectors import lesson_view

        context = super().get_context(request, *args, **kwargs)
        context.update(lesson_view(lesson=self, user=request.user))
        return context

    def serve(self, request, *args, **kwargs):
        from .views import lesson_page_serve

        return lesson_page_serve(request, self, *args, **kwargs)


class LessonDownload(Orderable):
    """A file that comes with a lesson: stored privately, handed out by expiring links to
    whoever may see the lesson. Named in URLs by ``uuid``, never by its integer id."""

    class Kind(models.TextChoices):
        PDF = "pdf", _("PDF")
        EPUB = "epub", _("EPUB e-book")
        ZIP = "zip", _("ZIP archive")
        OTHER = "other", _("Other file")

    lesson = ParentalKey(LessonPage, on_delete=models.CASCADE, related_name="downloads")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    title = models.CharField(max_length=200)
    file = models.FileField(
        storage=protected_field_storage,
        upload_to="courses/downloads/%Y/%m/",
        max_length=500,
        help_text=_("Stored privately; buyers get a link that expires after a few minutes."),
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.PDF)

    panels = [FieldPanel("title"), FieldPanel("file"), FieldPanel("kind")]

    class Meta(Orderable.Meta):
        verbose_name = _("lesson download")

    def __str__(self) -> str:
        return self.title

    @property
    def filename(self) -> str:
        """What the buyer's browser saves it as: the title, with the file's extension."""
        suffix = PurePosixPath(self.file.name or "").suffix.lower()
        stem = slugify(self.title, allow_unicode=True) or "download"
        return f"{stem[:120]}{suffix}"


class LessonProgress(models.Model):
    """Where a learner is in a lesson, and whether they finished it. One row per learner
    and lesson (a database constraint); writes are upserts, so repeats are harmless."""

    wagtail_reference_index_ignore = True

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="lesson_progress"
    )
    lesson = models.ForeignKey(LessonPage, on_delete=models.CASCADE, related_name="progress")
    position_seconds = models.PositiveIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "lesson"], name="courses_progress_user_lesson_unique"
            )
        ]
        verbose_name = _("lesson progress")
        verbose_name_plural = _("lesson progress")

    def __str__(self) -> str:
        state = "done" if self.completed_at else f"{self.position_seconds}s"
        return f"{self.user_id} · lesson {self.lesson_id}: {state}"
