"""An in-process SMTP server that keeps what it receives, for tests to read."""

import email
import email.policy
import logging
import threading
from collections.abc import Callable
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from .ports import free_port


class SmtpSink:
    """Accepts every message; `wait_for` blocks until one matches (no polling sleeps)."""

    def __init__(self) -> None:
        self._messages: list[EmailMessage] = []
        self._arrived = threading.Condition()
        self._controller: Controller | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # aiosmtpd handler hook, called on the controller's thread.
    async def handle_DATA(self, server, session, envelope) -> str:
        wire = envelope.original_content or envelope.content
        # SMTP carries CRLF line ends; the email package works in "\n", so bodies read
        # back as the Python strings that were sent.
        message = email.message_from_bytes(
            wire.replace(b"\r\n", b"\n"), policy=email.policy.default
        )
        with self._arrived:
            self._messages.append(message)
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    @property
    def url(self) -> str:
        """For EMAIL_URL (django-environ)."""
        return f"smtp://{self.host}:{self.port}"

    @property
    def messages(self) -> list[EmailMessage]:
        with self._arrived:
            return list(self._messages)

    def matching(self, predicate: Callable[[EmailMessage], bool]) -> list[EmailMessage]:
        return [message for message in self.messages if predicate(message)]

    def wait_for(
        self, predicate: Callable[[EmailMessage], bool], *, timeout: float = 20
    ) -> EmailMessage:
        """The first received message matching `predicate`, waiting up to `timeout` s."""
        found: list[EmailMessage] = []

        def arrived() -> bool:
            found[:] = [message for message in self._messages if predicate(message)]
            return bool(found)

        with self._arrived:
            if not self._arrived.wait_for(arrived, timeout=timeout):
                subjects = [str(message["Subject"]) for message in self._messages]
                raise TimeoutError(
                    f"No matching message reached the SMTP sink within {timeout:g} s; "
                    f"it holds {len(subjects)}: {subjects}"
                )
        return found[0]

    def start(self) -> None:
        # aiosmtpd logs every SMTP command at INFO; that buries a failing test's output.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self.port = free_port()
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
