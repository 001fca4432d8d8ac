"""Regenerate ``stripe_params.json`` from the installed ``stripe`` package's request types.

Developer tool, not used at run time (the stand-in itself needs only the standard library)::

    .venv/bin/python tests/stripe_standin/_gen_params.py > tests/stripe_standin/stripe_params.json

Each endpoint's accepted parameters come from the SDK's ``*Params`` TypedDicts, which Stripe
generates from its OpenAPI spec, so "unknown parameter" answers match Stripe's for this version.
Schema nodes: "str" | "int" | "bool" | "num" | "map" (string->string) | "any" |
[node] (list of node) | {"field": node, ..., "__required__": [...]} (object).
"""

from __future__ import annotations

import importlib
import json
import sys
import typing
from decimal import Decimal

ENDPOINTS = {
    "product.create": "_product_create_params.ProductCreateParams",
    "product.update": "_product_update_params.ProductUpdateParams",
    "product.list": "_product_list_params.ProductListParams",
    "product.retrieve": "_product_retrieve_params.ProductRetrieveParams",
    "product.delete": "_product_delete_params.ProductDeleteParams",
    "product.search": "_product_search_params.ProductSearchParams",
    "price.search": "_price_search_params.PriceSearchParams",
    "customer.search": "_customer_search_params.CustomerSearchParams",
    "charge.search": "_charge_search_params.ChargeSearchParams",
    "invoice.search": "_invoice_search_params.InvoiceSearchParams",
    "payment_intent.search": "_payment_intent_search_params.PaymentIntentSearchParams",
    "subscription.search": "_subscription_search_params.SubscriptionSearchParams",
    "price.create": "_price_create_params.PriceCreateParams",
    "price.update": "_price_update_params.PriceUpdateParams",
    "price.list": "_price_list_params.PriceListParams",
    "price.retrieve": "_price_retrieve_params.PriceRetrieveParams",
    "customer.create": "_customer_create_params.CustomerCreateParams",
    "customer.update": "_customer_update_params.CustomerUpdateParams",
    "customer.list": "_customer_list_params.CustomerListParams",
    "customer.retrieve": "_customer_retrieve_params.CustomerRetrieveParams",
    "customer.delete": "_customer_delete_params.CustomerDeleteParams",
    "coupon.create": "_coupon_create_params.CouponCreateParams",
    "coupon.update": "_coupon_update_params.CouponUpdateParams",
    "coupon.list": "_coupon_list_params.CouponListParams",
    "coupon.retrieve": "_coupon_retrieve_params.CouponRetrieveParams",
    "coupon.delete": "_coupon_delete_params.CouponDeleteParams",
    "promotion_code.create": "_promotion_code_create_params.PromotionCodeCreateParams",
    "promotion_code.update": "_promotion_code_update_params.PromotionCodeUpdateParams",
    "promotion_code.list": "_promotion_code_list_params.PromotionCodeListParams",
    "promotion_code.retrieve": "_promotion_code_retrieve_params.PromotionCodeRetrieveParams",
    "checkout.session.create": "checkout._session_create_params.SessionCreateParams",
    "checkout.session.update": "checkout._session_update_params.SessionUpdateParams",
    "checkout.session.list": "checkout._session_list_params.SessionListParams",
    "checkout.session.retrieve": "checkout._session_retrieve_params.SessionRetrieveParams",
    "checkout.session.expire": "checkout._session_expire_params.SessionExpireParams",
    "checkout.session.list_line_items": (
        "checkout._session_line_item_list_params.SessionLineItemListParams"
    ),
    "payment_intent.retrieve": "_payment_intent_retrieve_params.PaymentIntentRetrieveParams",
    "payment_intent.list": "_payment_intent_list_params.PaymentIntentListParams",
    "payment_intent.update": "_payment_intent_update_params.PaymentIntentUpdateParams",
    "charge.retrieve": "_charge_retrieve_params.ChargeRetrieveParams",
    "charge.list": "_charge_list_params.ChargeListParams",
    "charge.update": "_charge_update_params.ChargeUpdateParams",
    "refund.create": "_refund_create_params.RefundCreateParams",
    "refund.retrieve": "_refund_retrieve_params.RefundRetrieveParams",
    "refund.list": "_refund_list_params.RefundListParams",
    "refund.update": "_refund_update_params.RefundUpdateParams",
    "subscription.retrieve": "_subscription_retrieve_params.SubscriptionRetrieveParams",
    "subscription.list": "_subscription_list_params.SubscriptionListParams",
    "subscription.update": "_subscription_update_params.SubscriptionUpdateParams",
    "subscription.cancel": "_subscription_cancel_params.SubscriptionCancelParams",
    "invoice.retrieve": "_invoice_retrieve_params.InvoiceRetrieveParams",
    "invoice.list": "_invoice_list_params.InvoiceListParams",
    "invoice.pay": "_invoice_pay_params.InvoicePayParams",
    "invoice.list_lines": "_invoice_list_lines_params.InvoiceListLinesParams",
    "invoice_payment.retrieve": "_invoice_payment_retrieve_params.InvoicePaymentRetrieveParams",
    "invoice_payment.list": "_invoice_payment_list_params.InvoicePaymentListParams",
    "balance_transaction.retrieve": (
        "_balance_transaction_retrieve_params.BalanceTransactionRetrieveParams"
    ),
    "payment_method.retrieve": "_payment_method_retrieve_params.PaymentMethodRetrieveParams",
    "dispute.retrieve": "_dispute_retrieve_params.DisputeRetrieveParams",
    "dispute.list": "_dispute_list_params.DisputeListParams",
    "dispute.update": "_dispute_update_params.DisputeUpdateParams",
    "dispute.close": "_dispute_close_params.DisputeCloseParams",
    "billing_portal.session.create": "billing_portal._session_create_params.SessionCreateParams",
    "event.retrieve": "_event_retrieve_params.EventRetrieveParams",
    "event.list": "_event_list_params.EventListParams",
    "webhook_endpoint.create": "_webhook_endpoint_create_params.WebhookEndpointCreateParams",
    "webhook_endpoint.retrieve": "_webhook_endpoint_retrieve_params.WebhookEndpointRetrieveParams",
    "webhook_endpoint.list": "_webhook_endpoint_list_params.WebhookEndpointListParams",
    "webhook_endpoint.update": "_webhook_endpoint_update_params.WebhookEndpointUpdateParams",
    "webhook_endpoint.delete": "_webhook_endpoint_delete_params.WebhookEndpointDeleteParams",
}

REQUEST_OPTION_KEYS = {
    "api_key",
    "content_type",
    "headers",
    "idempotency_key",
    "max_network_retries",
    "stripe_account",
    "stripe_context",
    "stripe_version",
}


def _is_typeddict(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__annotations__")


def _node(tp, ns, depth):
    if depth > 12:
        return "any"
    if isinstance(tp, typing.ForwardRef):
        tp = tp.__forward_arg__
    if isinstance(tp, str):
        tp = eval(tp, ns)  # noqa: S307 - SDK's own annotation strings
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.NotRequired or origin is typing.Required:
        return _node(args[0], ns, depth)
    if origin in (typing.Union, __import__("types").UnionType):
        nodes = []
        for a in args:
            if typing.get_origin(a) is typing.Literal and all(v == "" for v in typing.get_args(a)):
                continue  # Literal[""]: "unset"; always accepted by the stand-in
            n = _node(a, ns, depth)
            if n not in nodes:
                nodes.append(n)
        if len(nodes) == 1:
            return nodes[0]
        if set(map(repr, nodes)) <= {"'str'", "'map'"}:
            return "any"
        if "map" in nodes and all(n in ("map", "str") for n in nodes):
            return "map"
        return "any"
    if origin is typing.Literal:
        vals = args
        if all(isinstance(v, bool) for v in vals):
            return "bool"
        if all(isinstance(v, int) for v in vals):
            return "int"
        return "str"
    if origin is list:
        return [_node(args[0], ns, depth + 1)]
    if origin is dict:
        return "map" if args and args[1] is str else "any"
    if tp is str:
        return "str"
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp in (float, Decimal):
        return "num"
    if getattr(tp, "__name__", "") == "UntypedStripeObject" or (
        origin is not None and getattr(origin, "__name__", "") == "UntypedStripeObject"
    ):
        return "map"
    if _is_typeddict(tp):
        return _object(tp, depth + 1)
    if tp is typing.Any or tp is object:
        return "any"
    return "any"


def _object(cls, depth):
    mod = sys.modules[cls.__module__]
    ns = dict(vars(mod))
    ns.update(vars(typing))
    out = {}
    required = []
    own = {}
    for base in reversed(cls.__mro__):
        own.update(getattr(base, "__annotations__", {}))
    for name, ann in own.items():
        if name in REQUEST_OPTION_KEYS:
            continue
        if typing.get_origin(ann) is not typing.NotRequired:
            required.append(name)
        out[name] = _node(ann, ns, depth)
    if required:
        out["__required__"] = sorted(required)
    return out


def main() -> None:
    result = {}
    for key, path in ENDPOINTS.items():
        mod_name, cls_name = path.rsplit(".", 1)
        mod = importlib.import_module("stripe.params." + mod_name)
        result[key] = _object(getattr(mod, cls_name), 0)
    import stripe

    lines = [
        "{",
        '"_generated_by": "tests/stripe_standin/_gen_params.py",',
        f'"stripe_python_version": {json.dumps(stripe.VERSION)},',
        f'"api_version": {json.dumps(stripe.api_version)},',
        '"params": {',
    ]
    keys = sorted(result)
    for i, key in enumerate(keys):
        sep = "," if i < len(keys) - 1 else ""
        lines.append(f"{json.dumps(key)}: {json.dumps(result[key], sort_keys=True)}{sep}")
    lines += ["}", "}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
