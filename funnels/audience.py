"""Mailchimp audience sync (on when MAILCHIMP_API_KEY and MAILCHIMP_AUDIENCE_ID are set).

Lodestone is the source of truth; Mailchimp mirrors each subscriber's status, name and
tags. Calls run from Celery tasks, never in a visitor's request.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Case, F, JSONField, Q, Value, When
from django.db.models.expressions import RawSQL
from django.utils import timezone
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
# The outbox sweep (tasks.audience_requeue_stale): a change this old whose sync never ran
# was committed while the broker was down; the task queued on commit has had its chance.
SYNC_STALE_AFTER = timedelta(minutes=2)
# Older changes are a backfill, not an outage: `manage.py audience_sync` batches those.
SYNC_SWEEP_WINDOW = timedelta(days=3)


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


def subscriber_tag_names(subscriber: Subscriber) -> list[str]:
    """The subscriber's tag names, sorted; through the prefetched tag links when the caller
    prefetched ``tagged_items__tag`` (tags.names() would query once per subscriber)."""
    if "tagged_items" in getattr(subscriber, "_prefetched_objects_cache", {}):
        return sorted({item.tag.name for item in subscriber.tagged_items.all()})
    return sorted(subscriber.tags.names())


def member_tags_body(subscriber: Subscriber, tags: Sequence[str]) -> dict:
    """The tags call for ``tags``: each active, and inactive each name Lodestone sent
    before that the subscriber no longer has. Tags a creator set in Mailchimp itself were
    never sent, so they are left alone. Setting a tag the member lacks inactive is a no-op
    in Mailchimp, so sending the same body again is harmless."""
    removed = sorted(set(subscriber.audience_tags_sent or []) - set(tags))
    return {
        "tags": [{"name": t, "status": "active"} for t in tags]
        + [{"name": t, "status": "inactive"} for t in removed]
    }


def subscribers_mark_changed(*, subscriber_ids: Iterable[int]) -> int:
    """Record, in the caller's transaction, that Mailchimp's copy of these subscribers is
    out of date: the outbox row of a change (an admin edit of name or tags) whose sync is
    queued on commit. Should that publish fail (the broker down), the beat sweep finds the
    mark and queues the sync. A new change is a new attempt, so the error an older sync
    left no longer keeps the row from the sweep."""
    return Subscriber.objects.filter(pk__in=list(subscriber_ids)).update(
        audience_changed_at=timezone.now(), audience_sync_error=""
    )


def subscribers_mark_synced(
    *,
    subscribers: Iterable[Subscriber],
    tags_sent: Mapping[int, Sequence[str]] | None = None,
) -> int:
    """Stamp a successful sync on the rows sent, as they were read before sending.

    Compare-and-set on the change mark: a row edited while the sync was on its way (its
    mark is newer than, or appeared since, the one read) keeps its mark and stays due, so
    the newer edit is not taken for sent. Returns how many rows were stamped.

    ``tags_sent`` (subscriber id -> tag names sent active) becomes the remembered set of a
    stamped row. A row left due still had those names set in Mailchimp by this sync, so
    they are added to its remembered set: should the edit have removed one, the next
    sync sends it inactive."""
    subscribers = list(subscribers)
    if not subscribers:
        return 0
    as_sent = Q(
        pk__in=[s.pk for s in subscribers if s.audience_changed_at is None],
        audience_changed_at__isnull=True,
    )
    for subscriber in subscribers:
        if subscriber.audience_changed_at is not None:
            as_sent |= Q(pk=subscriber.pk, audience_changed_at=subscriber.audience_changed_at)
    sent = {pk: sorted(set(names)) for pk, names in (tags_sent or {}).items()}
    stamp = {
        "audience_synced_at": timezone.now(),
        "audience_sync_error": "",
        "audience_changed_at": None,
    }
    if sent:
        stamp["audience_tags_sent"] = Case(
            *(
                When(pk=pk, then=Value(names, output_field=JSONField()))
                for pk, names in sent.items()
            ),
            default=F("audience_tags_sent"),
            output_field=JSONField(),
        )
    stamped = Subscriber.objects.filter(as_sent).update(**stamp)
    if sent and stamped < len({s.pk for s in subscribers}):
        # Still marked: edited since read. One UPDATE each, merging in the database, so a
        # concurrent merge is not lost.
        superseded = Subscriber.objects.filter(
            pk__in=list(sent), audience_changed_at__isnull=False
        ).values_list("pk", flat=True)
        for pk in superseded:
            if connection.vendor != "postgresql":  # the SQLite demo: no concurrent syncs
                row = Subscriber.objects.get(pk=pk)
                merged = sorted({*row.audience_tags_sent, *sent[pk]})
                Subscriber.objects.filter(pk=pk).update(audience_tags_sent=merged)
                continue
            Subscriber.objects.filter(pk=pk).update(
                audience_tags_sent=RawSQL(
                    "SELECT COALESCE(jsonb_agg(DISTINCT sent.tag ORDER BY sent.tag), '[]')"
                    " FROM jsonb_array_elements_text(audience_tags_sent || %s::jsonb)"
                    " AS sent(tag)",
                    [json.dumps(sent[pk])],
                    output_field=JSONField(),
                )
            )
    return stamped


def subscribers_sync_due(*, now: datetime | None = None, limit: int = 1000) -> list[int]:
    """Subscribers whose change Mailchimp never heard of, changed between
    SYNC_SWEEP_WINDOW and SYNC_STALE_AFTER ago. The change itself is the outbox row:

    - confirm and unsubscribe stamp ``confirmed_at`` / ``unsubscribed_at`` in the
      transaction that queues the sync, and the sync stamps ``audience_synced_at``;
    - an admin edit (name, tags) sets ``audience_changed_at``, which only the sync that sent
      the edited row clears (subscribers_mark_synced).

    A sync that failed keeps its error for the creator (admin: Subscribers, Mailchimp
    filter) and is not retried here; a later edit clears the error and is swept again."""
    now = now or timezone.now()
    stale, oldest = now - SYNC_STALE_AFTER, now - SYNC_SWEEP_WINDOW
    # A change this recent still has its own on-commit task on the way.
    just_changed = (
        Q(confirmed_at__gte=stale)
        | Q(unsubscribed_at__gte=stale)
        | Q(audience_changed_at__gte=stale)
    )
    never_heard = (
        Q(audience_synced_at__isnull=True)
        | Q(confirmed_at__gt=F("audience_synced_at"))
        | Q(unsubscribed_at__gt=F("audience_synced_at"))
    )
    in_window = Q(confirmed_at__gte=oldest) | Q(unsubscribed_at__gte=oldest)
    status_changes = (
        Subscriber.objects.filter(
            never_heard,
            in_window,
            status__in=[Subscriber.Status.CONFIRMED, Subscriber.Status.UNSUBSCRIBED],
            audience_sync_error="",
        )
        .exclude(just_changed)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    # Its own query: the range on the mark reads the small partial index
    # funnels_subscriber_mc_due, whatever the size of the table. Pending subscribers
    # wait for their confirmation (upserted as pending, Mailchimp would send its own
    # confirmation email); its sync sends the edit too.
    edits = (
        Subscriber.objects.filter(
            audience_changed_at__gte=oldest,
            audience_changed_at__lt=stale,
            audience_sync_error="",
        )
        .exclude(status=Subscriber.Status.PENDING)
        .exclude(just_changed)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    return sorted({*status_changes, *edits})[:limit]


def member_upsert(subscriber: Subscriber) -> list[str]:
    """Upsert one member; returns the tag names sent active, for subscribers_mark_synced."""
    api = client()
    list_id = settings.MAILCHIMP_AUDIENCE_ID
    member = subscriber_hash(subscriber.email)
    body = {k: v for k, v in member_body(subscriber).items() if v != ""}
    try:
        api.lists.set_list_member(list_id, member, body)
        tags = subscriber_tag_names(subscriber)
        tags_body = member_tags_body(subscriber, tags)
        if tags_body["tags"]:
            api.lists.update_list_member_tags(list_id, member, tags_body)
    except Exception as exc:
        raise _error(exc) from exc
    return tags


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
    """Upsert many members in one Mailchimp batch operation; returns the batch id.

    Prefetch ``tagged_items__tag``: the tags sent are then subscriber_tag_names(s) of the
    very instances passed, which the caller hands to subscribers_mark_synced."""
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
        tags_body = member_tags_body(subscriber, subscriber_tag_names(subscriber))
        if tags_body["tags"]:
            operations.append(
                {
                    "method": "POST",
                    "path": f"/lists/{list_id}/members/{member}/tags",
                    "operation_id": f"tags-{subscriber.pk}",
                    "body": json.dumps(tags_body),
                }
            )
    try:
        return client().batches.start({"operations": operations})["id"]
    except Exception as exc:
        raise _error(exc) from exc
