"""Admin wiring: every new or copied webinar gets its product; webinars get a
Registrations view (the creator's numbers)."""

from django.urls import path
from django.utils.translation import gettext_lazy as _
from wagtail import hooks
from wagtail.admin.ui.menus.pages import PageMenuItem

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
    for webinar in WebinarPage.objects.descendant_of(new_page, inclusive=True).filter(
        product__isnull=True
    ):
        services.webinar_product_ensure(page=webinar)


@hooks.register("register_admin_urls")
def webinar_admin_urls():
    return [
        path(
            "webinars/<int:page_id>/registrations/",
            WebinarRegistrationsView.as_view(),
            name="webinars_registrations",
        )
    ]


class RegistrationsButton(PageMenuItem):
    label = _("Registrations")
    icon_name = "group"
    url_name = "webinars_registrations"

    def is_shown(self, user):
        return issubclass(self.page.specific_class or type(None), WebinarPage) and (
            self.page.permissions_for_user(user).can_edit()
        )


@hooks.register("register_page_header_buttons")
def webinar_registrations_header_button(page, user, view_name, next_url=None):
    yield RegistrationsButton(page=page, priority=12)


@hooks.register("register_page_listing_more_buttons")
def webinar_registrations_listing_button(page, user, next_url=None):
    yield RegistrationsButton(page=page, priority=15)
