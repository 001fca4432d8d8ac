"""Videos in the Wagtail admin: creators upload here and watch the processing.

A snippet, so lesson pages can pick a video with the snippet chooser. Creating or
replacing the file queues the transcode (media.services.video_upload_received); the list
shows status, progress, duration and the poster; the inspect view plays the video
through the same per-viewer playlists learners get (staff may view every video).
"""

from django.utils.translation import gettext_lazy as _
from wagtail.admin.panels import FieldPanel
from wagtail.admin.ui.tables import Column, DateColumn, StatusTagColumn
from wagtail.log_actions import log
from wagtail.snippets.models import register_snippet
from wagtail.snippets.views import snippets as snippet_views
from wagtail.snippets.views.snippets import SnippetViewSet

from . import services
from .models import Video, WatermarkStatus
from .watermark.services import video_watermark_switch


def duration_display(video: Video) -> str:
    if not video.duration_seconds:
        return ""
    total = round(video.duration_seconds)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def renditions_display(video: Video) -> str:
    return ", ".join(r["name"] for r in video.renditions)


class PosterColumn(Column):
    cell_template_name = "media/admin/poster_cell.html"

    def get_cell_context_data(self, instance, parent_context):
        context = super().get_cell_context_data(instance, parent_context)
        context["video"] = instance
        return context


class ProgressColumn(Column):
    cell_template_name = "media/admin/progress_cell.html"

    def get_cell_context_data(self, instance, parent_context):
        context = super().get_cell_context_data(instance, parent_context)
        context["video"] = instance
        return context


class WatermarkColumn(Column):
    cell_template_name = "media/admin/watermark_cell.html"

    def get_cell_context_data(self, instance, parent_context):
        context = super().get_cell_context_data(instance, parent_context)
        context["video"] = instance
        return context


class VideoCreateView(snippet_views.CreateView):
    def save_instance(self):
        video = super().save_instance()
        services.video_upload_received(video=video)
        if video.forensic_watermark:
            video_watermark_switch(video=video, enabled=True)
        return video


class VideoEditView(snippet_views.EditView):
    def save_instance(self):
        # Only the form's fields: a transcode may be writing status and progress now.
        old_source, old_watermark = (
            Video.objects.filter(pk=self.object.pk)
            .values_list("source", "forensic_watermark")
            .get()
        )
        video = self.form.save(commit=False)
        video.save(update_fields=["title", "source", "updated_at"])
        log(instance=video, action="wagtail.edit", user=self.request.user)
        if video.source.name != old_source:
            services.video_source_replaced(video=video, old_source_name=old_source)
        if video.forensic_watermark != old_watermark:
            video = video_watermark_switch(video=video, enabled=video.forensic_watermark)
        return video


class VideoDeleteView(snippet_views.DeleteView):
    def delete_action(self):
        uid, source = str(self.object.uid), self.object.source.name
        super().delete_action()
        services.video_files_discard(uid=uid, source_name=source)


class VideoInspectView(snippet_views.InspectView):
    template_name = "media/admin/video_inspect.html"
    field_labels = {
        "duration_seconds": _("Duration"),
        "watermark_status": _("Forensic watermark"),
        "width": _("Size"),
        "processed_at": _("Processed"),
        "created_at": _("Uploaded"),
    }

    def get_field_label(self, field_name, field):
        return self.field_labels.get(field_name) or super().get_field_label(field_name, field)

    def get_field_display_value(self, field_name, field):
        video = self.object
        if field_name == "duration_seconds":
            return duration_display(video) or "—"
        if field_name == "width":
            return f"{video.width} × {video.height}" if video.width else "—"
        if field_name == "progress":
            return f"{video.progress}%"
        if field_name == "watermark_status":
            if not video.forensic_watermark:
                return _("Off")
            label = str(video.get_watermark_status_display())
            if video.watermark_status == WatermarkStatus.PROCESSING:
                return f"{label} — {video.watermark_progress}%"
            if video.watermark_status == WatermarkStatus.FAILED:
                return f"{label}: {video.watermark_error}"
            if video.is_marked:
                info = video.watermark
                viewers = video.deliveries.count()
                return _(
                    "Ready: %(segments)s segments of %(seconds)s s, mark in cell %(cell)s; "
                    "%(viewers)s viewers in the ledger"
                ) % {
                    "segments": info["segments"],
                    "seconds": info["segment_seconds"],
                    "cell": "{},{}".format(*info["cell"]),
                    "viewers": viewers,
                }
            return label
        value = super().get_field_display_value(field_name, field)
        return "—" if value is None or value == "" else value

    def get_renditions_display_value(self):
        return renditions_display(self.object) or "—"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["video"] = self.object
        return context


class VideoViewSet(SnippetViewSet):
    model = Video
    icon = "media"
    menu_label = _("Videos")
    menu_order = 240
    add_to_admin_menu = True
    copy_view_enabled = False
    inspect_view_enabled = True
    add_view_class = VideoCreateView
    edit_view_class = VideoEditView
    delete_view_class = VideoDeleteView
    inspect_view_class = VideoInspectView
    panels = [FieldPanel("title"), FieldPanel("source"), FieldPanel("forensic_watermark")]
    search_fields = ["title"]
    search_backend_name = None
    ordering = "-created_at"
    list_display = [
        PosterColumn("poster", label=_("Poster"), width="120px"),
        "title",
        StatusTagColumn(
            "status",
            label=_("Status"),
            accessor="get_status_display",
            sort_key="status",
            primary=lambda v: v.status == Video.Status.READY,
        ),
        ProgressColumn("progress", label=_("Progress"), width="14%"),
        Column("duration", label=_("Duration"), accessor=duration_display),
        Column("renditions", label=_("Renditions"), accessor=renditions_display),
        WatermarkColumn("watermark_status", label=_("Forensic watermark")),
        DateColumn("created_at", label=_("Uploaded"), sort_key="created_at"),
    ]
    list_filter = ["status", "forensic_watermark"]
    inspect_view_fields = [
        "title",
        "status",
        "progress",
        "duration_seconds",
        "width",
        "renditions",
        "watermark_status",
        "created_at",
        "processed_at",
    ]


register_snippet(VideoViewSet)
