"""A local stand-in for the Mailchimp Marketing API v3.0, for tests. See README.md."""

from .server import (
    MailchimpStandin,
    RecordedRequest,
    configured_client,
    start_mailchimp_standin,
)
from .state import subscriber_hash

__all__ = [
    "MailchimpStandin",
    "RecordedRequest",
    "configured_client",
    "start_mailchimp_standin",
    "subscriber_hash",
]
