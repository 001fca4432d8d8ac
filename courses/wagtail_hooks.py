"""Admin wiring: every new or copied course gets its product; courses get a Students view."""

from django.urls import path
from django.utils.translation import gettext_lazy as _
from wagtail import hooks

from core.admin_reports import page_report_button

from . import services
from .admin_views import CourseStudentsView
from .models import CoursePage


@hooks.register("after_create_page")
def course_product_on_create(request, page):
    if isinstance(page, CoursePage):
        services.course_product_ensure(course=page)


@hooks.register("after_edit_page")
def course_product_on_edit(request, page):
    # A course made outside the admin (a script, an import) gets its product here.
    if isinstance(page, CoursePage) and page.product_id is None:
        services.course_product_ensure(course=page)


@hooks.register("after_copy_page")
def course_product_on_copy(request, page, new_page):
    services.course_products_ensure_below(page=new_page)


@hooks.register("register_admin_urls")
def course_admin_urls():
    return [
        path(
            "courses/<int:page_id>/students/",
            CourseStudentsView.as_view(),
            name="courses_students",
        )
    ]


StudentsButton = page_report_button(
    page_class=CoursePage,
    label=_("Students"),
    url_name="courses_students",
    hook_prefix="course_students",
)
