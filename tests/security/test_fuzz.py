"""Property-based fuzzing (Hypothesis) of what strangers can send: the opt-in form, the
Stripe webhook, uploaded files that get stamped, and files handed to trace_leak. Whatever
arrives, the answer is never a 5xx and never a stack trace.

Derandomised with modest example counts: the same inputs every run, a few seconds each.
"""

import hashlib
import hmac
import io
import json
import math
import re
import time
import zipfile

import pytest
from django.core import signing
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from courses.models import LessonDownload
from funnels.forms import RENDERED_SALT
from media.exceptions import DeliveryError
from media.stamping.pdf import pdf_prepare
from media.stamping.trace import trace_bytes
from payments.models import StripeEvent
from tests.security.conftest import client_for
from tests.security.world import OPTIN_FORM_ID

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SITE = "http://testserver"
WEBHOOK_SECRET = "whsec_lodestone_security_suite_000000"

text = st.text(max_size=300)
OPTIN_FIELDS = [
    "email",
    "name",
    "consent",
    "time_zone",
    "website",
    "rendered_at",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "referrer",
]


def assert_handled(response) -> None:
    assert response.status_code < 500, response.content[:500]
    assert b"Traceback" not in response.content


@st.composite
def optin_forms(draw):
    fields = draw(st.dictionaries(st.sampled_from(OPTIN_FIELDS), text, max_size=12))
    if draw(st.booleans()):
        fields["rendered_at"] = signing.dumps(int(time.time()) - 60, salt=RENDERED_SALT)
    if draw(st.booleans()):
        fields["email"] = draw(st.emails())
    fields.update(draw(st.dictionaries(text, text, max_size=3)))
    return fields


@FUZZ
@given(form=optin_forms(), as_json=st.booleans())
def test_any_opt_in_form_gets_a_clear_answer(world, form, as_json):
    cache.clear()  # rate limits would otherwise answer everything after the tenth
    headers = {"HTTP_ACCEPT": "application/json"} if as_json else {}

    response = Client().post(
        f"/f/subscribe/{world.landing.pk}/{OPTIN_FORM_ID}/", form, HTTP_ORIGIN=SITE, **headers
    )

    assert_handled(response)


@FUZZ
@given(
    body=st.binary(max_size=2000),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "application/json",
            "application/x-www-form-urlencoded; charset=utf-16",
            "text/plain",
        ]
    ),
)
def test_any_opt_in_body_gets_a_clear_answer(world, body, content_type):
    cache.clear()

    # generic(): the bytes go out as they are (post() would re-encode them to the charset)
    response = Client().generic(
        "POST",
        f"/f/subscribe/{world.landing.pk}/{OPTIN_FORM_ID}/",
        body,
        content_type=content_type,
        HTTP_ORIGIN=SITE,
    )

    assert_handled(response)


# --- Stripe webhook ---------------------------------------------------------------------------


def stripe_signature(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


@pytest.fixture
def webhook_secret(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_security_suite"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET


@FUZZ
@given(body=st.binary(max_size=3000), header=st.none() | text)
def test_unsigned_or_badly_signed_webhooks_are_refused_cleanly(world, webhook_secret, body, header):
    extra = {} if header is None else {"HTTP_STRIPE_SIGNATURE": header}

    response = Client().generic(
        "POST", "/pay/stripe/webhook/", body, content_type="application/json", **extra
    )

    assert_handled(response)
    assert response.status_code == 400


# Anything JSON can carry, and what Python's json writes beyond it: NUL characters and lone
# surrogates in strings and keys (PostgreSQL's text and jsonb refuse both: stored as U+FFFD),
# NaN and Infinity (not JSON: refused with 400).
any_text = st.text(max_size=100)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats()
    | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)


def all_finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    return True


EVENT_TYPES = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "charge.refunded",
    "charge.dispute.created",
    "invoice.paid",
    "invoice.payment_failed",
    "customer.subscription.deleted",
]


@FUZZ
@given(
    event_id=st.from_regex(r"evt_[A-Za-z0-9]{1,30}", fullmatch=True) | any_text.map("evt_".__add__),
    event_type=st.sampled_from(EVENT_TYPES) | any_text,
    obj=st.dictionaries(
        st.sampled_from(["id", "object", "metadata", "payment_intent", "amount", "currency"])
        | any_text,
        json_values,
        max_size=6,
    ),
    top=st.dictionaries(st.sampled_from(["created", "api_version", "livemode"]), json_values),
)
def test_signed_webhooks_with_nonsense_inside_never_crash(
    world, webhook_secret, event_id, event_type, obj, top
):
    event = {"id": event_id, "object": "event", "type": event_type, "data": {"object": obj}}
    payload = json.dumps({**top, **event}).encode()

    response = Client().post(
        "/pay/stripe/webhook/",
        payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=stripe_signature(payload),
    )

    if not all_finite(top) or not all_finite(obj):
        # Not JSON, whatever Python writes: refused, nothing stored.
        assert response.status_code == 400, response.content[:500]
        assert "not standard JSON" in response.json()["error"]
        return
    # A genuine event we cannot process is stored and answered 500 on purpose, so that
    # Stripe retries it (payments/views.py); any other 5xx is a crash.
    if response.status_code == 500:
        assert response.json() == {"error": "Processing failed; the event is stored."}
    else:
        assert_handled(response)
    # Stored, with what PostgreSQL cannot hold replaced.
    stored = re.sub("[\x00\ud800-\udfff]", "\ufffd", event_id)
    assert StripeEvent.objects.filter(stripe_id=stored).exists(), response.content[:500]


# --- Uploads that get stamped -----------------------------------------------------------------

pdfish = st.one_of(
    st.binary(max_size=4000),
    st.binary(max_size=4000).map(lambda b: b"%PDF-1.7\n" + b),
    st.binary(max_size=2000).map(
        lambda b: b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n" + b + b"\n%%EOF\n"
    ),
)


@FUZZ
@given(data=pdfish)
def test_preparing_a_garbage_pdf_fails_with_a_message_for_the_creator(tmp_path_factory, data):
    base = tmp_path_factory.mktemp("base") / "base.pdf"

    try:
        pdf_prepare(io.BytesIO(data), base)
    except DeliveryError as problem:
        assert str(problem)


@settings(FUZZ, max_examples=15)
@given(data=pdfish)
def test_a_buyer_downloading_a_garbage_upload_gets_a_clear_answer(world, data):
    download = LessonDownload(
        lesson=world.tree.paid_lesson, title="Broken worksheet", kind=LessonDownload.Kind.PDF
    )
    download.file.save("broken.pdf", ContentFile(data), save=False)
    download.save()
    cache.clear()

    response = client_for(world, "buyer").get(f"/learn/download/{download.uuid}/")

    # Stamped and sent, or the designed answer for a file that cannot be stamped: 503
    # (media/downloads.py: the creator must replace it) with a page that says so.
    assert response.status_code in (200, 503), response.status_code
    assert b"Traceback" not in response.content
    if response.status_code == 503:
        assert b"PDF" in response.content or b"file" in response.content


# --- trace_leak --------------------------------------------------------------------------------


def _zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name or "x", content)
    return buffer.getvalue()


leaked = st.one_of(
    pdfish,
    st.binary(max_size=3000).map(lambda b: b"PK\x03\x04" + b),
    st.dictionaries(st.text(min_size=1, max_size=20), st.binary(max_size=500), max_size=4).map(
        _zip_of
    ),
)


@FUZZ
@given(data=leaked)
def test_trace_leak_reads_any_file_without_crashing(data):
    trace = trace_bytes(data)

    assert trace.sha256 == hashlib.sha256(data).hexdigest()


@settings(FUZZ, max_examples=20)
@given(data=leaked)
def test_the_trace_leak_command_answers_any_file_with_a_result_or_a_clear_error(
    world, tmp_path_factory, data
):
    path = tmp_path_factory.mktemp("leak") / "leaked.bin"
    path.write_bytes(data)
    out = io.StringIO()

    try:
        call_command("trace_leak", str(path), stdout=out)
    except CommandError as error:
        assert str(error)
    assert "Traceback" not in out.getvalue()
