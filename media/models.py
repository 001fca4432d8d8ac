"""Protected media: transcoded videos and the ledger of every stamped download."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .storage import protected_field_storage


class Video(models.Model):
    """An uploaded video, transcoded to HLS renditions in the protected store.

    `uid` names it in URLs and storage paths: ids are never guessable.
    """

    class Status(models.TextChoices):
        UPLOADED = "uploaded", _("Waiting to be processed")
        PROCESSING = "processing", _("Processing")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    wagtail_reference_index_ignore = True

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    title = models.CharField(max_length=200)
    source = models.FileField(
        storage=protected_field_storage,
        upload_to="videos/sources/%Y/%m/",
        help_text=_("MP4, MOV, WebM or MKV. Transcoded for streaming after upload."),
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UPLOADED)
    progress = models.PositiveSmallIntegerField(default=0, help_text=_("Percent done."))
    error = models.TextField(blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    # Storage prefix of the HLS output (master playlist, renditions, segments, poster).
    hls_prefix = models.CharField(max_length=255, blank=True)
    # [{"name": "720p", "height": 720, "bandwidth": 2800000, "playlist": "720p/index.m3u8"}, ...]
    renditions = models.JSONField(default=list, blank=True)
    poster = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title


class DownloadDelivery(models.Model):
    """The ledger: every protected file handed to someone, with the marker it carries.

    The marker is embedded in the delivered file (metadata and page content), so a leaked
    copy leads back to this row: who, which file version, when, from where.
    """

    wagtail_reference_index_ignore = True

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    marker = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A lead-magnet subscriber (funnels) when there is no account.
    subscriber_email = models.EmailField(max_length=254, blank=True)
    recipient_name = models.CharField(max_length=200, blank=True)
    order_reference = models.CharField(max_length=64, blank=True)
    # What was delivered: the storage name of the source and its SHA-256 (the file version).
    source_name = models.CharField(max_length=500)
    source_sha256 = models.CharField(max_length=64)
    download_filename = models.CharField(max_length=255)
    # What was sent: the stamped bytes' SHA-256 and size.
    sent_sha256 = models.CharField(max_length=64, blank=True)
    sent_size = models.BigIntegerField(null=True, blank=True)
    stamped = models.BooleanField(default=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "source_name", "created_at"])]

    def __str__(self) -> str:
        return f"{self.download_filename} → {self.subscriber_email or self.user_id} ({self.marker})"
