"""Mailchimp audience sync (on when MAILCHIMP_API_KEY and MAILCHIMP_AUDIENCE_ID are set).

Lodestone is the source of truth; Mailchimp mirrors each subscriber's status, name and
tags. Calls run from Celery tasks, never in a visitor's request.
"""

import hashlib
import json

from django.conf import settings
from mailchimp_marketing import Client
from mailchimp_marketing.api_client import ApiClientError

from .models import Subscriber

STATUS_MAP = {
    Subscriber.Status.PENDING: "pending",
    Subscriber.Status.CONFIRMED: "subscribed",
    Subscriber.Status.UNSUBSCRIBED: "unsubscribed",
    Subscriber.Status.BOUNCED: "cleaned",
    Subscriber.Status.COMPLAINED: "unsubscribed",
}
RETRYABLE_STATUSES = {408, 429, 500, 502, 503, 504}


class AudienceError(Exception):
    def __init__(self, message: str, *, status: int | None, retryable: bool):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


def enabled() -> bool:
    return bool(settings.MAILCHIMP_API_KEY and settings.MAILCHIMP_AUDIENCE_ID)


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def client() -> Client:
    api = Client()
    api.set_config(
        {
            "api_key": settings.MAILCHIMP_API_KEY,
            "server": settings.MAILCHIMP_SERVER_PREFIX,
            "timeout": settings.MAILCHIMP_TIMEOUT,
        }
    )
    if settings.MAILCHIMP_API_HOST:
        # The client builds its host from the server prefix; a self-hosted stand-in or proxy
        # replaces it whole.
        api.api_client.host = settings.MAILCHIMP_API_HOST.rstrip("/")
    return api


def _error(exc: Exception) -> AudienceError:
    # The official client wraps network errors too (timeouts, refused connections): an
    # ApiClientError whose status is None and whose text is the requests exception.
    if isinstance(exc, ApiClientError) and exc.status_code is not None:
        status = exc.status_code
        try:
            detail = json.loads(exc.text).get("detail", exc.text)
        except (TypeError, ValueError, AttributeError):
            detail = str(exc.text)
        return AudienceError(
            f"Mailchimp {status}: {detail}", status=status, retryable=status in RETRYABLE_STATUSES
        )
    # Network errors are transient.
    cause = exc.text if isinstance(exc, ApiClientError) else exc
    return AudienceError(f"Mailchimp unreachable: {cause!r}", status=None, retryable=True)


def member_body(subscriber: Subscriber) -> dict:
    first, _sep, last = subscriber.name.partition(" ")
    status = STATUS_MAP[subscriber.status]
    return {
        "email_address": subscriber.email,
        "status_if_new": status,
        "status": status,
        "merge_fields": {"FNAME": first, "LNAME": last},
        "timestamp_opt": subscriber.confirmed_at.isoformat() if subscriber.confirmed_at else "",
    }


def member_upsert(subscriber: Subscriber) -> None:
    api = client()
    list_id = settings.MAILCHIMP_AUDIENCE_ID
    member = subscriber_hash(subscriber.email)
    body = {k: v for k, v in member_body(subscriber).items() if v != ""}
    try:
        api.lists.set_list_member(list_id, member, body)
        tags = sorted(subscriber.tags.names())
        if tags:
            api.lists.update_list_member_tags(
                list_id, member, {"tags": [{"name": t, "status": "active"} for t in tags]}
            )
    except Exception as exc:
        raise _error(exc) from exc


def member_forget(email: str) -> None:
    try:
        client().lists.delete_list_member_permanent(
            settings.MAILCHIMP_AUDIENCE_ID, subscriber_hash(email)
        )
    except ApiClientError as exc:
        if exc.status_code == 404:
            return
        raise _error(exc) from exc
    except Exception as exc:
        raise _error(exc) from exc


def members_batch(subscribers: list[Subscriber]) -> str:
    """Upsert many members in one Mailchimp batch operation; returns the batch id."""
    list_id = settings.MAILCHIMP_AUDIENCE_ID
    operations = []
    for subscriber in subscribers:
        member = subscriber_hash(subscriber.email)
        body = {k: v for k, v in member_body(subscriber).items() if v != ""}
        operations.append(
            {
                "method": "PUT",
                "path": f"/lists/{list_id}/members/{member}",
                "operation_id": f"member-{subscriber.pk}",
                "body": json.dumps(body),
            }
        )
        # Through the prefetched tag links: tags.names() would query once per subscriber.
        tags = sorted(item.tag.name for item in subscriber.tagged_items.all())
        if tags:
            operations.append(
                {
                    "method": "POST",
                    "path": f"/lists/{list_id}/members/{member}/tags",
                    "operation_id": f"tags-{subscriber.pk}",
                    "body": json.dumps({"tags": [{"name": t, "status": "active"} for t in tags]}),
                }
            )
    try:
        return client().batches.start({"operations": operations})["id"]
    except Exception as exc:
        raise _error(exc) from exc
