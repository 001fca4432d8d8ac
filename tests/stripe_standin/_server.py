"""HTTP front of the stand-in: Stripe's /v1 API, the hosted pages, and the /_control API."""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ._core import StripeError, invalid, new_id
from ._engine import Ctx, money
from ._forms import parse_form
from ._schema import validate
from ._search import search

if TYPE_CHECKING:
    from .handle import StripeStandin

Handler = Callable[..., Any]


_SEARCHABLE = {
    "product",
    "price",
    "customer",
    "charge",
    "invoice",
    "payment_intent",
    "subscription",
}


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: str  # key into stripe_params.json
    fn: Handler


def _routes(h: StripeStandin) -> list[Route]:
    e = h.engine
    routes: list[Route] = []

    def add(method: str, path: str, endpoint: str, fn: Handler) -> None:
        rx = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"
        routes.append(Route(method, re.compile(rx), endpoint, fn))

    def crud(path: str, kind: str, *, create=None, update=None, delete=None, lister=None):
        if kind in _SEARCHABLE:
            add(
                "GET",
                path + "/search",
                f"{kind}.search",
                lambda c, p: search(e, kind, p, path + "/search"),
            )
        if create:
            add("POST", path, f"{kind}.create", lambda c, p: create(p, c))
        add(
            "GET",
            path,
            f"{kind}.list",
            lister or (lambda c, p: e.list(kind, p, path)),
        )
        add("GET", path + "/{id}", f"{kind}.retrieve", lambda c, p, id: e.retrieve(kind, id))
        if update:
            add("POST", path + "/{id}", f"{kind}.update", lambda c, p, id: update(id, p, c))
        if delete:
            add("DELETE", path + "/{id}", f"{kind}.delete", lambda c, p, id: delete(id, c))

    def eq(p: dict[str, Any], *keys: str) -> Callable[[dict[str, Any]], bool]:
        return lambda o: all(not p.get(k) or o.get(k) == p[k] for k in keys)

    crud(
        "/v1/products",
        "product",
        create=e.create_product,
        update=e.update_product,
        delete=e.delete_product,
        lister=lambda c, p: e.list(
            "product",
            p,
            "/v1/products",
            lambda o: (
                (p.get("active") is None or o["active"] == p["active"])
                and (not p.get("ids") or o["id"] in p["ids"])
                and (p.get("shippable") is None or o["shippable"] == p["shippable"])
                and (not p.get("url") or o["url"] == p["url"])
            ),
        ),
    )
    crud(
        "/v1/prices",
        "price",
        create=e.create_price,
        update=e.update_price,
        lister=lambda c, p: e.list_prices(p, "/v1/prices"),
    )
    crud(
        "/v1/customers",
        "customer",
        create=e.create_customer,
        update=e.update_customer,
        delete=e.delete_customer,
        lister=lambda c, p: e.list("customer", p, "/v1/customers", eq(p, "email")),
    )
    crud(
        "/v1/coupons",
        "coupon",
        create=e.create_coupon,
        update=e.update_coupon,
        delete=e.delete_coupon,
    )
    crud(
        "/v1/promotion_codes",
        "promotion_code",
        create=e.create_promotion_code,
        update=e.update_promotion_code,
        lister=lambda c, p: e.list(
            "promotion_code",
            p,
            "/v1/promotion_codes",
            lambda o: (
                (p.get("active") is None or o["active"] == p["active"])
                and (not p.get("code") or o["code"].lower() == p["code"].lower())
                and (not p.get("coupon") or o["promotion"]["coupon"] == p["coupon"])
                and (not p.get("customer") or o["customer"] == p["customer"])
            ),
        ),
    )
    # checkout
    cs = "/v1/checkout/sessions"
    add("POST", cs, "checkout.session.create", lambda c, p: e.create_checkout_session(p, c))
    add("GET", cs, "checkout.session.list", lambda c, p: e.list_checkout_sessions(p, cs))
    add("GET", cs + "/{id}", "checkout.session.retrieve", lambda c, p, id: e.session(id))
    add(
        "POST",
        cs + "/{id}",
        "checkout.session.update",
        lambda c, p, id: e.update_checkout_session(id, p, c),
    )
    add(
        "POST",
        cs + "/{id}/expire",
        "checkout.session.expire",
        lambda c, p, id: e.expire_checkout_session(id, c),
    )
    add(
        "GET",
        cs + "/{id}/line_items",
        "checkout.session.list_line_items",
        lambda c, p, id: e.list_line_items(id, p, f"{cs}/{id}/line_items"),
    )
    # payments
    crud(
        "/v1/payment_intents",
        "payment_intent",
        update=lambda id, p, c: e.update_metadata_fields(
            "payment_intent", id, p, ("description", "receipt_email"), c
        ),
        lister=lambda c, p: e.list("payment_intent", p, "/v1/payment_intents", eq(p, "customer")),
    )
    crud(
        "/v1/charges",
        "charge",
        update=lambda id, p, c: e.update_metadata_fields(
            "charge", id, p, ("description", "receipt_email"), c, "charge.updated"
        ),
        lister=lambda c, p: e.list("charge", p, "/v1/charges", eq(p, "customer", "payment_intent")),
    )
    crud(
        "/v1/refunds",
        "refund",
        create=e.create_refund,
        update=lambda id, p, c: e.update_metadata_fields("refund", id, p, (), c, "refund.updated"),
        lister=lambda c, p: e.list("refund", p, "/v1/refunds", eq(p, "charge", "payment_intent")),
    )
    crud(
        "/v1/disputes",
        "dispute",
        update=e.update_dispute,
        lister=lambda c, p: e.list("dispute", p, "/v1/disputes", eq(p, "charge", "payment_intent")),
    )
    add(
        "POST",
        "/v1/disputes/{id}/close",
        "dispute.close",
        lambda c, p, id: e.close_dispute(id, won=False, ctx=c),
    )
    add(
        "GET",
        "/v1/payment_methods/{id}",
        "payment_method.retrieve",
        lambda c, p, id: e.get("payment_method", id, "payment_method"),
    )
    add(
        "GET",
        "/v1/balance_transactions/{id}",
        "balance_transaction.retrieve",
        lambda c, p, id: e.get("balance_transaction", id),
    )
    # billing
    crud(
        "/v1/subscriptions",
        "subscription",
        update=e.update_subscription,
        lister=lambda c, p: e.list_subscriptions(p, "/v1/subscriptions"),
    )
    add(
        "DELETE",
        "/v1/subscriptions/{id}",
        "subscription.cancel",
        lambda c, p, id: e.cancel_subscription(id, p, c),
    )

    def invoice_match(p):
        def match(o):
            sub = (o["parent"].get("subscription_details") or {}).get("subscription")
            return (
                (not p.get("customer") or o["customer"] == p["customer"])
                and (not p.get("status") or o["status"] == p["status"])
                and (not p.get("subscription") or sub == p["subscription"])
            )

        return match

    crud(
        "/v1/invoices",
        "invoice",
        lister=lambda c, p: e.list("invoice", p, "/v1/invoices", invoice_match(p)),
    )
    add(
        "POST",
        "/v1/invoices/{id}/pay",
        "invoice.pay",
        lambda c, p, id: e.pay_invoice(id, p, c),
    )
    add(
        "GET",
        "/v1/invoices/{id}/lines",
        "invoice.list_lines",
        lambda c, p, id: e.list(
            "line_item",
            p,
            f"/v1/invoices/{id}/lines",
            items=list(e.get("invoice", id, "invoice")["lines"]["data"]),
        ),
    )
    crud(
        "/v1/invoice_payments",
        "invoice_payment",
        lister=lambda c, p: e.list(
            "invoice_payment",
            p,
            "/v1/invoice_payments",
            lambda o: not p.get("invoice") or o["invoice"] == p["invoice"],
        ),
    )
    add(
        "POST",
        "/v1/billing_portal/sessions",
        "billing_portal.session.create",
        lambda c, p: e.create_portal_session(p, c),
    )
    # events and webhook endpoints
    crud(
        "/v1/events",
        "event",
        lister=lambda c, p: e.list(
            "event",
            p,
            "/v1/events",
            lambda o: (
                (not p.get("type") or _type_match(o["type"], p["type"]))
                and (not p.get("types") or any(_type_match(o["type"], t) for t in p["types"]))
                and (
                    p.get("delivery_success") is None
                    or h.webhooks.delivery_succeeded(o["id"]) == p["delivery_success"]
                )
            ),
        ),
    )
    crud(
        "/v1/webhook_endpoints",
        "webhook_endpoint",
        create=h._api_create_endpoint,
        update=h._api_update_endpoint,
        delete=h._api_delete_endpoint,
    )
    return routes


def _type_match(event_type: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)


def _redact(key: str) -> str:
    if len(key) <= 12:
        return key[:3] + "*" * max(0, len(key) - 3)
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


class StandinHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handle: StripeStandin) -> None:
        self.handle = handle
        self.routes = _routes(handle)
        self.idem_lock = threading.Lock()
        self.idem: dict[tuple[str, str], dict[str, Any]] = {}
        self.idem_inflight: set[tuple[str, str]] = set()
        super().__init__(addr, _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stripe-standin/1.0"
    timeout = 120
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024  # headers and body leave in one write
    server: StandinHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.handle.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> str:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode("utf-8") if n else ""

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj, indent=2).encode(), "application/json", headers=headers)

    def _html(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, body.encode(), "text/html; charset=utf-8", headers)

    def _redirect(self, location: str) -> None:
        self._send(303, b"", "text/plain", {"Location": location})

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path, query = split.path, split.query
        body = self._body()
        try:
            if path.startswith("/v1/"):
                self._api(method, path, query, body)
            elif path.startswith("/_control/"):
                self._control(method, path, query, body)
            elif path.startswith("/pay/"):
                self._pay(method, path, body)
            elif path.startswith("/portal/"):
                self._portal(method, path, body)
            elif path.startswith(("/receipts/", "/invoice/")):
                self._document(path)
            elif path == "/":
                self._json(
                    200, {"stripe_standin": True, "api_version": self.server.handle.api_version}
                )
            else:
                self._json(
                    404,
                    {"error": {"message": f"Not found: {path}", "type": "invalid_request_error"}},
                )
        except BrokenPipeError:
            pass

    # ------------------------------------------------------------------ /v1
    def _auth(self) -> str:
        h = self.server.handle
        header = self.headers.get("Authorization") or ""
        key = ""
        if header.startswith("Bearer "):
            key = header[7:].strip()
        elif header.startswith("Basic "):
            import base64

            try:
                key = base64.b64decode(header[6:]).decode().split(":", 1)[0]
            except ValueError:
                key = ""
        if not key:
            raise StripeError(401, _NO_KEY)
        valid = key == h.api_key if h.strict_api_key else key.startswith(("sk_test_", "rk_test_"))
        if not valid:
            raise StripeError(401, f"Invalid API Key provided: {_redact(key)}")
        return key

    def _api(self, method: str, path: str, query: str, body: str) -> None:
        h = self.server.handle
        req_id = new_id("req")
        headers = {
            "Request-Id": req_id,
            "Stripe-Version": self.headers.get("Stripe-Version") or h.api_version,
            "Access-Control-Allow-Origin": "*",
        }
        idem = self.headers.get("Idempotency-Key") if method == "POST" else None
        if idem:
            headers["Idempotency-Key"] = idem
        try:
            api_key = self._auth()
            params = parse_form(query)
            if body:
                params.update(parse_form(body))
            route, args = self._route(method, path)
        except StripeError as err:
            self._json(err.status, err.body(req_id), {**headers, **err.headers})
            return
        if not idem:
            status, obj, _ = self._execute(route, args, params, Ctx(req_id, None))
            self._json(status, obj, headers)
            return
        key = (api_key, idem)
        fingerprint = json.dumps([method, path, params], sort_keys=True)
        srv = self.server
        with srv.idem_lock:
            cached = srv.idem.get(key)
            inflight = key in srv.idem_inflight
            if cached is None and not inflight:
                srv.idem_inflight.add(key)
        if cached is not None:
            if cached["fingerprint"] != fingerprint:
                err = StripeError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{idem}' if you meant to execute a different request.",
                    type="idempotency_error",
                )
                self._json(400, err.body(req_id), headers)
                return
            replay = {
                **headers,
                "Idempotent-Replayed": "true",
                "Original-Request": cached["request_id"],
            }
            self._json(cached["status"], cached["body"], replay)
            return
        if inflight:
            err = StripeError(
                409,
                "There is currently another in-progress request using this Idempotent Key "
                "(that probably means you submitted twice, and the other request is still "
                f"going through): {idem}. Please try again later.",
                type="idempotency_error",
            )
            self._json(409, err.body(req_id), headers)
            return
        save = False
        try:
            status, obj, save = self._execute(route, args, params, Ctx(req_id, idem))
            self._json(status, obj, {**headers, "Original-Request": req_id})
        finally:
            with srv.idem_lock:
                srv.idem_inflight.discard(key)
                if save:
                    srv.idem[key] = {
                        "fingerprint": fingerprint,
                        "status": status,
                        "body": obj,
                        "request_id": req_id,
                    }

    def _route(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        for r in self.server.routes:
            m = r.pattern.match(path)
            if m and r.method == method:
                return r, m.groupdict()
        raise StripeError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )

    def _execute(self, route: Route, args, params, ctx: Ctx) -> tuple[int, Any, bool]:
        """Run a request: (status, body, whether an idempotency key may save the result).

        Like Stripe, a result is saved only once the endpoint began executing, i.e. not
        for parameter validation errors.
        """
        h = self.server.handle
        try:
            p = validate(route.endpoint, params)
        except StripeError as err:
            return err.status, err.body(ctx.request_id), False
        try:
            obj = route.fn(ctx, p, **args)
            expand = p.get("expand") or []
            out = obj if obj.get("deleted") else h.engine.render(obj, expand)
            return 200, out, True
        except StripeError as err:
            return err.status, err.body(ctx.request_id), err.status < 500

    # ------------------------------------------------------------------ hosted checkout
    def _pay(self, method: str, path: str, body: str) -> None:
        e = self.server.handle.engine
        parts = path.strip("/").split("/")
        sid = parts[1] if len(parts) > 1 else ""
        try:
            session = e.session(sid)
        except StripeError:
            self._html(404, _page("Not found", "<p>No such Checkout Session.</p>"))
            return
        if method == "POST":
            form = dict(parse_qsl(body, keep_blank_values=True))
            outcome = form.get("outcome") or "paid"
            if outcome == "paid":
                refusal = card_refusal(form.get("card_number", ""))
                if refusal:
                    self._html(402, _checkout_page(e, session, error=refusal, form=form))
                    return
            try:
                session = self.server.handle.complete_checkout(
                    sid,
                    outcome=outcome,
                    promotion_code=form.get("promotion_code") or None,
                    email=form.get("email") or None,
                )
            except StripeError as err:
                self._html(400, _checkout_page(e, session, error=err.message, form=form))
                return
            if session.get("success_url"):
                self._redirect(session["success_url"].replace("{CHECKOUT_SESSION_ID}", sid))
            else:
                self._html(200, _page("Done", '<p id="done">Payment complete.</p>'))
            return
        self._html(200, _checkout_page(e, session))

    # ------------------------------------------------------------------ portal
    def _portal(self, method: str, path: str, body: str) -> None:
        h = self.server.handle
        e = h.engine
        parts = path.strip("/").split("/")
        bps = e.find("billing_portal.session", parts[1] if len(parts) > 1 else "")
        if bps is None:
            self._html(404, _page("Not found", "<p>No such portal session.</p>"))
            return
        if method == "POST" and len(parts) == 3 and parts[2] == "cancel":
            sub_id = dict(parse_qsl(body)).get("subscription", "")
            sub = e.find("subscription", sub_id)
            if sub is None or sub["customer"] != bps["customer"]:
                self._html(400, _page("Error", "<p>No such subscription.</p>"))
                return
            e.update_subscription(sub_id, {"cancel_at_period_end": True}, None)
            self._redirect(f"/portal/{bps['id']}")
            return
        subs = [
            s
            for s in e.db.get("subscription", {}).values()
            if s["customer"] == bps["customer"] and s["status"] != "canceled"
        ]
        rows = "".join(
            f'<li class="subscription" id="{s["id"]}">{html.escape(s["id"])}: {s["status"]}'
            + (
                " (cancels at period end)"
                if s["cancel_at_period_end"]
                else f'<form method="post" action="/portal/{bps["id"]}/cancel">'
                f'<input type="hidden" name="subscription" value="{s["id"]}">'
                f'<button type="submit">Cancel subscription</button></form>'
            )
            + "</li>"
            for s in subs
        )
        ret = bps.get("return_url")
        link = f'<p><a id="return" href="{html.escape(ret)}">Return</a></p>' if ret else ""
        self._html(200, _page("Billing portal", f"<ul>{rows}</ul>{link}"))

    def _document(self, path: str) -> None:
        ident = path.strip("/").split("/")[1]
        obj = self.server.handle.engine.lookup(ident)
        if obj is None:
            self._html(404, _page("Not found", "<p>Not found.</p>"))
            return
        amount = obj.get("amount") or obj.get("amount_due") or 0
        self._html(
            200,
            _page(
                "Receipt" if path.startswith("/receipts/") else "Invoice",
                f"<p>{html.escape(ident)}: {money(amount, obj['currency'])}</p>",
            ),
        )

    # ------------------------------------------------------------------ /_control
    def _control(self, method: str, path: str, query: str, body: str) -> None:
        from ._control import control

        try:
            data: dict[str, Any] = {}
            if body:
                ctype = self.headers.get("Content-Type") or ""
                data = json.loads(body) if "json" in ctype else dict(parse_qsl(body))
            data.update(dict(parse_qsl(query)))
            status, out = control(self.server.handle, method, path, data)
            self._json(status, out)
        except StripeError as err:
            self._json(err.status, err.body())
        except (KeyError, ValueError, TypeError) as err:
            self._json(400, invalid(str(err)).body())


def _page(title: str, content: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} · Stripe stand-in</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{content}</body></html>"
    )


# Stripe's test card numbers on the hosted page -> None (paid) or the message the buyer
# sees. Any other well-formed number is refused as Stripe's test mode refuses real cards.
TEST_CARDS: dict[str, str | None] = {
    "4242424242424242": None,
    "4000056655665556": None,
    "5555555555554444": None,
    "4000000000000002": "Your card was declined.",
    "4000000000009995": "Your card has insufficient funds.",
    "4000000000000069": "Your card has expired.",
    "4000000000000127": "Your card's security code is incorrect.",
}


def _luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_refusal(raw: str) -> str | None:
    """What the hosted page says about a card number, or None when the test card pays."""
    number = "".join(ch for ch in raw if not ch.isspace() and ch != "-")
    if not number:
        return "Your card number is incomplete."
    if not number.isdigit() or not 12 <= len(number) <= 19 or not _luhn_ok(number):
        return "Your card number is invalid."
    if number in TEST_CARDS:
        return TEST_CARDS[number]
    return (
        "Your card was declined. Your request was in test mode, but used a non test card. "
        "For a list of valid test cards, visit: https://stripe.com/docs/testing."
    )


def _checkout_page(
    engine, s: dict[str, Any], error: str | None = None, form: dict[str, str] | None = None
) -> str:
    items = engine.session_items.get(s["id"], [])
    rows = "".join(
        f"<tr class='line-item'><td>{html.escape(str(it['description']))}</td>"
        f"<td>{it['quantity']}</td><td>{money(it['amount_total'], it['currency'])}</td></tr>"
        for it in items
    )
    err = f'<p id="error" role="alert">{html.escape(error)}</p>' if error else ""
    if s["status"] != "open":
        return _page(
            "Checkout",
            f'{err}<p id="status">This Checkout Session is {html.escape(s["status"])}.</p>',
        )
    promo = (
        '<p><label>Promotion code <input name="promotion_code" id="promotion_code"></label></p>'
        if s.get("allow_promotion_codes")
        else ""
    )
    form = form or {}
    email = html.escape(form.get("email") or s.get("customer_email") or "")
    card = html.escape(form.get("card_number", ""))
    cancel = (
        f'<p><a id="cancel" href="{html.escape(s["cancel_url"])}">Cancel</a></p>'
        if s.get("cancel_url")
        else ""
    )
    return _page(
        "Checkout",
        f"{err}<p id='status'>open</p>"
        f"<table id='line-items'>{rows}</table>"
        f"<p id='total'>Total due today: {money(s['amount_total'], s['currency'])}</p>"
        f"<form method='post' action='/pay/{s['id']}'>"
        f'<p><label>Email <input name="email" id="email" type="email" value="{email}"></label></p>'
        "<fieldset><legend>Card (test mode: 4242 4242 4242 4242 pays, "
        "4000 0000 0000 0002 is declined)</legend>"
        f'<p><label>Card number <input name="card_number" id="card-number" value="{card}" '
        'inputmode="numeric" autocomplete="cc-number" placeholder="1234 1234 1234 1234">'
        "</label></p>"
        '<p><label>Expiry <input name="card_expiry" id="card-expiry" placeholder="MM / YY">'
        '</label> <label>CVC <input name="card_cvc" id="card-cvc" placeholder="CVC">'
        "</label></p></fieldset>"
        f"{promo}"
        '<button type="submit" name="outcome" value="paid" id="pay">Pay</button> '
        '<button type="submit" name="outcome" value="async_pending" id="pay-async">'
        "Pay by bank debit (settles later)</button>"
        "</form>"
        f"{cancel}",
    )
