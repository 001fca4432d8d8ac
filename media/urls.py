from django.urls import path

from . import views, views_video

app_name = "media"
urlpatterns = [
    path("video/seg/<str:token>/", views_video.video_segment, name="video_segment"),
    path("video/<uuid:uid>/master.m3u8", views_video.video_master, name="video_master"),
    path("video/<uuid:uid>/poster.jpg", views_video.video_poster, name="video_poster"),
    path("video/<uuid:uid>/status.json", views_video.video_status, name="video_status"),
    path(
        "video/<uuid:uid>/<str:rendition>/index.m3u8",
        views_video.video_rendition,
        name="video_rendition",
    ),
    path("<str:token>/", views.protected_file, name="protected"),
]
