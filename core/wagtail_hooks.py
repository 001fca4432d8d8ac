import base64
import binascii
from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _
from wagtail import hooks
from wagtail.admin.ui.components import Component
from wagtail.admin.ui.tables import Column, DateColumn
from wagtail.admin.views import generic
from wagtail.admin.viewsets.model import ModelViewSet
from wagtail.permissions import register_permission_policy

from . import cache_policy
from .models import OutboundEmail
from .permissions import RefusingPolicy

# Creators may look at the outbox; rows change only through the sending tasks.
register_permission_policy(
    OutboundEmail, RefusingPolicy(OutboundEmail, refused={"add", "change", "delete"})
)


@dataclass(frozen=True)
class AttachmentSummary:
    filename: str
    size: int
    content_type: str


def attachment_summary(record) -> AttachmentSummary:
    """What the admin shows of a stored attachment: never its bytes (a stamped file or an
    invitation holds the recipient's personal data). Tolerates a malformed row."""
    record = record if isinstance(record, dict) else {}
    if "content_base64" in record:
        try:
            size = len(base64.b64decode(str(record["content_base64"])))
        except (binascii.Error, ValueError):
            size = 0
    else:
        size = len(str(record.get("content", "")).encode())
    return AttachmentSummary(
        filename=str(record.get("filename", "")),
        size=size,
        content_type=str(record.get("content_type", "")),
    )


class OutboxAttachments(Component):
    # Rendered by a Django template, so file names and types are escaped.
    template_name = "core/admin/outbox_attachments.html"

    def __init__(self, records):
        self.records = records if isinstance(records, list) else []

    def get_context_data(self, parent_context=None):
        return {"attachments": [attachment_summary(record) for record in self.records]}


class OutboundEmailInspectView(generic.InspectView):
    def get_attachments_display_value(self):
        return OutboxAttachments(self.object.attachments)


class OutboundEmailViewSet(ModelViewSet):
    model = OutboundEmail
    icon = "mail"
    menu_label = _("Email outbox")
    menu_order = 900
    add_to_admin_menu = True
    inspect_view_enabled = True
    inspect_view_class = OutboundEmailInspectView
    copy_view_enabled = False
    # Add and edit are refused by the policy; the form exists only because the
    # viewset builds every view's URL.
    form_fields = ["to"]
    list_filter = ["status", "kind"]
    search_fields = ["to", "subject"]
    list_display = [
        Column("subject", label=_("Subject"), accessor="subject"),
        Column("to", label=_("To"), accessor="to"),
        Column("status", label=_("Status"), accessor="get_status_display"),
        Column("attempts", label=_("Attempts"), accessor="attempts"),
        DateColumn("created_at", label=_("Queued")),
        DateColumn("sent_at", label=_("Sent")),
    ]
    inspect_view_fields = [
        "kind",
        "to",
        "from_email",
        "subject",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "sent_at",
        "attachments",
        "text_body",
    ]


@hooks.register("register_admin_viewset")
def register_outbox_viewset():
    return OutboundEmailViewSet("outbound_emails")


@hooks.register("before_serve_page")
def note_page_for_cache_policy(page, request, serve_args, serve_kwargs):
    # Returns nothing: the page is served as usual; core.cache_policy decides its headers.
    cache_policy.page_served(page, request)
