"""Sending through Postmark's API with django-anymail's real backend, against a stand-in of
the API on loopback: marketing email (sequence steps, broadcasts) on the broadcast message
stream, transactional email on the default stream, and the API's errors told apart."""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.services import email_deliver, email_enqueue
from funnels.models import Broadcast, DripDelivery
from funnels.sequences import services

from .test_sequences_support import at, brand_install, confirmed, make_sequence, run_due

pytestmark = pytest.mark.django_db

TOKEN = "server-token-for-tests"


class PostmarkStandIn:
    """POST /email as Postmark answers it: the message's JSON is kept; a recipient listed in
    ``answers`` gets that (status, ErrorCode) the first time."""

    def __init__(self):
        self.received: list[dict] = []
        self.tokens: list[str] = []
        self.answers: dict[str, tuple[int, int]] = {}
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.tokens.append(self.headers.get("X-Postmark-Server-Token", ""))
                status, code = stand_in.answers.pop(body.get("To", ""), (200, 0))
                if status == 200 and self.path == "/email":
                    stand_in.received.append(body)
                    answer = {
                        "To": body["To"],
                        "SubmittedAt": "2026-03-02T10:00:00.0000000Z",
                        "MessageID": str(uuid.uuid4()),
                        "ErrorCode": 0,
                        "Message": "OK",
                    }
                else:
                    answer = {"ErrorCode": code or 500, "Message": "Refused by the stand-in."}
                data = json.dumps(answer).encode()
                self.send_response(status if self.path == "/email" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def streams(self) -> dict[str, str | None]:
        return {m["Subject"]: m.get("MessageStream") for m in self.received}


@pytest.fixture
def postmark(settings):
    stand_in = PostmarkStandIn()
    stand_in.thread.start()
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": TOKEN, "POSTMARK_API_URL": stand_in.url}
    settings.DRIP_WARMUP_PER_HOUR = 0
    brand_install()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


def test_sequence_and_broadcast_email_use_the_broadcast_stream_and_transactional_the_default(
    postmark, landing_page
):
    sequence = make_sequence(steps=[("content", 0, 0, "Welcome, {{ first_name }}", "Hi")])
    leila = confirmed("leila@lodestone-mail.fi")
    services.enrolment_start(
        sequence=sequence, subscriber=leila, source="admin", now=at("2026-03-02 10:00")
    )
    broadcast = Broadcast.objects.create(name="News", subject="Spring news", body="Hello.")
    services.broadcast_schedule(broadcast=broadcast, send_at=at("2026-03-02 10:00"))

    run_due(at("2026-03-02 10:00"))
    receipt = email_enqueue(
        to="leila@lodestone-mail.fi", subject="Your receipt", text_body="Thanks.", kind="test"
    )
    email_deliver(message=receipt)

    assert postmark.streams() == {
        "Welcome, Leila": "broadcast",
        "Spring news": "broadcast",
        "Your receipt": None,  # the server's default (transactional) stream
    }
    assert set(postmark.tokens) == {TOKEN}
    assert DripDelivery.objects.filter(status=DripDelivery.Status.SENT).count() == 2


def test_the_broadcast_stream_is_a_setting(postmark, landing_page, settings):
    settings.POSTMARK_BROADCAST_STREAM = "newsletters"
    broadcast = Broadcast.objects.create(name="News", subject="Spring news", body="Hello.")
    confirmed("leila@lodestone-mail.fi")
    services.broadcast_schedule(broadcast=broadcast, send_at=at("2026-03-02 10:00"))

    run_due(at("2026-03-02 10:00"))

    assert postmark.streams() == {"Spring news": "newsletters"}


def test_the_apis_trouble_is_retried_and_a_refused_address_fails_alone(postmark, landing_page):
    sequence = make_sequence(steps=[("content", 0, 0, "Hello {{ first_name }}", "Hi")])
    people = [confirmed(f"r{i}@lodestone-mail.fi", name=f"R{i}") for i in range(4)]
    for person in people:
        services.enrolment_start(
            sequence=sequence, subscriber=person, source="admin", now=at("2026-03-02 10:00")
        )
    postmark.answers = {
        "r1@lodestone-mail.fi": (503, 0),  # Postmark having trouble: try again later
        "r2@lodestone-mail.fi": (422, 300),  # "Invalid email request": never
    }

    [first] = run_due(at("2026-03-02 10:00"))

    assert (first.sent, first.deferred, first.failed) == (2, 1, 1)
    states = dict(DripDelivery.objects.values_list("subscriber__email", "status"))
    assert states["r1@lodestone-mail.fi"] == DripDelivery.Status.QUEUED
    assert states["r2@lodestone-mail.fi"] == DripDelivery.Status.FAILED
    run_due(at("2026-03-02 10:02"))
    sent = sorted(m["To"] for m in postmark.received)
    assert sent == ["r0@lodestone-mail.fi", "r1@lodestone-mail.fi", "r3@lodestone-mail.fi"]
