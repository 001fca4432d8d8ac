"""Money as integer minor units, as Stripe counts it: 4900 usd is $49.00, 4900 jpy is ¥4,900,
4900 kwd is 4.900 KWD. No floats anywhere; Decimal only to print or to parse."""

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# Stripe's zero-decimal currencies (https://docs.stripe.com/currencies#zero-decimal).
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
# Stripe's three-decimal currencies (https://docs.stripe.com/currencies#three-decimal).
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])

SYMBOLS = {
    "usd": "$",
    "eur": "€",
    "gbp": "£",
    "jpy": "¥",
    "inr": "₹",
    "krw": "₩",
    "ils": "₪",
    "ngn": "₦",
    "php": "₱",
    "vnd": "₫",
    "try": "₺",
    "uah": "₴",
}

CURRENCY_RE = re.compile(r"^[a-z]{3}$")


class MoneyError(ValueError):
    pass


def normalize_currency(currency: str) -> str:
    code = (currency or "").strip().lower()
    if not CURRENCY_RE.match(code):
        raise MoneyError(f"{currency!r} is not an ISO 4217 currency code.")
    return code


def exponent(currency: str) -> int:
    """How many digits follow the decimal point in this currency's minor unit."""
    code = normalize_currency(currency)
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def to_decimal(amount: int, currency: str) -> Decimal:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise MoneyError("Amounts are integers in the currency's minor unit.")
    return Decimal(amount).scaleb(-exponent(currency))


def to_minor_units(value: str | int | Decimal, currency: str) -> int:
    """Parse what a creator typed ("49", "49.00", "4.900") into minor units.

    Refuses more precision than the currency has rather than rounding money silently.
    """
    if isinstance(value, float):
        raise MoneyError("Use a string or a Decimal for money, never a float.")
    try:
        number = (
            Decimal(str(value).strip().replace(",", ""))
            if not isinstance(value, Decimal)
            else value
        )
    except InvalidOperation as exc:
        raise MoneyError(f"{value!r} is not an amount.") from exc
    if not number.is_finite():
        raise MoneyError(f"{value!r} is not an amount.")
    exp = exponent(currency)
    scaled = number.scaleb(exp)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{currency.upper()} has {exp} decimal places; {value} has more.")
    return int(scaled.to_integral_value(rounding=ROUND_HALF_UP))


def format_money(amount: int, currency: str) -> str:
    """ "$49.00", "¥4,900", "4.900 KWD", "-€5.00"."""
    code = normalize_currency(currency)
    exp = exponent(code)
    value = to_decimal(amount, code)
    sign = "-" if value < 0 else ""
    digits = f"{abs(value):,.{exp}f}"
    symbol = SYMBOLS.get(code)
    if symbol:
        return f"{sign}{symbol}{digits}"
    return f"{sign}{digits} {code.upper()}"
