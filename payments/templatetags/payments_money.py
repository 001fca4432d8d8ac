from django import template

from payments.money import MoneyError, format_money

register = template.Library()


@register.filter
def money(amount, currency: str) -> str:
    """{{ price.amount|money:price.currency }} → "$49.00", "¥4,900", "4.900 KWD"."""
    try:
        return format_money(int(amount), currency)
    except (MoneyError, TypeError, ValueError):
        return ""
