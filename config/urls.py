from django.conf import settings
from django.urls import include, path
from django.views.i18n import set_language
from wagtail import urls as wagtail_urls
from wagtail.admin import urls as wagtailadmin_urls
from wagtail.documents import urls as wagtaildocs_urls

from core import views as core_views
from core.csrf import same_origin_post

urlpatterns = [
    path("admin/", include(wagtailadmin_urls)),
    path("documents/", include(wagtaildocs_urls)),
    path("accounts/", include("allauth.urls")),
    path("account/", include("accounts.urls")),
    # The language switcher sits on edge-cached pages: checked by Origin, not a CSRF token.
    path("i18n/setlang/", same_origin_post(set_language), name="set_language"),
    path("protected/", include("media.urls")),
    path("f/", include("funnels.urls")),
    path("pay/", include("payments.urls")),
    path("learn/", include("courses.urls")),
    path("webinar/", include("webinars.urls")),
    path("healthz", core_views.healthz, name="healthz"),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

urlpatterns += [path("", include(wagtail_urls))]

# A database outage answers 503 with a friendly page (core.views.server_error).
handler500 = "core.views.server_error"
