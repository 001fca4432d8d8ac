from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Site"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from .models import BrandSettings
        from .services import brand_settings_forget

        # Cache invalidation only: the brand is read on every email.
        post_save.connect(brand_settings_forget, sender=BrandSettings, dispatch_uid="brand-forget")
        post_delete.connect(
            brand_settings_forget, sender=BrandSettings, dispatch_uid="brand-forget-del"
        )
