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


@register.simple_tag
def stripe_test_mode() -> bool:
    """{% stripe_test_mode as test_mode %}: True when no real payment can be taken (the
    Stripe stand-in, or a Stripe test key), so checkout pages can say so."""
    from funnels.blocks import is_test_checkout

    return is_test_checkout()
