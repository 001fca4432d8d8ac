from django.apps import AppConfig


class MediaConfig(AppConfig):
    name = "media"
    label = "lodestone_media"
    verbose_name = "Protected media"
