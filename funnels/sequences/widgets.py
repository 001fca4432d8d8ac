"""Admin form widgets for sequences (kept free of model imports: models use them)."""

from django import forms
from django.utils.html import format_html
from django.utils.translation import gettext as _

SHORT_SUBJECT = 40  # characters; subjects longer than this are flagged


class SubjectInput(forms.TextInput):
    """A subject field that shows its length as the creator types."""

    def render(self, name, value, attrs=None, renderer=None):
        attrs = {
            **(attrs or {}),
            "oninput": (
                "var n=this.value.length,h=this.nextElementSibling;"
                f"h.textContent=n+' characters'+(n>{SHORT_SUBJECT}?' — shorter subjects open better':'');"
            ),
        }
        length = len(value or "")
        hint = _("%(n)s characters") % {"n": length}
        if length > SHORT_SUBJECT:
            hint += " — " + _("shorter subjects open better")
        return format_html(
            '{}<p class="help funnels-subject-length" aria-live="polite">{}</p>',
            super().render(name, value, attrs, renderer),
            hint,
        )
