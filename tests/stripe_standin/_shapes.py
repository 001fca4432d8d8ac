"""Stripe's published example objects (fixtures3.json) as the starting shape of every answer.

A copy of the file ships in ``data/`` (taken unchanged from stripe/openapi, MIT; the
``STRIPE_FIXTURES`` environment variable overrides the path) and is read when a stand-in starts.
``blank(kind)`` is the fixture object with its example values (amounts, ids, nested examples)
reset to what a freshly created object of that kind holds; callers overlay their own state.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from ._core import deep

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures3.json"
# The project's shared copy, which the shipped one must match (tests/stripe_standin_tests).
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "stripe" / "fixtures3.json"

_ADDRESS = {
    "city": None,
    "country": None,
    "line1": None,
    "line2": None,
    "postal_code": None,
    "state": None,
}

# Per resource: fixture keys to reset (value replaces the example) and keys to drop
# (present in the example but not returned by default, e.g. includable lists).
_RESET: dict[str, dict[str, Any]] = {
    "product": {
        "default_price": None,
        "description": None,
        "images": [],
        "marketing_features": [],
        "metadata": {},
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "unit_label": None,
        "url": None,
        "type": "service",
    },
    "price": {
        "billing_scheme": "per_unit",
        "custom_unit_amount": None,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "recurring": None,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "one_time",
        "unit_amount": None,
        "unit_amount_decimal": None,
    },
    "customer": {
        "address": None,
        "balance": 0,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    },
    "coupon": {
        "amount_off": None,
        "currency": None,
        "duration": "once",
        "duration_in_months": None,
        "max_redemptions": None,
        "metadata": {},
        "name": None,
        "percent_off": None,
        "redeem_by": None,
        "times_redeemed": 0,
        "valid": True,
    },
    "promotion_code": {
        "active": True,
        "customer": None,
        "expires_at": None,
        "max_redemptions": None,
        "metadata": {},
        "restrictions": {
            "first_time_transaction": False,
            "minimum_amount": None,
            "minimum_amount_currency": None,
        },
        "times_redeemed": 0,
    },
    "checkout.session": {
        "after_expiration": None,
        "allow_promotion_codes": None,
        "adaptive_pricing": {"enabled": False},
        "automatic_tax": {"enabled": False, "liability": None, "status": None, "provider": None},
        "billing_address_collection": None,
        "client_reference_id": None,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": None,
        "customer_creation": None,
        "customer_details": None,
        "customer_email": None,
        "discounts": [],
        "invoice": None,
        "invoice_creation": None,
        "locale": None,
        "managed_payments": None,
        "metadata": {},
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "submit_type": None,
        "subscription": None,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "wallet_options": None,
    },
    "payment_intent": {
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "capture_method": "automatic_async",
        "customer": None,
        "description": None,
        "last_payment_error": None,
        "latest_charge": None,
        "metadata": {},
        "next_action": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "processing": None,
        "shipping": None,
        "transfer_data": None,
        "managed_payments": None,
    },
    "charge": {
        "amount_captured": 0,
        "amount_refunded": 0,
        "billing_details": {
            "address": dict(_ADDRESS),
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "LODESTONE TEST",
        "captured": True,
        "description": None,
        "metadata": {},
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": 20,
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "receipt_url": None,
        "shipping": None,
        "source": None,
        "transfer_data": None,
    },
    "refund": {"metadata": {}, "reason": None, "customer": None},
    "payment_method": {
        "billing_details": {
            "address": dict(_ADDRESS),
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "customer": None,
        "metadata": {},
    },
    "subscription": {
        "automatic_tax": {"enabled": False, "liability": None, "disabled_reason": None},
        "billing_cycle_anchor_config": None,
        "cancel_at": None,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "cancel_at_period_end": False,
        "billing_thresholds": None,
        "billing_mode": {"type": "classic", "flexible": None},
        "billing_schedules": [],
        "description": None,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "latest_invoice": None,
        "metadata": {},
        "next_pending_invoice_item_invoice": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_update": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_start": None,
        "managed_payments": None,
    },
    "invoice": {
        "account_name": "Lodestone (Stripe stand-in)",
        "amount_overpaid": 0,
        "amount_paid_off_stripe": 0,
        "amount_shipping": 0,
        "automatic_tax": {
            "enabled": False,
            "liability": None,
            "status": None,
            "disabled_reason": None,
            "provider": None,
        },
        "custom_fields": None,
        "customer_address": None,
        "customer_shipping": None,
        "due_date": None,
        "from_invoice": None,
        "last_finalization_error": None,
        "metadata": {},
        "next_payment_attempt": None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
    },
    "dispute": {"metadata": {}, "enhanced_eligibility_types": []},
    "billing_portal.session": {"flow": None, "livemode": False},
    "webhook_endpoint": {"metadata": {}, "description": None},
}

_DROP: dict[str, tuple[str, ...]] = {
    "charge": ("refunds",),
    "invoice": ("subscription",),
}


def fixtures_path() -> Path:
    env = os.environ.get("STRIPE_FIXTURES")
    return Path(env) if env else DEFAULT_FIXTURES


@cache
def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"Stripe fixtures not found at {p}. The stand-in reads Stripe's published example "
            "objects from tests/stripe_standin/data/fixtures3.json; set STRIPE_FIXTURES to the "
            "file's path if it lives elsewhere."
        )
    return json.loads(p.read_text(encoding="utf-8"))["resources"]


class Shapes:
    """Fixture objects loaded once per stand-in."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or fixtures_path()
        self.resources = _load(str(self.path))

    def blank(self, kind: str, **overlay: Any) -> dict[str, Any]:
        obj = deep(self.resources[kind])
        for key in _DROP.get(kind, ()):
            obj.pop(key, None)
        obj.update(deep(_RESET.get(kind, {})))
        if "livemode" in obj:
            obj["livemode"] = False
        obj.update(overlay)
        return obj

    def raw(self, kind: str) -> dict[str, Any]:
        return deep(self.resources[kind])
