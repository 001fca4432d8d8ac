"""Admin wiring: every new or copied webinar gets its product; webinars get a
Registrations view (the creator's numbers)."""

from django.urls import path
from django.utils.translation import gettext_lazy as _
from wagtail import hooks

from core.admin_reports import page_report_button

from . import services
from .admin_views import WebinarRegistrationsView
from .models import WebinarPage


@hooks.register("after_create_page")
def webinar_product_on_create(request, page):
    if isinstance(page, WebinarPage):
        services.webinar_product_ensure(page=page)


@hooks.register("after_edit_page")
def webinar_product_on_edit(request, page):
    if isinstance(page, WebinarPage) and page.product_id is None:
        services.webinar_product_ensure(page=page)


@hooks.register("after_copy_page")
def webinar_product_on_copy(request, page, new_page):
    services.webinar_products_ensure_below(page=new_page)


@hooks.register("register_admin_urls")
def webinar_admin_urls():
    return [
        path(
            "webinars/<int:page_id>/registrations/",
            WebinarRegistrationsView.as_view(),
            name="webinars_registrations",
        )
    ]


RegistrationsButton = page_report_button(
    page_class=WebinarPage,
    label=_("Registrations"),
    url_name="webinars_registrations",
    hook_prefix="webinar_registrations",
)
