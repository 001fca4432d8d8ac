"""Writes for the funnel: sign-up, confirmation, delivery, unsubscribe, erasure.

Every function stores what the visitor gave us before anything downstream (email,
Mailchimp) can fail; those run from the outbox and Celery after the commit.
"""

import functools
import hashlib
import secrets
import unicodedata
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Lower
from django.http import HttpResponseBase
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from core.models import OutboundEmail
from core.services import brand_settings, email_enqueue

from . import exceptions
from .models import (
    ConsentRecord,
    LandingPage,
    LeadMagnet,
    MagnetDelivery,
    PageVisitDay,
    SignUp,
    Subscriber,
    SubscriberToken,
    Suppression,
    Touch,
)
from .selectors import OptInFormSpec, optin_form_specs_of
from .sequences import services as sequences

CONFIRM_TOKEN_LIFETIME = timedelta(days=7)
DOWNLOAD_LINK_MAX_AGE = timedelta(days=30)
LINK_SALT = "lodestone.funnels.link"
MAX_NAME_LENGTH = 150


@dataclass(frozen=True)
class Attribution:
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_term: str = ""
    utm_content: str = ""
    referrer: str = ""


@dataclass(frozen=True)
class Visitor:
    ip_address: str | None = None
    user_agent: str = ""
    time_zone: str = ""


@dataclass
class OptInOutcome:
    subscriber: Subscriber
    emails: list[str] = field(default_factory=list)  # kinds queued, for the caller's log


# --- Addresses -------------------------------------------------------------------------


def normalize_email(raw: str) -> str:
    """The one canonical form: trimmed, Unicode NFC, lower-cased, validated (IDN allowed)."""
    email = unicodedata.normalize("NFC", (raw or "").strip()).lower()
    if not email or len(email) > 254:
        raise exceptions.InvalidEmail()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise exceptions.InvalidEmail() from exc
    return email


def email_hash(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def is_suppressed(email: str) -> bool:
    return Suppression.objects.filter(email_hash=email_hash(email)).exists()


@functools.cache
def _time_zone_names() -> frozenset[str]:
    # zoneinfo walks the whole tz database on disk on every call (a third of a drain's
    # time per sign-up went there); the database changes only with a package upgrade.
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def clean_time_zone(value: str) -> str:
    value = (value or "").strip()
    if value and value in _time_zone_names():
        return value
    return brand_settings().default_time_zone or settings.TIME_ZONE


# --- Links ---------------------------------------------------------------------------------


def signed_link(view_name: str, payload: dict, *, absolute: bool = True) -> str:
    """A link carrying a signed payload; absolute for emails, a path for our own pages."""
    token = signing.dumps(payload, salt=f"{LINK_SALT}:{view_name}", compress=True)
    path = reverse(view_name, kwargs={"token": token})
    return settings.SITE_URL + path if absolute else path


def open_signed_link(view_name: str, token: str, *, max_age: timedelta | None = None) -> dict:
    try:
        return signing.loads(
            token,
            salt=f"{LINK_SALT}:{view_name}",
            max_age=max_age.total_seconds() if max_age else None,
        )
    except signing.SignatureExpired as exc:
        raise exceptions.TokenExpired(
            "This download link has expired. Sign up again on the same page to get a fresh one."
        ) from exc
    except signing.BadSignature as exc:
        raise exceptions.TokenInvalid() from exc


def unsubscribe_url(subscriber: Subscriber) -> str:
    return signed_link(
        "funnels:unsubscribe", {"s": subscriber.pk, "e": email_hash(subscriber.email)[:16]}
    )


def manage_url(subscriber: Subscriber) -> str:
    return signed_link(
        "funnels:my_data", {"s": subscriber.pk, "e": email_hash(subscriber.email)[:16]}
    )


def subscriber_from_link(view_name: str, token: str) -> Subscriber:
    """The subscriber a long-lived link names; the email hash stops a link from surviving erasure
    and re-creation of the same id."""
    data = open_signed_link(view_name, token)
    subscriber = Subscriber.objects.filter(pk=data.get("s")).first()
    if subscriber is None or email_hash(subscriber.email)[:16] != data.get("e"):
        raise exceptions.TokenInvalid(
            "This link no longer works: the subscription it belonged to is gone."
        )
    return subscriber


# --- Emails -------------------------------------------------------------------------------


def _footer_context(subscriber: Subscriber) -> dict:
    brand = brand_settings()
    return {
        "brand": brand,
        "subscriber": subscriber,
        "unsubscribe_url": unsubscribe_url(subscriber),
        "manage_url": manage_url(subscriber),
    }


def _list_headers(subscriber: Subscriber) -> dict[str, str]:
    url = unsubscribe_url(subscriber)
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def _confirmation_email(subscriber: Subscriber, token: str, magnet: LeadMagnet | None) -> None:
    context = {
        **_footer_context(subscriber),
        "confirm_url": settings.SITE_URL + reverse("funnels:confirm", kwargs={"token": token}),
        "magnet": magnet,
        "expires_days": CONFIRM_TOKEN_LIFETIME.days,
    }
    email_enqueue(
        to=subscriber.email,
        subject=render_to_string("funnels/email/confirm_subject.txt", context).strip(),
        text_body=render_to_string("funnels/email/confirm.txt", context),
        html_body=render_to_string("funnels/email/confirm.html", context),
        kind="funnels:confirm",
    )


def _fill(template: str, **values: str) -> str:
    # str.format_map with a forgiving dict: a creator's typo in a placeholder stays visible
    # as written instead of raising.
    class Forgiving(dict):
        def __missing__(self, key):
            return "{" + key + "}"

    try:
        return template.format_map(Forgiving(values))
    except (ValueError, IndexError):
        return template


def magnet_download_url(
    subscriber: Subscriber, magnet: LeadMagnet, *, absolute: bool = True
) -> str:
    return signed_link(
        "funnels:download",
        {"s": subscriber.pk, "m": magnet.pk, "e": email_hash(subscriber.email)[:16]},
        absolute=absolute,
    )


def magnet_send(*, subscriber: Subscriber, magnet: LeadMagnet) -> None:
    """Queue the delivery email of a magnet to a confirmed subscriber."""
    download_url = magnet_download_url(subscriber, magnet)
    values = {
        "first_name": subscriber.first_name or "there",
        "title": magnet.title,
        "download_url": download_url,
    }
    context = {
        **_footer_context(subscriber),
        "magnet": magnet,
        "body": _fill(magnet.delivery_body, **values),
        "download_url": download_url,
    }
    email_enqueue(
        to=subscriber.email,
        subject=_fill(magnet.delivery_subject, **values),
        text_body=render_to_string("funnels/email/delivery.txt", context),
        html_body=render_to_string("funnels/email/delivery.html", context),
        kind="funnels:delivery",
        headers=_list_headers(subscriber),
    )


# --- Sign-up ------------------------------------------------------------------------------


def _subscriber_get_or_create_locked(
    *, email: str, name: str, time_zone: str
) -> tuple[Subscriber, bool]:
    """The subscriber row for an address, locked for this transaction; safe under races."""
    existing = Subscriber.objects.select_for_update().filter(email__iexact=email).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            return Subscriber.objects.create(email=email, name=name, time_zone=time_zone), True
    except IntegrityError:
        # A concurrent request created it between our read and our insert.
        return Subscriber.objects.select_for_update().get(email__iexact=email), False


def _confirm_token(
    *, subscriber: Subscriber, landing_page: LandingPage | None, magnet: LeadMagnet | None
) -> tuple[str, SubscriberToken]:
    token = secrets.token_urlsafe(32)
    return token, SubscriberToken(
        subscriber=subscriber,
        purpose=SubscriberToken.Purpose.CONFIRM,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        landing_page=landing_page,
        magnet=magnet,
        expires_at=timezone.now() + CONFIRM_TOKEN_LIFETIME,
    )


def confirm_token_issue(
    *, subscriber: Subscriber, landing_page: LandingPage | None, magnet: LeadMagnet | None
) -> str:
    """A fresh double opt-in token for the confirmation link; only its hash is stored."""
    token, row = _confirm_token(subscriber=subscriber, landing_page=landing_page, magnet=magnet)
    row.save(force_insert=True)
    return token


def _tags_from(value: str) -> list[str]:
    return [tag.strip()[:100] for tag in (value or "").split(",") if tag.strip()]


# A second identical sign-up this soon after the first (a double click, a browser retry, two
# tabs) is stored and recorded on the ledger, but sends no second email.
DUPLICATE_WINDOW = timedelta(minutes=2)
# Sign-ups still waiting this long were never queued (broker down) or their message was
# lost: the beat sweep queues them again.
SIGNUP_STALE_AFTER = timedelta(minutes=2)
# On a shared cache (Redis) a burst of sign-ups queues one drain task, not a broker message
# per sign-up (the message cost a quarter of the request): the first sign-up after the last
# drain started sets the wake key and queues a drain; the drain clears the key before it
# reads what waits, so whatever commits after that read sets the key again.
SIGNUP_WAKE_KEY = "funnels:signups:wake"
SIGNUP_WAKE_TTL = 30  # a lost drain message stops blocking wakes after this (and the sweep)
SIGNUP_DRAIN_BATCH = 50


def signup_dedupe_key(*, email: str, page_id: int, form_id: str, rendered_at: str) -> str | None:
    """The same form render posted twice with the same address within ten minutes."""
    if not rendered_at:
        return None
    bucket = int(timezone.now().timestamp() // 600)
    raw = f"{normalize_email(email)}|{page_id}|{form_id}|{rendered_at}|{bucket}"
    return hashlib.sha256(raw.encode()).hexdigest()


def signup_receive(
    *,
    spec: OptInFormSpec,
    email: str,
    name: str,
    consent: bool,
    visitor: Visitor,
    attribution: Attribution,
    dedupe_key: str | None = None,
    queue: bool = True,
) -> SignUp | None:
    """Check what the visitor can fix, store the sign-up in one INSERT, queue its processing.

    Returns None when the same submission was already stored (the database's unique key
    refused the copy); the caller answers it like the first.
    """
    if spec.magnet_id is None:
        raise exceptions.FormNotFound()
    email = normalize_email(email)
    if not consent:
        raise exceptions.ConsentMissing()
    signup = SignUp(
        email=email,
        name=" ".join((name or "").split())[:MAX_NAME_LENGTH],
        time_zone=(visitor.time_zone or "")[:64],
        landing_page_id=spec.page_id,
        form_id=spec.form_id[:64],
        form_version=spec.form_version[:64],
        page_url=spec.page_url[:500],
        magnet_id=spec.magnet_id,
        consent_text=spec.consent_text,
        double_opt_in=spec.double_opt_in,
        tags=spec.tags[:500],
        ip_address=visitor.ip_address,
        user_agent=(visitor.user_agent or "")[:500],
        dedupe_key=dedupe_key,
        **{
            k: (getattr(attribution, k) or "")[: 1000 if k == "referrer" else 200]
            for k in Attribution.__dataclass_fields__
        },
    )
    try:
        if transaction.get_connection().in_atomic_block:
            with transaction.atomic():
                signup.save(force_insert=True)
        else:
            # The opt-in view runs outside ATOMIC_REQUESTS: one statement, committed at once.
            signup.save(force_insert=True)
    except IntegrityError:
        if dedupe_key and SignUp.objects.filter(dedupe_key=dedupe_key).exists():
            return None
        raise
    if queue:
        transaction.on_commit(lambda: signup_wake(signup.pk))
    return signup


def _wake_cache():
    """The cache the wake key lives on, if every web and worker process shares it."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    cache = caches["default"]
    return cache if isinstance(cache, RedisCache) else None


def signup_wake(signup_id: int) -> None:
    """After a sign-up commits: make sure a worker will process it.

    Never raises: with the broker or Redis down the row waits for the sweep."""
    from .tasks_signups import signup_drain_task, signup_process_task

    cache = _wake_cache()
    if cache is None:  # no shared cache (development, tests): one message per sign-up
        signup_process_task.delay_or_log(signup_id)
    elif cache.add(SIGNUP_WAKE_KEY, signup_id, timeout=SIGNUP_WAKE_TTL):
        signup_drain_task.delay_or_log()


def signup_wake_clear() -> None:
    cache = _wake_cache()
    if cache is not None:
        cache.delete(SIGNUP_WAKE_KEY)


def signups_waiting(*, after_id: int = 0, limit: int = SIGNUP_DRAIN_BATCH) -> list[int]:
    """Ids of sign-ups still to process, oldest first, after `after_id`."""
    return list(
        SignUp.objects.filter(status=SignUp.Status.RECEIVED, pk__gt=after_id)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def signup_process(*, signup_id: int, skip_busy: bool = False) -> str:
    """Turn a stored sign-up into subscriber, touch, consent, tags and email. Idempotent:
    the row is locked and processed once; a second run finds it done and does nothing.
    With `skip_busy` a row another worker is processing right now is left to it ("busy").

    A problem no retry can fix (the magnet was deleted) marks the sign-up failed for the
    creator to see; database trouble propagates, and the task retries.
    """
    outcome = _signup_process(signup_id=signup_id, skip_busy=skip_busy)
    return outcome if isinstance(outcome, str) else ",".join(outcome.emails) or "none"


@transaction.atomic
def _signup_process(*, signup_id: int, skip_busy: bool = False) -> OptInOutcome | str:
    rows = SignUp.objects.select_for_update(skip_locked=skip_busy).filter(pk=signup_id)
    signup = rows.first()
    if signup is None:
        return "busy" if skip_busy and SignUp.objects.filter(pk=signup_id).exists() else "gone"
    if signup.status != SignUp.Status.RECEIVED:
        return f"already {signup.status}"
    try:
        with transaction.atomic():
            outcome = _signup_apply(signup)
    except exceptions.FunnelError as error:
        _signup_settle(signup, error=error.message)
        signup.save(update_fields=SIGNUP_RESULT_FIELDS)
        return "failed"
    _signup_settle(signup, outcome=outcome)
    signup.save(update_fields=SIGNUP_RESULT_FIELDS)
    return outcome


# What processing writes on a sign-up row, one at a time or for a drain's batch.
SIGNUP_RESULT_FIELDS = ["status", "subscriber", "outcome", "last_error", "attempts", "processed_at"]


def _signup_settle(signup: SignUp, *, outcome: OptInOutcome | None = None, error: str = "") -> None:
    """Set the row's result of this attempt (not saved): processed with its outcome, or
    failed with what the creator sees."""
    signup.attempts += 1
    signup.processed_at = timezone.now()
    if outcome is None:
        signup.status, signup.last_error = SignUp.Status.FAILED, error
        return
    signup.status = SignUp.Status.PROCESSED
    signup.subscriber = outcome.subscriber
    signup.outcome = (",".join(outcome.emails) or "none")[:32]
    signup.last_error = ""


def signup_record_failure(*, signup_id: int, error: str, final: bool) -> None:
    """A processing attempt failed on something transient; final after the last retry."""
    changes = {"last_error": error[:2000], "attempts": F("attempts") + 1}
    if final:
        changes["status"] = SignUp.Status.FAILED
    SignUp.objects.filter(pk=signup_id, status=SignUp.Status.RECEIVED).update(**changes)


def signup_retry(*, signup_id: int) -> bool:
    """The creator asks for a failed sign-up to be processed again."""
    from .tasks_signups import signup_process_task

    updated = SignUp.objects.filter(pk=signup_id, status=SignUp.Status.FAILED).update(
        status=SignUp.Status.RECEIVED, last_error=""
    )
    if updated:
        signup_process_task.delay_on_commit(signup_id)
    return bool(updated)


def signup_requeue_stale(*, now=None) -> int:
    """Queue again sign-ups committed but never processed: the broker was down when they
    were stored, or their message died with it. ``now`` lets a drill run it as of later.

    With a shared cache one drain is queued, whatever the number: it reads every waiting
    sign-up in batches across the workers (a launch backlog older than the stale age would
    otherwise be queued again row by row beside the drains already at work). Returns how
    many stale sign-ups the queued work covers."""
    from .tasks_signups import signup_drain_task, signup_process_task

    now = now or timezone.now()
    stale = list(
        SignUp.objects.filter(
            status=SignUp.Status.RECEIVED, created_at__lt=now - SIGNUP_STALE_AFTER
        )
        .order_by("created_at")
        .values_list("pk", flat=True)[:2000]
    )
    if stale and _wake_cache() is not None:
        return len(stale) if signup_drain_task.requeue([0]) else 0
    return signup_process_task.requeue(stale)


MAGNET_GONE = "The lead magnet of this form was deleted."


def _signup_apply(signup: SignUp) -> OptInOutcome:
    """One sign-up on its own (its task, optin_submit): read and written as it goes."""
    landing_page = LandingPage.objects.filter(pk=signup.landing_page_id).first()
    magnet = LeadMagnet.objects.filter(pk=signup.magnet_id).first() if signup.magnet_id else None
    if magnet is None:
        raise exceptions.FormNotFound(MAGNET_GONE)
    subscriber, _created = _subscriber_get_or_create_locked(
        email=signup.email, name=signup.name, time_zone=clean_time_zone(signup.time_zone)
    )
    return _signup_record(
        signup,
        landing_page=landing_page,
        magnet=magnet,
        subscriber=subscriber,
        writer=_SignupWriter(),
    )


def _has_first_touch(subscriber: Subscriber) -> bool:
    # Without reading the touch row: only whether there is one (or one set in this batch).
    if subscriber.first_touch_id is not None:
        return True
    return Subscriber.first_touch.is_cached(subscriber) and subscriber.first_touch is not None


def _signup_record(
    signup: SignUp,
    *,
    landing_page: LandingPage | None,
    magnet: LeadMagnet,
    subscriber: Subscriber,
    writer: "_SignupWriter",
) -> OptInOutcome:
    """What a sign-up does to its (locked) subscriber: touch, consent, tags, and the one
    email it is owed. The rules live here once; `writer` decides whether the writes go out
    one by one or with the rest of a drain's batch."""
    email = signup.email
    visitor = Visitor(
        ip_address=signup.ip_address, user_agent=signup.user_agent, time_zone=signup.time_zone
    )
    if signup.name and not subscriber.name:
        subscriber.name = signup.name
    if visitor.time_zone:
        # (A subscriber created for this very sign-up already has this value.)
        subscriber.time_zone = clean_time_zone(visitor.time_zone)

    touch = Touch(
        subscriber=subscriber,
        landing_page=landing_page,
        form_id=signup.form_id,
        created_at=signup.created_at,
        **{k: getattr(signup, k) for k in Attribution.__dataclass_fields__},
    )
    writer.touch_add(touch)
    if not _has_first_touch(subscriber):
        subscriber.first_touch = touch
    subscriber.last_touch = touch
    writer.subscriber_save(subscriber)
    if tags := _tags_from(signup.tags):
        writer.tags_add(subscriber, tags)

    writer.consent_add(
        ConsentRecord(
            subscriber=subscriber,
            action=ConsentRecord.Action.GRANTED,
            email=email,
            consent_text=signup.consent_text,
            landing_page_id=signup.landing_page_id,
            page_url=signup.page_url,
            form_id=signup.form_id,
            form_version=signup.form_version,
            ip_address=visitor.ip_address,
            user_agent=visitor.user_agent,
            # Consent was given when the visitor posted, not when a worker got to it.
            created_at=signup.created_at,
        )
    )
    # A fresh, explicit consent lifts an earlier erasure's suppression.
    writer.suppression_lift(email)

    outcome = OptInOutcome(subscriber=subscriber)
    recent = signup.created_at - DUPLICATE_WINDOW
    if subscriber.status == Subscriber.Status.CONFIRMED:
        # Already confirmed elsewhere: this form's sequence (and tags) still apply.
        writer.flush()
        sequences.enrol_on_confirm(
            subscriber=subscriber, landing_page=landing_page, form_id=signup.form_id
        )
        if not writer.delivery_sent(
            subscriber=subscriber, magnet=magnet, since=recent, signup=signup
        ):
            magnet_send(subscriber=subscriber, magnet=magnet)
            outcome.emails.append("delivery")
    elif subscriber.status == Subscriber.Status.PENDING and not signup.double_opt_in:
        writer.flush()
        _confirm(
            subscriber=subscriber,
            landing_page=landing_page,
            form_id=signup.form_id,
            visitor=visitor,
        )
        magnet_send(subscriber=subscriber, magnet=magnet)
        outcome.emails.append("delivery")
    else:
        # New, pending, or someone who left: they confirm by email before anything else —
        # once, however many times the same form was sent in the same moment. The
        # subscriber row is locked, so racing sign-ups of one address see each other here.
        pending_token = writer.confirm_pending(subscriber=subscriber, magnet=magnet, since=recent)
        if not pending_token or subscriber.status != Subscriber.Status.PENDING:
            token = writer.confirm_token_issue(
                subscriber=subscriber, landing_page=landing_page, magnet=magnet
            )
            _confirmation_email(subscriber, token, magnet)
            outcome.emails.append("confirm")
    return outcome


def _signup_needs_writes_at_once(signup: SignUp, subscriber: Subscriber) -> bool:
    """Confirmed, or confirmed by this very sign-up: sequences and tag enrolments read
    what was written before them, so such a sign-up runs on its own within a batch."""
    return subscriber.status == Subscriber.Status.CONFIRMED or (
        subscriber.status == Subscriber.Status.PENDING and not signup.double_opt_in
    )


class _SignupWriter:
    """Where _signup_record's writes go. On its own (`defer` off) each is written at once.
    In a drain's batch they wait and each kind goes out in one statement (flush): the
    batch's subscribers are locked before the first sign-up is looked at, so nothing
    another transaction does falls between a sign-up's reads and those writes."""

    def __init__(self, *, defer: bool = False, unused_tokens: dict | None = None):
        self.defer = defer
        # subscriber id -> [(magnet id, created_at)] of unused confirmation tokens: read
        # once for a batch, plus those it issues. None: ask the database each time.
        self.unused_tokens = unused_tokens
        # (subscriber id, magnet id, sign-up created_at) of deliveries sent in the batch,
        # whose sign-up rows are written only at its end.
        self.deliveries: list[tuple] = []
        self._touches: list[Touch] = []
        self._subscribers: dict[int, Subscriber] = {}
        self._tags: list[tuple[Subscriber, list[str]]] = []
        self._consents: list[ConsentRecord] = []
        self._suppressed: set[str] = set()
        self._tokens: list[SubscriberToken] = []

    def touch_add(self, touch: Touch) -> None:
        if self.defer:
            self._touches.append(touch)
        else:
            touch.save(force_insert=True)

    def subscriber_save(self, subscriber: Subscriber) -> None:
        if self.defer:
            self._subscribers[subscriber.pk] = subscriber
        else:
            subscriber.save(update_fields=SUBSCRIBER_SIGNUP_FIELDS)

    def tags_add(self, subscriber: Subscriber, tags: list[str]) -> None:
        if self.defer and subscriber.status != Subscriber.Status.CONFIRMED:
            self._tags.append((subscriber, tags))
        else:
            # A confirmed subscriber's new tags enrol them (funnels.sequences.receivers).
            self.flush()
            subscriber.tags.add(*tags)

    def consent_add(self, record: ConsentRecord) -> None:
        if self.defer:
            self._consents.append(record)
        else:
            record.save(force_insert=True)

    def suppression_lift(self, email: str) -> None:
        if self.defer:
            self._suppressed.add(email_hash(email))
        else:
            Suppression.objects.filter(email_hash=email_hash(email)).delete()

    def confirm_pending(self, *, subscriber: Subscriber, magnet: LeadMagnet, since) -> bool:
        if self.unused_tokens is None:
            return SubscriberToken.objects.filter(
                subscriber=subscriber,
                purpose=SubscriberToken.Purpose.CONFIRM,
                magnet=magnet,
                used_at__isnull=True,
                created_at__gte=since,
            ).exists()
        return any(
            magnet_id == magnet.pk and created_at >= since
            for magnet_id, created_at in self.unused_tokens.get(subscriber.pk, ())
        )

    def confirm_token_issue(
        self, *, subscriber: Subscriber, landing_page: LandingPage | None, magnet: LeadMagnet
    ) -> str:
        token, row = _confirm_token(subscriber=subscriber, landing_page=landing_page, magnet=magnet)
        if self.defer:
            self._tokens.append(row)
        else:
            row.save(force_insert=True)
        if self.unused_tokens is not None:
            self.unused_tokens.setdefault(subscriber.pk, []).append((magnet.pk, row.created_at))
        return token

    def delivery_sent(
        self, *, subscriber: Subscriber, magnet: LeadMagnet, since, signup: SignUp
    ) -> bool:
        in_batch = any(
            (subscriber_id, magnet_id) == (subscriber.pk, magnet.pk) and created_at >= since
            for subscriber_id, magnet_id, created_at in self.deliveries
        )
        return (
            in_batch
            or SignUp.objects.filter(
                subscriber=subscriber,
                magnet_id=magnet.pk,
                outcome="delivery",
                created_at__gte=since,
            )
            .exclude(pk=signup.pk)
            .exists()
        )

    def flush(self) -> None:
        """Write what waits, in an order the foreign keys accept."""
        if self._touches:
            Touch.objects.bulk_create(self._touches)
            self._touches = []
        if self._subscribers:
            for subscriber in self._subscribers.values():
                # The touches have their ids now: assigned again, the ids are taken.
                subscriber.first_touch = subscriber.first_touch
                subscriber.last_touch = subscriber.last_touch
            _rows_update(Subscriber, self._subscribers.values(), SUBSCRIBER_SIGNUP_FIELDS)
            self._subscribers = {}
        if self._tags:
            _subscriber_tags_add_many(self._tags)
            self._tags = []
        if self._consents:
            ConsentRecord.objects.bulk_create(self._consents)
            self._consents = []
        if self._suppressed:
            Suppression.objects.filter(email_hash__in=self._suppressed).delete()
            self._suppressed = set()
        if self._tokens:
            SubscriberToken.objects.bulk_create(self._tokens)
            self._tokens = []


SUBSCRIBER_SIGNUP_FIELDS = ["name", "time_zone", "first_touch", "last_touch"]


def _rows_update(model, objs, field_names: list[str]) -> None:
    """model.objects.bulk_update(objs, field_names) as one UPDATE … FROM unnest(arrays):
    bulk_update builds a CASE per row and field, which cost a drain more time than the
    rest of its queries together."""
    objs = list(objs)
    if not objs:
        return
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":  # the SQLite demo
        model.objects.bulk_update(objs, field_names)
        return
    opts = model._meta
    fields = [opts.pk, *(opts.get_field(name) for name in field_names)]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in fields[1:])
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
    columns = ", ".join(quote(f.column) for f in fields)
    values = [
        [f.get_db_prep_save(getattr(obj, f.attname), connection) for obj in objs] for f in fields
    ]
    # Names from the model's own metadata, quoted; every value is a parameter.
    sql = (
        f"UPDATE {quote(opts.db_table)} AS t SET {assignments}"  # noqa: S608
        f" FROM unnest({arrays}) AS v({columns})"
        f" WHERE t.{quote(opts.pk.column)} = v.{quote(opts.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)


def _subscriber_tags_add_many(additions: list[tuple[Subscriber, list[str]]]) -> None:
    """subscriber.tags.add(*names) for each pair, in two queries for the lot (plus one per
    distinct set of names): the same tag rows, the same m2m_changed signals."""
    from django.db.models.signals import m2m_changed
    from taggit.models import Tag

    from .models import SubscriberTag

    tag_sets: dict[tuple[str, ...], list] = {}
    for subscriber, names in additions:
        key = tuple(names)
        if key not in tag_sets:
            # taggit's own lookup-or-create (and de-duplication) of tag names.
            tag_sets[key] = subscriber.tags._to_tag_model_instances(names, {})
    have = set(
        SubscriberTag.objects.filter(
            content_object_id__in={subscriber.pk for subscriber, _ in additions}
        ).values_list("content_object_id", "tag_id")
    )
    rows, after = [], []
    for subscriber, names in additions:
        tags = tag_sets[tuple(names)]
        new_ids = {tag.pk for tag in tags} - {t for s, t in have if s == subscriber.pk}
        signal = {
            "sender": SubscriberTag,
            "instance": subscriber,
            "reverse": False,
            "model": Tag,
            "pk_set": new_ids,
            "using": "default",
        }
        m2m_changed.send(action="pre_add", **signal)
        for tag in tags:
            if (subscriber.pk, tag.pk) not in have:
                have.add((subscriber.pk, tag.pk))
                rows.append(SubscriberTag(content_object=subscriber, tag=tag))
        after.append(signal)
    SubscriberTag.objects.bulk_create(rows)
    for signal in after:
        m2m_changed.send(action="post_add", **signal)


def _subscribers_lock_many(signups: list[SignUp]) -> dict[str, Subscriber]:
    """The subscriber of every address, created if missing, locked: {lower(email): row}.

    Safe under races like _subscriber_get_or_create_locked, and deadlock-free between
    drains: no lock is held while inserting (the insert waits only on another drain's
    insert of the same address, and both insert in the same order), then every row is
    locked in one statement in one fixed order."""
    first_by_email: dict[str, SignUp] = {}
    for signup in signups:
        first_by_email.setdefault(signup.email, signup)
    emails = sorted(first_by_email)
    keyed = Subscriber.objects.annotate(email_key=Lower("email"))
    known = set(keyed.filter(email_key__in=emails).values_list("email_key", flat=True))
    missing = [first_by_email[email] for email in emails if email not in known]
    if missing:
        # Created as the first sign-up of each address would create it; an address a
        # concurrent transaction just created is skipped here and locked below.
        Subscriber.objects.bulk_create(
            [
                Subscriber(email=s.email, name=s.name, time_zone=clean_time_zone(s.time_zone))
                for s in missing
            ],
            ignore_conflicts=True,
        )
    locked = keyed.select_for_update().filter(email_key__in=emails).order_by("email_key")
    return {subscriber.email_key: subscriber for subscriber in locked}


def _confirm_tokens_unused(*, subscriber_ids, since) -> dict[int, list[tuple]]:
    unused: dict[int, list[tuple]] = {}
    for subscriber_id, magnet_id, created_at in SubscriberToken.objects.filter(
        subscriber_id__in=subscriber_ids,
        purpose=SubscriberToken.Purpose.CONFIRM,
        used_at__isnull=True,
        created_at__gte=since,
    ).values_list("subscriber_id", "magnet_id", "created_at"):
        unused.setdefault(subscriber_id, []).append((magnet_id, created_at))
    return unused


@transaction.atomic
def signups_process_batch(*, signup_ids: list[int]) -> dict[int, str]:
    """A drain's batch in one transaction: every sign-up turned into what signup_process
    makes of it, with what they share (page, magnet, the subscriber rows, tags) read once
    and each kind of row written in one statement. A row another worker holds is left to
    it. Returns {sign-up id: outcome} for the rows it found.

    All or nothing: an error rolls back the whole batch (no email queued, no row written)
    and propagates; the drain then processes the batch one by one, so only the sign-up
    at fault goes to its retrying task."""
    rows = list(
        SignUp.objects.select_for_update(skip_locked=True)
        .filter(pk__in=list(signup_ids))
        .order_by("pk")
    )
    results = {s.pk: f"already {s.status}" for s in rows if s.status != SignUp.Status.RECEIVED}
    signups = [s for s in rows if s.status == SignUp.Status.RECEIVED]
    if not signups:
        return results
    pages = LandingPage.objects.in_bulk({s.landing_page_id for s in signups})
    magnets = LeadMagnet.objects.in_bulk({s.magnet_id for s in signups if s.magnet_id})
    subscribers = _subscribers_lock_many([s for s in signups if s.magnet_id in magnets])
    writer = _SignupWriter(
        defer=True,
        unused_tokens=_confirm_tokens_unused(
            subscriber_ids=[s.pk for s in subscribers.values()],
            since=min(s.created_at for s in signups) - DUPLICATE_WINDOW,
        ),
    )
    for signup in signups:
        magnet = magnets.get(signup.magnet_id) if signup.magnet_id else None
        if magnet is None:
            _signup_settle(signup, error=MAGNET_GONE)
            results[signup.pk] = "failed"
            continue
        subscriber = subscribers[signup.email]
        record = {
            "landing_page": pages.get(signup.landing_page_id),
            "magnet": magnet,
            "subscriber": subscriber,
            "writer": writer,
        }
        if _signup_needs_writes_at_once(signup, subscriber):
            writer.flush()
            writer.defer = False
            try:
                with transaction.atomic():
                    outcome = _signup_record(signup, **record)
            except exceptions.FunnelError as error:
                subscriber.refresh_from_db()  # as written before this sign-up
                _signup_settle(signup, error=error.message)
                results[signup.pk] = "failed"
                continue
            finally:
                writer.defer = True
        else:
            outcome = _signup_record(signup, **record)
        _signup_settle(signup, outcome=outcome)
        if signup.outcome == "delivery":
            writer.deliveries.append((subscriber.pk, magnet.pk, signup.created_at))
        results[signup.pk] = signup.outcome
    writer.flush()
    _rows_update(SignUp, signups, SIGNUP_RESULT_FIELDS)
    return results


@transaction.atomic
def optin_submit(
    *,
    landing_page: LandingPage,
    form_id: str,
    email: str,
    name: str,
    consent: bool,
    visitor: Visitor,
    attribution: Attribution,
) -> OptInOutcome:
    """A visitor asked for a magnet: store the sign-up and process it at once.

    The web request stores it only (signup_receive) and leaves the rest to Celery; imports,
    the demo and tests use this. The outcome never tells the visitor whether the address
    was already known.
    """
    spec = optin_form_specs_of(landing_page).get(str(form_id))
    if spec is None:
        raise exceptions.FormNotFound()
    signup = signup_receive(
        spec=spec,
        email=email,
        name=name,
        consent=consent,
        visitor=visitor,
        attribution=attribution,
        queue=False,
    )
    outcome = _signup_process(signup_id=signup.pk)
    if isinstance(outcome, str):
        signup.refresh_from_db()
        raise exceptions.FunnelError(signup.last_error or None)
    return outcome


def _confirm(*, subscriber: Subscriber, landing_page, form_id: str, visitor: Visitor) -> None:
    from .tasks import audience_sync_subscriber

    subscriber.status = Subscriber.Status.CONFIRMED
    subscriber.confirmed_at = timezone.now()
    subscriber.unsubscribed_at = None
    subscriber.save(update_fields=["status", "confirmed_at", "unsubscribed_at"])
    ConsentRecord.objects.create(
        subscriber=subscriber,
        action=ConsentRecord.Action.CONFIRMED,
        email=subscriber.email,
        landing_page_id=landing_page.pk if landing_page else None,
        page_url=(landing_page.full_url or "") if landing_page else "",
        form_id=form_id,
        ip_address=visitor.ip_address,
        user_agent=(visitor.user_agent or "")[:500],
    )
    audience_sync_subscriber.delay_on_commit(subscriber.pk)
    sequences.enrol_on_confirm(subscriber=subscriber, landing_page=landing_page, form_id=form_id)


@dataclass
class Confirmation:
    subscriber: Subscriber
    magnet: LeadMagnet | None
    landing_page: LandingPage | None


@transaction.atomic
def subscriber_confirm(*, token: str, visitor: Visitor) -> Confirmation:
    """Confirm the address a confirmation token was sent to. Single use."""
    row = (
        # Lock the token row only: PostgreSQL refuses FOR UPDATE on the nullable side of the
        # outer joins to magnet and page; the subscriber is locked just below.
        SubscriberToken.objects.select_for_update(of=("self",))
        .select_related("subscriber", "magnet", "landing_page")
        .filter(
            token_hash=hashlib.sha256((token or "").encode()).hexdigest(),
            purpose=SubscriberToken.Purpose.CONFIRM,
        )
        .first()
    )
    if row is None:
        raise exceptions.TokenInvalid()
    if row.used_at is not None:
        raise exceptions.TokenUsed()
    if row.expires_at <= timezone.now():
        raise exceptions.TokenExpired()
    row.used_at = timezone.now()
    row.save(update_fields=["used_at"])
    subscriber = Subscriber.objects.select_for_update().get(pk=row.subscriber_id)
    _confirm(
        subscriber=subscriber,
        landing_page=row.landing_page,
        form_id="",
        visitor=visitor,
    )
    if row.magnet is not None:
        magnet_send(subscriber=subscriber, magnet=row.magnet)
    return Confirmation(subscriber=subscriber, magnet=row.magnet, landing_page=row.landing_page)


# --- Delivery -------------------------------------------------------------------------------


def magnet_download(
    *, token: str, visitor: Visitor, request=None
) -> tuple[MagnetDelivery, HttpResponseBase]:
    """Record a download and return the response that streams the subscriber's stamped copy.

    The funnel's MagnetDelivery row is written in the ledger's transaction
    (media.downloads.download_deliver); the lookups before it need none.
    Raises media.exceptions.DeliveryError (download limit reached, store unreachable, file
    not deliverable) with a message for the subscriber.
    """
    from media.downloads import download_deliver

    data = open_signed_link("funnels:download", token, max_age=DOWNLOAD_LINK_MAX_AGE)
    subscriber = Subscriber.objects.filter(pk=data.get("s")).first()
    magnet = LeadMagnet.objects.filter(pk=data.get("m")).first()
    if subscriber is None or magnet is None or email_hash(subscriber.email)[:16] != data.get("e"):
        raise exceptions.TokenInvalid("This download is no longer available.")
    file_name = magnet.file.name
    recorded: list[MagnetDelivery] = []

    def record(_ledger_row) -> None:
        recorded.append(
            MagnetDelivery.objects.create(
                subscriber=subscriber,
                magnet=magnet,
                file_name=file_name,
                ip_address=visitor.ip_address,
                user_agent=(visitor.user_agent or "")[:500],
            )
        )

    # Stamped with the subscriber's name and email, and recorded in media's ledger.
    response = download_deliver(
        source_name=file_name,
        user=None,
        subscriber_email=subscriber.email,
        recipient_name=subscriber.name,
        order_reference="",
        filename=magnet.filename,
        request=request,
        on_recorded=record,
    )
    return recorded[0], response


# --- Leaving ----------------------------------------------------------------------------------


@transaction.atomic
def subscriber_unsubscribe(*, subscriber: Subscriber, visitor: Visitor, source: str) -> bool:
    """Stop all mail to a subscriber. Returns False when they had already left."""
    from .tasks import audience_sync_subscriber

    subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
    if subscriber.status == Subscriber.Status.UNSUBSCRIBED:
        return False
    subscriber.status = Subscriber.Status.UNSUBSCRIBED
    subscriber.unsubscribed_at = timezone.now()
    subscriber.save(update_fields=["status", "unsubscribed_at"])
    ConsentRecord.objects.create(
        subscriber=subscriber,
        action=ConsentRecord.Action.WITHDRAWN,
        email=subscriber.email,
        consent_text=f"Unsubscribed ({source})",
        ip_address=visitor.ip_address,
        user_agent=(visitor.user_agent or "")[:500],
    )
    audience_sync_subscriber.delay_on_commit(subscriber.pk)
    sequences.subscriber_left(subscriber=subscriber, reason="unsubscribed")
    return True


def subscriber_export(*, subscriber: Subscriber) -> dict:
    """Everything we hold about a subscriber, for a GDPR access request."""

    def touch(t: Touch | None):
        if t is None:
            return None
        return {
            "landing_page": t.landing_page.title if t.landing_page else None,
            "utm": {
                k: getattr(t, k) for k in Attribution.__dataclass_fields__ if k.startswith("utm_")
            },
            "referrer": t.referrer,
            "at": t.created_at.isoformat(),
        }

    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "time_zone": subscriber.time_zone,
        "status": subscriber.status,
        "tags": sorted(subscriber.tags.names()),
        "created_at": subscriber.created_at.isoformat(),
        "confirmed_at": subscriber.confirmed_at.isoformat() if subscriber.confirmed_at else None,
        "first_touch": touch(subscriber.first_touch),
        "last_touch": touch(subscriber.last_touch),
        "touches": [touch(t) for t in subscriber.touches.select_related("landing_page")],
        "consents": [
            {
                "action": c.action,
                "text": c.consent_text,
                "page": c.page_url,
                "form": c.form_id,
                "form_version": c.form_version,
                "ip_address": c.ip_address,
                "user_agent": c.user_agent,
                "at": c.created_at.isoformat(),
            }
            for c in subscriber.consents.all()
        ],
        "downloads": [
            {"magnet": d.magnet.title, "at": d.created_at.isoformat(), "ip_address": d.ip_address}
            for d in subscriber.deliveries.select_related("magnet")
        ],
    }


@transaction.atomic
def subscriber_erase(*, subscriber: Subscriber, reason: str = "erasure") -> None:
    """Delete a subscriber and everything tied to them; keep only a hashed suppression."""
    from .tasks import audience_forget

    email = subscriber.email
    Suppression.objects.get_or_create(email_hash=email_hash(email), defaults={"reason": reason})
    Subscriber.objects.filter(pk=subscriber.pk).update(first_touch=None, last_touch=None)
    subscriber.delete()
    # The raw sign-ups hold the address (and what the visitor sent) too.
    SignUp.objects.filter(email__iexact=email).delete()
    # The outbox holds copies of what we sent them; those go too.
    OutboundEmail.objects.filter(to__iexact=email).delete()
    audience_forget.delay_on_commit(email)


def landing_page_visit(*, page_id: int, day) -> None:
    """Count a visit. One UPDATE in the common case; the first visit of a day inserts."""
    updated = PageVisitDay.objects.filter(landing_page_id=page_id, day=day).update(
        visits=F("visits") + 1
    )
    if updated:
        return
    if not LandingPage.objects.filter(pk=page_id).exists():
        return
    try:
        with transaction.atomic():
            PageVisitDay.objects.create(landing_page_id=page_id, day=day, visits=1)
    except IntegrityError:
        PageVisitDay.objects.filter(landing_page_id=page_id, day=day).update(visits=F("visits") + 1)
