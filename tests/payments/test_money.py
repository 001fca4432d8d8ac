"""Money is integer minor units; each currency prints with its own number of decimals."""

from decimal import Decimal

import pytest

from payments.money import MoneyError, exponent, format_money, to_minor_units


def test_usd_has_cents_jpy_has_none_and_kwd_has_three_decimals():
    assert (exponent("usd"), exponent("JPY"), exponent("kwd")) == (2, 0, 3)
    assert format_money(4900, "usd") == "$49.00"
    assert format_money(123456789, "usd") == "$1,234,567.89"
    assert format_money(4900, "jpy") == "¥4,900"
    assert format_money(12345, "kwd") == "12.345 KWD"
    assert format_money(-500, "eur") == "-€5.00"
    assert format_money(0, "usd") == "$0.00"


def test_creator_input_becomes_minor_units_without_floats_or_silent_rounding():
    assert to_minor_units("49", "usd") == 4900
    assert to_minor_units("1,299.99", "usd") == 129999
    assert to_minor_units("4900", "jpy") == 4900
    assert to_minor_units(Decimal("12.345"), "kwd") == 12345
    with pytest.raises(MoneyError):
        to_minor_units("49.999", "usd")
    with pytest.raises(MoneyError):
        to_minor_units("10.5", "jpy")
    with pytest.raises(MoneyError):
        to_minor_units(49.99, "usd")
    with pytest.raises(MoneyError):
        format_money(49.5, "usd")
    with pytest.raises(MoneyError):
        format_money(100, "dollars")
