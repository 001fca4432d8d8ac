"""The creator's view of a course's students in the Wagtail admin."""

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.generic import TemplateView
from wagtail.admin.views import generic

from . import selectors
from .models import CoursePage


class CourseStudentsView(generic.WagtailAdminTemplateMixin, TemplateView):
    """Everyone who bought the course, with how far they are. Visible to whoever may edit
    the course page."""

    template_name = "courses/admin/students.html"
    header_icon = "group"

    def dispatch(self, request, *args, **kwargs):
        self.course = get_object_or_404(CoursePage, pk=kwargs["page_id"])
        if not self.course.permissions_for_user(request.user).can_edit():
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_page_title(self):
        return _("Students")

    def get_page_subtitle(self):
        return self.course.title

    def get_breadcrumbs_items(self):
        return [
            *self.breadcrumbs_items,
            {
                "url": reverse("wagtailadmin_pages:edit", args=[self.course.pk]),
                "label": self.course.title,
            },
            {"url": "", "label": _("Students")},
        ]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        rows = selectors.course_students(course=self.course)
        context.update(
            course=self.course,
            rows=rows,
            active_count=sum(1 for row in rows if row["active"]),
            inactive_count=sum(1 for row in rows if not row["active"]),
            finished_count=sum(1 for row in rows if row["total"] and row["percent"] == 100),
        )
        return context
