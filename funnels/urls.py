from django.urls import path

from . import views
from .sequences import views as sequence_views

app_name = "funnels"
urlpatterns = [
    path("subscribe/<int:page_id>/<uuid:form_id>/", views.optin_post, name="subscribe"),
    path("confirm/<str:token>/", views.confirm, name="confirm"),
    path("download/<str:token>/", views.download, name="download"),
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("my-data/<str:token>/", views.my_data, name="my_data"),
    path("visit/<int:page_id>/", views.visit, name="visit"),
    # Drip sequences and broadcasts: tracked links, and the email provider's webhooks
    # (django-anymail, Postmark; HTTP basic auth from ANYMAIL["WEBHOOK_SECRET"]).
    path("c/<str:token>/", sequence_views.click, name="sequence_click"),
    path("o/<str:token>/", sequence_views.open_pixel, name="sequence_open"),
    path(
        "esp/postmark/tracking/",
        sequence_views.PostmarkTrackingWebhook.as_view(),
        name="esp_postmark_tracking",
    ),
    path(
        "esp/postmark/inbound/",
        sequence_views.PostmarkInboundWebhook.as_view(),
        name="esp_postmark_inbound",
    ),
]
