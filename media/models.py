"""Protected media: transcoded videos and the ledger of every stamped download."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Upper
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .storage import protected_field_storage


class WatermarkStatus(models.TextChoices):
    OFF = "off", _("Off")
    WAITING = "waiting", _("Waiting")
    PROCESSING = "processing", _("Encoding the B variant")
    READY = "ready", _("Ready")
    FAILED = "failed", _("Failed")


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

    # Forensic watermark (media/watermark/, docs/forensic-watermark.md): the creator's
    # switch, and the state of the B variant made for the current HLS output.
    forensic_watermark = models.BooleanField(
        _("forensic watermark"),
        default=False,
        help_text=_(
            "Every viewer streams a unique, invisible pattern and sees their email moving "
            "over the picture, so a leaked recording can be traced to the account it came "
            "from (manage.py trace_leak). Takes a second encode; the video plays once it "
            "is done."
        ),
    )
    watermark_status = models.CharField(
        max_length=16, choices=WatermarkStatus.choices, default=WatermarkStatus.OFF
    )
    watermark_progress = models.PositiveSmallIntegerField(default=0)
    watermark_error = models.TextField(blank=True)
    # {"hls_prefix": A's prefix it belongs to, "prefix": B's folder, "cell": [col, row],
    #  "strength": 2, "segments": N, "segment_seconds": 6, "code": {"n": 12, "k": 5},
    #  "reference": storage name of the tracer's reference features}
    watermark = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title

    @property
    def is_marked(self) -> bool:
        """Playlists pick A or B per segment for each viewer (the B variant is ready)."""
        return (
            self.forensic_watermark
            and self.watermark_status == WatermarkStatus.READY
            and self.watermark.get("hls_prefix") == self.hls_prefix
        )

    @property
    def is_playable(self) -> bool:
        """Ready to stream. A watermarked video never streams unmarked: it waits for B."""
        if self.status != self.Status.READY or not self.renditions:
            return False
        return not self.forensic_watermark or self.is_marked

    @property
    def playback_status(self) -> str:
        """status as the player sees it: "ready" only when is_playable; "watermarking"
        while the B variant is made; "failed" when that failed."""
        if self.status != self.Status.READY:
            return self.status
        if self.is_playable:
            return self.Status.READY
        if not self.renditions:
            return self.Status.PROCESSING
        if self.watermark_status == WatermarkStatus.FAILED:
            return self.Status.FAILED
        return "watermarking"

    @property
    def playback_status_label(self) -> str:
        status = self.playback_status
        if status == "watermarking":
            return str(_("Adding the forensic watermark"))
        return str(self.Status(status).label)

    @property
    def viewer_status_label(self) -> str:
        """playback_status_label as a buyer reads it: what to expect, not the machine's
        state (the reason of a failure is for staff, who see playback_status_label)."""
        status = self.playback_status
        if status == self.Status.READY:
            return str(self.Status.READY.label)
        if status == self.Status.FAILED:
            return str(_("This video is unavailable; the creator has been told."))
        return str(_("This video is being prepared — check back in a few minutes."))

    @property
    def playback_progress(self) -> int:
        return self.watermark_progress if self.playback_status == "watermarking" else self.progress

    @property
    def playback_error(self) -> str:
        if self.status == self.Status.READY and self.watermark_status == WatermarkStatus.FAILED:
            return self.watermark_error
        return self.error


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
        indexes = [
            models.Index(fields=["user", "source_name", "created_at"]),
            # A subscriber's download limit (media.downloads._limit_enforce) without reading
            # every download of a popular lead magnet: email__iexact is UPPER() on PostgreSQL.
            models.Index(
                Upper("subscriber_email"),
                "source_name",
                "created_at",
                condition=models.Q(user__isnull=True),
                name="media_delivery_subscriber_lim",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.download_filename} → {self.subscriber_email or self.user_id} ({self.marker})"


class VideoDelivery(models.Model):
    """The ledger of watermarked streams: who was given which A/B codeword for a video.

    One row per (viewer, video), made when the viewer first asks for the video's
    playlist; every later playlist for them picks the same variants. `message` is the
    random id the Reed–Solomon codeword encodes (media/watermark/code.py), unique per
    video so a decoded id names one row. Signed-out viewers of a free preview share one
    row per video (`anonymous`). The email is kept as it was, so a deleted account still
    leaves evidence.
    """

    wagtail_reference_index_ignore = True

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    video = models.ForeignKey(Video, on_delete=models.CASCADE, related_name="deliveries")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    anonymous = models.BooleanField(default=False)
    viewer_email = models.EmailField(max_length=254, blank=True)
    message = models.PositiveIntegerField()
    # The codeword's bits ("0" = A, "1" = B); segment i plays variant codeword[i % len].
    codeword = models.CharField(max_length=64)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["video", "message"], name="video_delivery_message"),
            models.UniqueConstraint(
                fields=["video", "user"],
                condition=models.Q(user__isnull=False),
                name="video_delivery_one_per_viewer",
            ),
            models.UniqueConstraint(
                fields=["video"],
                condition=models.Q(anonymous=True),
                name="video_delivery_one_anonymous",
            ),
        ]

    def __str__(self) -> str:
        who = "signed-out viewers" if self.anonymous else self.viewer_email or self.user_id
        return f"{self.video_id} → {who} (#{self.message})"
