from django.urls import path

from . import views

app_name = "funnels"
urlpatterns = [
    path("subscribe/<int:page_id>/<uuid:form_id>/", views.optin_post, name="subscribe"),
    path("confirm/<str:token>/", views.confirm, name="confirm"),
    path("download/<str:token>/", views.download, name="download"),
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("my-data/<str:token>/", views.my_data, name="my_data"),
    path("visit/<int:page_id>/", views.visit, name="visit"),
]
