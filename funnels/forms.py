import time

from django import forms
from django.core import signing
from django.utils.translation import gettext_lazy as _
from wagtail.admin.forms import WagtailAdminModelForm

RENDERED_SALT = "lodestone.funnels.rendered-at"
# Humans need a few seconds to type an address; scripts post at once.
MIN_SECONDS_TO_SUBMIT = 2


def rendered_at_token() -> str:
    return signing.dumps(int(time.time()), salt=RENDERED_SALT)


class OptInForm(forms.Form):
    email = forms.CharField(label=_("Email"), max_length=254, strip=True)
    name = forms.CharField(label=_("First name"), max_length=150, required=False, strip=True)
    consent = forms.BooleanField(label=_("I agree"), required=False)
    time_zone = forms.CharField(max_length=64, required=False, widget=forms.HiddenInput)
    # Bot traps: a field humans never see, and when the form was rendered.
    website = forms.CharField(required=False, max_length=200, widget=forms.TextInput)
    rendered_at = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)
    utm_source = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)
    utm_medium = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)
    utm_campaign = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)
    utm_term = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)
    utm_content = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)
    referrer = forms.CharField(required=False, max_length=1000, widget=forms.HiddenInput)

    def is_honeypot_filled(self) -> bool:
        return bool(self.cleaned_data.get("website"))

    def seconds_since_render(self) -> float | None:
        try:
            rendered = signing.loads(self.cleaned_data.get("rendered_at") or "", salt=RENDERED_SALT)
        except signing.BadSignature:
            return None
        return time.time() - int(rendered)


class LeadMagnetForm(WagtailAdminModelForm):
    """The lead magnet's admin form: its file is stamped for each subscriber, so one that
    cannot be (damaged, password-protected) is refused on upload and the stored file's
    preparation status shows under the field (media.forms)."""

    def __init__(self, *args, **kwargs):
        from media.forms import protected_status_show

        super().__init__(*args, **kwargs)
        protected_status_show(self)

    def clean(self):
        from media.forms import protected_upload_check

        cleaned_data = super().clean()
        protected_upload_check(self)
        return cleaned_data

    def save(self, commit=True):
        from media.downloads import download_prepare_later

        magnet = super().save(commit=commit)
        if commit and magnet.file:
            download_prepare_later(magnet.file.name)
        return magnet
