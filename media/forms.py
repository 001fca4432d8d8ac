"""Admin form helpers for protected files a buyer downloads stamped (lesson downloads,
lead magnets): refuse a file that cannot be stamped when it is uploaded, and show each
stored file's preparation status to its creator.

A download is stamped with its buyer's name on the way out (media.downloads); a damaged
or password-protected PDF would otherwise be found out by the first buyer.
"""

from pathlib import PurePosixPath

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.utils.translation import gettext as _

from .downloads import download_prepare_later, download_status, upload_problem


def protected_upload_error(upload: UploadedFile) -> str:
    """The editor's message for an uploaded file buyers could not get stamped; "" if fine.

    With LODESTONE_DOWNLOAD_ALLOW_UNSTAMPED on, such a file is accepted (buyers get it as
    it is) and its status line says so instead.
    """
    if getattr(settings, "DOWNLOAD_ALLOW_UNSTAMPED", False):
        return ""
    filename = PurePosixPath(upload.name or "").name
    problem = upload_problem(upload, name=filename)
    if not problem:
        return ""
    return _("“%(file)s” cannot be stamped for buyers. %(problem)s") % {
        "file": filename,
        "problem": problem,
    }


def protected_upload_check(form: forms.BaseForm, field_name: str = "file") -> None:
    """Add the error of a newly uploaded file, if it has one, to `form`'s field."""
    upload = form.cleaned_data.get(field_name)
    if field_name in form.changed_data and isinstance(upload, UploadedFile):
        error = protected_upload_error(upload)
        if error:
            form.add_error(field_name, error)


def protected_file_status(name: str) -> str:
    """One line for the editor: is this stored file ready for stamped downloads? A file
    nobody has prepared yet (stored before this check existed, or its task was lost) is
    queued again; the task is idempotent."""
    status = download_status(name)
    if status.state == "preparing":
        download_prepare_later(name)
    return status.message


def protected_status_show(form: forms.BaseForm, field_name: str = "file") -> None:
    """Append the stored file's status to the help text of `form`'s file field."""
    stored = getattr(form.instance, field_name, None)
    if form.is_bound or not stored or not stored.name or field_name not in form.fields:
        return
    field = form.fields[field_name]
    field.help_text = f"{field.help_text} {protected_file_status(stored.name)}".strip()
