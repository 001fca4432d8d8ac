"""Errors, ids and small helpers shared by the stand-in's modules (standard library only)."""

from __future__ import annotations

import copy
import secrets
import string
import time
from typing import Any

_B62 = string.digits + string.ascii_letters
_UPPER = string.digits + string.ascii_uppercase

# Length of the random part of each kind of id, as Stripe's ids look.
_ID_SHAPES = {
    "cus": 14,
    "prod": 14,
    "si": 14,
    "req": 14,
    "bpc": 24,
}


def new_id(prefix: str, length: int | None = None) -> str:
    """A Stripe-style id: ``price_1Q...`` (24 chars), ``cus_...`` (14), ``cs_test_a1...``."""
    if prefix == "cs_test":
        return "cs_test_a1" + "".join(secrets.choice(_B62) for _ in range(56))
    n = length or _ID_SHAPES.get(prefix, 24)
    return prefix + "_" + "".join(secrets.choice(_B62) for _ in range(n))


def new_coupon_id() -> str:
    return "".join(secrets.choice(_UPPER) for _ in range(8))


def new_secret(prefix: str = "whsec", length: int = 32) -> str:
    return prefix + "_" + "".join(secrets.choice(_B62) for _ in range(length))


def now() -> int:
    return int(time.time())


def deep(obj: Any) -> Any:
    return copy.deepcopy(obj)


class StripeError(Exception):
    """An error answered in Stripe's JSON shape: ``{"error": {"type", "message", ...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        if self.param:
            err["param"] = self.param
        if request_id:
            err["request_log_url"] = (
                f"https://dashboard.stripe.com/test/logs/{request_id}?t={now()}"
            )
        err.update(self.extra)
        return {"error": err}


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, message, param=param, code=code)


def missing_param(param: str) -> StripeError:
    return StripeError(
        400, f"Missing required param: {param}.", param=param, code="parameter_missing"
    )


def no_such(kind: str, ident: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{ident}'", param=param, code="resource_missing")


def format_path(parts: list[str | int]) -> str:
    if not parts:
        return ""
    head, *rest = parts
    return str(head) + "".join(f"[{p}]" for p in rest)
