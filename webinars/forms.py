from django import forms

from funnels.forms import OptInForm


class RegistrationForm(OptInForm):
    """The funnel's opt-in form (consent, bot traps, time zone, attribution) plus the
    session or evergreen slot picked."""

    occasion = forms.CharField(required=False, max_length=20)
    slot = forms.CharField(required=False, max_length=40)
    waitlist = forms.BooleanField(required=False)
