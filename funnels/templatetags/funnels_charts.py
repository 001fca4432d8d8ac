from django import template

from core.admin_reports import fmt_pct

register = template.Library()


@register.filter
def percent(rate: float) -> str:
    """0.0625 → "6.3%", in the active locale's number format."""
    return fmt_pct(rate or 0.0)
