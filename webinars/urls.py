from django.urls import path

from . import views

app_name = "webinars"
urlpatterns = [
    path("register/<int:page_id>/", views.register, name="register"),
    path("join/<str:token>/", views.join, name="join"),
    path("calendar/<str:token>/", views.calendar_file, name="calendar"),
    path("replay/<str:token>/", views.replay, name="replay"),
    path("cancel/<str:token>/", views.cancel, name="cancel"),
    path("confirm/<str:token>/", views.confirm, name="confirm"),
]
