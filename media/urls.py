from django.urls import path

from . import views

app_name = "media"
urlpatterns = [
    path("<str:token>/", views.protected_file, name="protected"),
]
