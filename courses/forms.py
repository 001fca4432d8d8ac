"""The lesson editor's form: each download is checked when it is uploaded, prepared for
stamping in the background, and its status shown under it (media.forms)."""

from pathlib import PurePosixPath

from wagtail.admin.forms import WagtailAdminPageForm

DOWNLOADS = "downloads"


class LessonPageForm(WagtailAdminPageForm):
    def __init__(self, *args, **kwargs):
        from media.forms import protected_status_show

        super().__init__(*args, **kwargs)
        for form in self._download_forms():
            protected_status_show(form)

    def _download_forms(self) -> list:
        formset = self.formsets.get(DOWNLOADS)
        return list(formset.forms) if formset is not None else []

    def clean(self):
        from media.forms import protected_upload_check

        cleaned_data = super().clean()
        for form in self._download_forms():
            # The row's own validation first (required fields), then its new file, which
            # names itself in the error: a lesson can have several.
            if form.is_valid() and not form.cleaned_data.get("DELETE"):
                protected_upload_check(form)
        return cleaned_data

    def save(self, commit=True):
        from media.downloads import download_prepare_later

        page = super().save(commit=False)
        # A file uploaded in the downloads panel is written to storage only when its row
        # is saved, and "Save draft" saves a revision, not the rows: the revision would
        # name a file that was never stored. Store uploads now, whatever the action.
        for download in page.downloads.all():
            upload = download.file
            if upload and not upload._committed:
                upload.save(PurePosixPath(upload.name).name, upload.file, save=False)
        # Prepared in the background (once per file version; a prepared file is only
        # read), so the first buyer's download does not wait and the status shows.
        for download in page.downloads.all():
            if download.file:
                download_prepare_later(download.file.name)
        if commit:
            page.save()
            self.save_m2m()
        return page
