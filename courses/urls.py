from django.urls import path

from . import views

app_name = "courses"
urlpatterns = [
    path("download/<uuid:download_uuid>/", views.lesson_download, name="download"),
    path("progress/<int:lesson_id>/", views.progress_save, name="progress"),
    path("complete/<int:lesson_id>/", views.lesson_complete, name="complete"),
]
