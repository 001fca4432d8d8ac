"""What the stand-in knows (audiences, members, tags, batches) and how the API acts on it.

Everything here is plain Python with no HTTP: `Store.dispatch` takes a method, a path
relative to `/3.0` and the raw body, and returns a status and a JSON payload. The HTTP
layer (`server.py`) adds authentication, fault injection and the request log; batch
operations call `dispatch` directly, as Mailchimp runs them behind its own front door.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import secrets
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import unquote

ERROR_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
MEMBER_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
TAG_STATUSES = ("active", "inactive")
BATCH_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
INVALID_RESOURCE = (
    "The resource submitted could not be validated. "
    "For field-specific details, see the 'errors' array."
)
# Mailchimp refuses addresses it judges fake; the reserved example/test names are the ones
# a test suite reaches for, so the stand-in refuses them too (configurable per stand-in).
DEFAULT_FAKE_DOMAINS = frozenset({"example.com", "example.org", "example.net", "test.com"})
FAKE_TLDS = frozenset({"test", "invalid", "example", "localhost", "local"})
RESULTS_PER_FILE = 1000

_EMAIL_RE = re.compile(
    r"^(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})$"
)
_HASH_RE = re.compile(r"^[0-9a-fA-F]{32}$")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 of the lowercased address."""
    return hashlib.md5(email.lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class ApiError(Exception):
    """A Mailchimp problem document (RFC 7807 style), raised anywhere in request handling."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[dict] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    def document(self, instance: str) -> dict:
        doc = {
            "type": ERROR_TYPE,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors is not None:
            doc["errors"] = self.errors
        return doc


def not_found(detail: str = "The requested resource could not be found.") -> ApiError:
    return ApiError(404, "Resource Not Found", detail)


def invalid(*errors: tuple[str, str], detail: str = INVALID_RESOURCE) -> ApiError:
    return ApiError(
        400,
        "Invalid Resource",
        detail,
        errors=[{"field": f, "message": m} for f, m in errors],
    )


@dataclass
class MergeField:
    tag: str
    name: str
    type: str = "text"
    required: bool = False
    merge_id: int = 0


@dataclass
class Member:
    email_address: str
    status: str
    merge_fields: dict
    contact_id: str
    unique_email_id: str
    web_id: int
    timestamp_signup: str
    last_changed: str
    tags: dict[str, str] = field(default_factory=dict)  # name -> date added
    email_type: str = "html"
    language: str = ""
    vip: bool = False
    interests: dict = field(default_factory=dict)
    ip_signup: str = ""
    ip_opt: str = ""
    timestamp_opt: str = ""


@dataclass
class Audience:
    id: str
    web_id: int
    name: str
    merge_fields: dict[str, MergeField]
    date_created: str
    members: dict[str, Member] = field(default_factory=dict)  # subscriber hash -> member
    forgotten: set[str] = field(default_factory=set)  # hashes permanently deleted
    tag_ids: dict[str, int] = field(default_factory=dict)


@dataclass
class Operation:
    method: str
    path: str
    params: dict
    body: str | None
    operation_id: str | None


@dataclass
class Batch:
    id: str
    operations: list[Operation]
    submitted_at: str
    status: str = "pending"
    completed_at: str = ""
    results: list[dict] = field(default_factory=list)

    @property
    def errored(self) -> int:
        return sum(1 for r in self.results if r["status_code"] >= 400)


def _is_true(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


class Store:
    """All state of one stand-in, guarded by one re-entrant lock (batches re-enter it)."""

    def __init__(self, *, dc: str, fake_domains: frozenset[str] = DEFAULT_FAKE_DOMAINS):
        self.dc = dc
        self.fake_domains = frozenset(d.lower() for d in fake_domains)
        self.origin = ""  # http://127.0.0.1:PORT, set by the server once bound
        self.lock = threading.RLock()
        self.batch_mode = "immediate"
        self._ids = itertools.count(1001)
        self.audiences: dict[str, Audience] = {}
        self.batches: dict[str, Batch] = {}

    # ---- control-side helpers (used by the handle, not by HTTP) ------------------------

    def reset(self) -> None:
        with self.lock:
            self.audiences.clear()
            self.batches.clear()
            self.batch_mode = "immediate"

    def create_audience(
        self, name: str, merge_fields: dict | list | tuple | None, list_id: str | None
    ) -> str:
        if merge_fields is None:
            merge_fields = ("FNAME", "LNAME")
        specs = (
            merge_fields.items()
            if isinstance(merge_fields, dict)
            else ((tag, {}) for tag in merge_fields)
        )
        fields: dict[str, MergeField] = {}
        for position, (tag, spec) in enumerate(specs, start=1):
            spec = {"type": spec} if isinstance(spec, str) else dict(spec)
            if not re.fullmatch(r"[A-Z0-9_]{1,10}", tag):
                raise ValueError(f"merge tag {tag!r}: Mailchimp tags are A-Z, 0-9, _; max 10")
            fields[tag] = MergeField(
                tag=tag,
                name=spec.get("name", tag.title()),
                type=spec.get("type", "text"),
                required=bool(spec.get("required", False)),
                merge_id=position,
            )
        with self.lock:
            list_id = list_id or secrets.token_hex(5)
            if list_id in self.audiences:
                raise ValueError(f"audience {list_id} already exists")
            self.audiences[list_id] = Audience(
                id=list_id,
                web_id=next(self._ids),
                name=name,
                merge_fields=fields,
                date_created=_now(),
            )
            return list_id

    # ---- HTTP-facing entry point -------------------------------------------------------

    def dispatch(
        self, method: str, path: str, query: dict[str, str], raw_body: bytes, *, in_batch=False
    ) -> tuple[int, dict | None]:
        """Run one API call. `path` is relative to /3.0 and still percent-encoded."""
        segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        with self.lock:
            for pattern, handlers in _ROUTES:
                params = _match(pattern, segments)
                if params is None:
                    continue
                handler = handlers.get(method)
                if handler is None:
                    raise ApiError(
                        405,
                        "Method Not Allowed",
                        "The requested method and resource are not compatible. "
                        "See the Allow header for this resource's available methods.",
                        headers={"Allow": ", ".join(handlers)},
                    )
                if in_batch and pattern and pattern[0] == "batches":
                    raise invalid(("path", "Batch operations cannot start other batches."))
                request = _Request(self, method, query, raw_body, params)
                return handler(request)
        raise not_found(
            "The requested resource could not be found. "
            "(The Mailchimp stand-in implements ping, lists, members, tags and batches.)"
        )

    # ---- lookups shared by the handlers ------------------------------------------------

    def audience(self, list_id: str) -> Audience:
        audience = self.audiences.get(list_id)
        if audience is None:
            raise not_found()
        return audience

    def resolve_member_key(self, audience: Audience, key: str) -> str:
        """Mailchimp takes the MD5 hash, the address itself, or the contact id."""
        if "@" in key:
            return subscriber_hash(key)
        if _HASH_RE.match(key) and key.lower() in audience.members:
            return key.lower()
        for member_hash, member in audience.members.items():  # contact ids are 32 hex too
            if member.contact_id == key:
                return member_hash
        return key.lower() if _HASH_RE.match(key) else key  # unknown: lookups will 404

    def check_email(self, email: object, field_name: str = "email_address") -> str:
        if not isinstance(email, str):
            raise invalid(
                (field_name, f"Schema describes string, {_json_type(email)} found instead")
            )
        match = _EMAIL_RE.match(email)
        if match is None or len(email) > 254 or len(match["local"]) > 64:
            raise ApiError(400, "Invalid Resource", "Please provide a valid email address.")
        domain = match["domain"].lower()
        if domain in self.fake_domains or domain.rsplit(".", 1)[-1] in FAKE_TLDS:
            raise ApiError(
                400,
                "Invalid Resource",
                f"{email} looks fake or invalid, please enter a real email address.",
            )
        return email

    def new_member(self, audience: Audience, email: str, status: str) -> Member:
        now = _now()
        return Member(
            email_address=email,
            status=status,
            merge_fields={},
            contact_id=secrets.token_hex(16),
            unique_email_id=secrets.token_hex(5),
            web_id=next(self._ids),
            timestamp_signup=now,
            last_changed=now,
            timestamp_opt=now if status == "subscribed" else "",
        )

    def tag_id(self, audience: Audience, name: str) -> int:
        if name not in audience.tag_ids:
            audience.tag_ids[name] = next(self._ids)
        return audience.tag_ids[name]

    # ---- representations ---------------------------------------------------------------

    def member_json(self, audience: Audience, member_hash: str, member: Member) -> dict:
        merge = {tag: member.merge_fields.get(tag, "") for tag in audience.merge_fields}
        full_name = " ".join(str(merge[t]) for t in ("FNAME", "LNAME") if merge.get(t))
        return {
            "id": member_hash,
            "email_address": member.email_address,
            "unique_email_id": member.unique_email_id,
            "contact_id": member.contact_id,
            "full_name": full_name,
            "web_id": member.web_id,
            "email_type": member.email_type,
            "status": member.status,
            "consents_to_one_to_one_messaging": True,
            "merge_fields": merge,
            "interests": dict(member.interests),
            "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
            "ip_signup": member.ip_signup,
            "timestamp_signup": member.timestamp_signup,
            "ip_opt": member.ip_opt,
            "timestamp_opt": member.timestamp_opt,
            "member_rating": 2,
            "last_changed": member.last_changed,
            "language": member.language,
            "vip": member.vip,
            "email_client": "",
            "location": {
                "latitude": 0,
                "longitude": 0,
                "gmtoff": 0,
                "dstoff": 0,
                "country_code": "",
                "timezone": "",
                "region": "",
            },
            "source": "API - Generic",
            "tags_count": len(member.tags),
            "tags": [{"id": self.tag_id(audience, n), "name": n} for n in member.tags],
            "list_id": audience.id,
        }

    def audience_json(self, audience: Audience) -> dict:
        counts = {s: 0 for s in (*MEMBER_STATUSES, "archived")}
        for member in audience.members.values():
            counts[member.status] += 1
        return {
            "id": audience.id,
            "web_id": audience.web_id,
            "name": audience.name,
            "contact": {
                "company": "Lodestone",
                "address1": "1 Loopback Lane",
                "address2": "",
                "city": "Localhost",
                "state": "",
                "zip": "00000",
                "country": "US",
                "phone": "",
            },
            "permission_reminder": "You signed up on our site.",
            "use_archive_bar": True,
            "campaign_defaults": {
                "from_name": "Lodestone",
                "from_email": "news@lodestone.invalid",
                "subject": "",
                "language": "en",
            },
            "notify_on_subscribe": "",
            "notify_on_unsubscribe": "",
            "date_created": audience.date_created,
            "list_rating": 0,
            "email_type_option": False,
            "subscribe_url_short": f"http://eepurl.invalid/{audience.id}",
            "subscribe_url_long": f"{self.origin}/subscribe?id={audience.id}",
            "beamer_address": f"{audience.id}@inbound.invalid",
            "visibility": "pub",
            "double_optin": False,
            "has_welcome": False,
            "marketing_permissions": False,
            "modules": [],
            "stats": {
                "member_count": counts["subscribed"],
                "unsubscribe_count": counts["unsubscribed"],
                "cleaned_count": counts["cleaned"],
                "member_count_since_send": counts["subscribed"],
                "unsubscribe_count_since_send": counts["unsubscribed"],
                "cleaned_count_since_send": counts["cleaned"],
                "campaign_count": 0,
                "merge_field_count": len(audience.merge_fields),
                "avg_sub_rate": 0,
                "avg_unsub_rate": 0,
                "target_sub_rate": 0,
                "open_rate": 0,
                "click_rate": 0,
                "total_contacts": sum(counts.values()),
            },
        }

    def batch_json(self, batch: Batch) -> dict:
        finished = batch.status == "finished"
        return {
            "id": batch.id,
            "status": batch.status,
            "total_operations": len(batch.operations),
            "finished_operations": len(batch.results),
            "errored_operations": batch.errored,
            "submitted_at": batch.submitted_at,
            "completed_at": batch.completed_at,
            "response_body_url": (
                f"{self.origin}/batch-results/{batch.id}.tar.gz" if finished else ""
            ),
        }

    # ---- batches -----------------------------------------------------------------------

    def run_batch(self, batch_id: str) -> None:
        with self.lock:
            batch = self.batches[batch_id]
            if batch.status == "finished":
                return
            batch.status = "started"
            for op in batch.operations:
                query = {k: str(v) for k, v in op.params.items()}
                raw = op.body.encode("utf-8") if op.body is not None else b""
                try:
                    status, payload = self.dispatch(op.method, op.path, query, raw, in_batch=True)
                except ApiError as error:
                    status, payload = error.status, error.document(str(uuid.uuid4()))
                batch.results.append(
                    {
                        "status_code": status,
                        "operation_id": op.operation_id,
                        "response": "" if payload is None else json.dumps(payload),
                    }
                )
            batch.status = "finished"
            batch.completed_at = _now()

    def finish_pending_batches(self) -> list[str]:
        with self.lock:
            pending = [b.id for b in self.batches.values() if b.status != "finished"]
            for batch_id in pending:
                self.run_batch(batch_id)
            return pending

    def batch_results_archive(self, batch_id: str) -> bytes | None:
        """The gzipped tar Mailchimp links from response_body_url: JSON arrays of results."""
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None or batch.status != "finished":
                return None
            results = list(batch.results)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            chunks = [
                results[i : i + RESULTS_PER_FILE]
                for i in range(0, max(len(results), 1), RESULTS_PER_FILE)
            ]
            for number, chunk in enumerate(chunks):
                data = json.dumps(chunk).encode("utf-8")
                info = tarfile.TarInfo(f"{batch_id}-{number}.json")
                info.size = len(data)
                info.mtime = int(time.time())
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def _json_type(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Request:
    def __init__(self, store: Store, method: str, query: dict, raw_body: bytes, params: dict):
        self.store = store
        self.method = method
        self.query = query
        self.raw_body = raw_body
        self.params = params

    def body(self, *, required: bool = True) -> dict | None:
        text = self.raw_body.decode("utf-8", errors="replace").strip()
        if not text or text == "null":
            if not required:
                return None
            raise invalid(("", "Schema describes object, NULL found instead"))
        try:
            data = json.loads(text)
        except ValueError:
            raise ApiError(
                400, "JSON Parse Exception", "We encountered an unspecified JSON parsing error."
            ) from None
        if not isinstance(data, dict):
            raise invalid(("", f"Schema describes object, {_json_type(data)} found instead"))
        return data


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict | None:
    if len(pattern) != len(segments):
        return None
    params = {}
    for part, segment in zip(pattern, segments, strict=True):
        if part.startswith("{"):
            if not segment:
                return None
            params[part[1:-1]] = segment
        elif part != segment:
            return None
    return params


# ---- validation shared by the member endpoints -----------------------------------------


def _not_one_of(accepted: tuple[str, ...]) -> str:
    return f"Data presented is not one of the accepted values: {', '.join(accepted)}."


def _require(body: dict, *names: str) -> None:
    missing = [n for n in names if n not in body or body[n] is None]
    if missing:
        raise invalid(("", f"Required fields were not provided: {', '.join(missing)}"))


def _check_status(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if value not in MEMBER_STATUSES:
        raise invalid(
            (
                name,
                _not_one_of(MEMBER_STATUSES),
            )
        )
    return value


def _check_merge_fields(
    audience: Audience, body: dict, *, existing: dict | None, skip_validation: bool
) -> dict:
    values = body.get("merge_fields", {})
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise invalid(
            ("merge_fields", f"Schema describes object, {_json_type(values)} found instead")
        )
    errors = []
    for tag, value in values.items():
        spec = audience.merge_fields.get(tag)
        if spec is None:
            errors.append((tag, f"Merge field {tag} does not exist on this audience."))
        elif spec.type == "address":
            if not isinstance(value, dict | str):
                errors.append((f"merge_fields.{tag}", "Please enter a complete address"))
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            errors.append(
                (
                    f"merge_fields.{tag}",
                    "Data did not match any of the schemas described in anyOf.",
                )
            )
        elif spec.type == "number" and value != "":
            try:
                float(value)
            except ValueError:
                errors.append((tag, "Please enter a number"))
    if not skip_validation:
        merged = {**(existing or {}), **values}
        for tag, spec in audience.merge_fields.items():
            # An update only trips on a required field it empties itself.
            missing = spec.required and merged.get(tag) in (None, "")
            if missing and (existing is None or tag in values):
                errors.append((tag, "Please enter a value"))
    if errors:
        raise invalid(*errors, detail="Your merge fields were invalid.")
    return values


def _check_new_member_tags(body: dict) -> list[str]:
    tags = body.get("tags", [])
    if tags is None:
        return []
    if not isinstance(tags, list):
        raise invalid(("tags", f"Schema describes array, {_json_type(tags)} found instead"))
    for index, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise invalid(
                (f"tags.item:{index}", f"Schema describes string, {_json_type(tag)} found instead")
            )
    return tags


def _check_hash_matches(member_hash: str, email: str) -> None:
    if subscriber_hash(email) != member_hash:
        raise invalid(
            (
                "email_address",
                "The subscriber hash in the URL does not match the MD5 hash of the "
                "lowercased email_address in the body.",
            )
        )


def _check_not_forgotten(audience: Audience, member_hash: str, email: str, status: str) -> None:
    if member_hash in audience.forgotten and status != "pending":
        raise ApiError(
            400,
            "Forgotten Email Not Subscribed",
            f"{email} was permanently deleted and cannot be re-imported. "
            "The contact must re-subscribe to get back on the list.",
        )


def _apply_optional(member: Member, body: dict) -> None:
    for name in ("email_type", "language", "vip", "ip_signup", "ip_opt"):
        if name in body and body[name] is not None:
            setattr(member, name, body[name])
    if isinstance(body.get("interests"), dict):
        member.interests.update(body["interests"])


def _set_status(member: Member, status: str) -> None:
    if status != member.status and status == "subscribed":
        member.timestamp_opt = _now()
    member.status = status


# ---- handlers --------------------------------------------------------------------------


def _root(req: _Request):
    store = req.store
    total = sum(
        1 for a in store.audiences.values() for m in a.members.values() if m.status == "subscribed"
    )
    return 200, {
        "account_id": "lodestone-standin",
        "login_id": "1",
        "account_name": "Lodestone (stand-in)",
        "email": "owner@lodestone.invalid",
        "first_name": "Stand",
        "last_name": "In",
        "username": "lodestone",
        "role": "owner",
        "pro_enabled": False,
        "total_subscribers": total,
    }


def _ping(req: _Request):
    return 200, {"health_status": "Everything's Chimpy!"}


def _lists(req: _Request):
    audiences = [req.store.audience_json(a) for a in req.store.audiences.values()]
    return 200, {"lists": audiences, "total_items": len(audiences)}


def _get_list(req: _Request):
    return 200, req.store.audience_json(req.store.audience(req.params["list_id"]))


def _page(req: _Request) -> tuple[int, int]:
    try:
        count = int(req.query.get("count", 10))
        offset = int(req.query.get("offset", 0))
    except ValueError:
        raise invalid(("count", "Count and offset must be integers.")) from None
    if count > 1000:
        raise invalid(("count", "Count must be at most 1000."))
    return count, offset


def _list_members(req: _Request):
    audience = req.store.audience(req.params["list_id"])
    count, offset = _page(req)
    status = req.query.get("status")
    selected = [
        (h, m)
        for h, m in audience.members.items()
        if (m.status == status if status else m.status != "archived")
    ]
    members = [req.store.member_json(audience, h, m) for h, m in selected[offset : offset + count]]
    return 200, {"members": members, "list_id": audience.id, "total_items": len(selected)}


def _add_member(req: _Request):
    store = req.store
    audience = store.audience(req.params["list_id"])
    body = req.body()
    _require(body, "email_address", "status")
    email = store.check_email(body["email_address"])
    status = _check_status(body, "status")
    member_hash = subscriber_hash(email)
    existing = audience.members.get(member_hash)
    if existing is not None and existing.status != "archived":
        raise ApiError(
            400,
            "Member Exists",
            f"{email} is already a list member. Use PUT to insert or update list members.",
        )
    merge = _check_merge_fields(
        audience,
        body,
        existing=None,
        skip_validation=_is_true(req.query.get("skip_merge_validation")),
    )
    tags = _check_new_member_tags(body)
    _check_not_forgotten(audience, member_hash, email, status)
    member = store.new_member(audience, email, status)
    member.merge_fields.update(merge)
    _apply_optional(member, body)
    for name in tags:
        member.tags[name] = _now()
        store.tag_id(audience, name)
    audience.members[member_hash] = member
    audience.forgotten.discard(member_hash)
    return 200, store.member_json(audience, member_hash, member)


def _existing_member(req: _Request, *, include_archived: bool) -> tuple[Audience, str, Member]:
    audience = req.store.audience(req.params["list_id"])
    member_hash = req.store.resolve_member_key(audience, req.params["member"])
    member = audience.members.get(member_hash)
    if member is None or (member.status == "archived" and not include_archived):
        raise not_found()
    return audience, member_hash, member


def _get_member(req: _Request):
    audience, member_hash, member = _existing_member(req, include_archived=True)
    return 200, req.store.member_json(audience, member_hash, member)


def _upsert_member(req: _Request):
    store = req.store
    audience = store.audience(req.params["list_id"])
    member_hash = store.resolve_member_key(audience, req.params["member"])
    body = req.body()
    _require(body, "email_address", "status_if_new")
    email = store.check_email(body["email_address"])
    status_if_new = _check_status(body, "status_if_new")
    status = _check_status(body, "status")
    _check_hash_matches(member_hash, email)
    member = audience.members.get(member_hash)
    # An archived contact comes back as if new; status_if_new only speaks for new members.
    creating = member is None or member.status == "archived"
    merge = _check_merge_fields(
        audience,
        body,
        existing=None if creating else member.merge_fields,
        skip_validation=_is_true(req.query.get("skip_merge_validation")),
    )
    if creating:
        tags = _check_new_member_tags(body)
        new_status = status_if_new  # even when `status` is sent too: it is for members
        _check_not_forgotten(audience, member_hash, email, new_status)
        if member is None:
            member = store.new_member(audience, email, new_status)
            audience.members[member_hash] = member
        else:
            _set_status(member, new_status)
        for name in tags:  # Mailchimp applies `tags` only when the PUT creates the member
            member.tags.setdefault(name, _now())
            store.tag_id(audience, name)
        audience.forgotten.discard(member_hash)
    elif status is not None:
        _set_status(member, status)
    member.email_address = email
    member.merge_fields.update(merge)
    _apply_optional(member, body)
    member.last_changed = _now()
    return 200, store.member_json(audience, member_hash, member)


def _update_member(req: _Request):
    store = req.store
    audience, member_hash, member = _existing_member(req, include_archived=False)
    body = req.body()
    if "email_address" in body:
        email = store.check_email(body["email_address"])
        _check_hash_matches(member_hash, email)
        member.email_address = email
    status = _check_status(body, "status")
    merge = _check_merge_fields(
        audience,
        body,
        existing=member.merge_fields,
        skip_validation=_is_true(req.query.get("skip_merge_validation")),
    )
    if status is not None:
        _set_status(member, status)
    member.merge_fields.update(merge)
    _apply_optional(member, body)
    member.last_changed = _now()
    return 200, store.member_json(audience, member_hash, member)


def _archive_member(req: _Request):
    _, _, member = _existing_member(req, include_archived=False)
    member.status = "archived"
    member.last_changed = _now()
    return 204, None


def _delete_member_permanently(req: _Request):
    audience, member_hash, _ = _existing_member(req, include_archived=True)
    req.body(required=False)  # the client sends "null"; anything else must still parse
    del audience.members[member_hash]
    audience.forgotten.add(member_hash)
    return 204, None


def _member_tags(req: _Request):
    audience, _, member = _existing_member(req, include_archived=True)
    tags = [
        {"id": req.store.tag_id(audience, n), "name": n, "date_added": added}
        for n, added in member.tags.items()
    ]
    return 200, {"tags": tags, "total_items": len(tags)}


def _update_member_tags(req: _Request):
    audience, _, member = _existing_member(req, include_archived=False)
    body = req.body()
    _require(body, "tags")
    tags = body["tags"]
    if not isinstance(tags, list):
        raise invalid(("tags", f"Schema describes array, {_json_type(tags)} found instead"))
    changes = []
    for index, tag in enumerate(tags):
        where = f"tags.item:{index}"
        if not isinstance(tag, dict):
            raise invalid((where, f"Schema describes object, {_json_type(tag)} found instead"))
        missing = [n for n in ("name", "status") if tag.get(n) is None]
        if missing:
            raise invalid((where, f"Required fields were not provided: {', '.join(missing)}"))
        if not isinstance(tag["name"], str) or not tag["name"].strip():
            raise invalid((f"{where}.name", "Tag names must be non-empty strings."))
        if tag["status"] not in TAG_STATUSES:
            raise invalid(
                (
                    f"{where}.status",
                    _not_one_of(TAG_STATUSES),
                )
            )
        changes.append((tag["name"].strip(), tag["status"]))
    for name, status in changes:
        if status == "active":
            member.tags.setdefault(name, _now())
            req.store.tag_id(audience, name)
        else:
            member.tags.pop(name, None)
    member.last_changed = _now()
    return 204, None


def _list_batches(req: _Request):
    count, offset = _page(req)
    batches = list(req.store.batches.values())
    return 200, {
        "batches": [req.store.batch_json(b) for b in batches[offset : offset + count]],
        "total_items": len(batches),
    }


def _start_batch(req: _Request):
    store = req.store
    body = req.body()
    _require(body, "operations")
    raw_ops = body["operations"]
    if not isinstance(raw_ops, list):
        raise invalid(
            ("operations", f"Schema describes array, {_json_type(raw_ops)} found instead")
        )
    operations, errors = [], []
    for index, op in enumerate(raw_ops):
        where = f"operations.item:{index}"
        if not isinstance(op, dict):
            errors.append((where, f"Schema describes object, {_json_type(op)} found instead"))
            continue
        missing = [n for n in ("method", "path") if op.get(n) is None]
        if missing:
            errors.append((where, f"Required fields were not provided: {', '.join(missing)}"))
            continue
        if op["method"] not in BATCH_METHODS:
            errors.append(
                (
                    f"{where}.method",
                    _not_one_of(BATCH_METHODS),
                )
            )
        for name, kind, expected in (
            ("path", str, "string"),
            ("body", str, "string"),
            ("operation_id", str, "string"),
            ("params", dict, "object"),
        ):
            if op.get(name) is not None and not isinstance(op[name], kind):
                errors.append(
                    (
                        f"{where}.{name}",
                        f"Schema describes {expected}, {_json_type(op[name])} found instead",
                    )
                )
        operations.append(
            Operation(
                method=op["method"],
                path=op["path"] if isinstance(op["path"], str) else "",
                params=op.get("params") if isinstance(op.get("params"), dict) else {},
                body=op.get("body") if isinstance(op.get("body"), str) else None,
                operation_id=op.get("operation_id"),
            )
        )
    if errors:
        raise invalid(*errors)
    batch = Batch(id=secrets.token_hex(5), operations=operations, submitted_at=_now())
    store.batches[batch.id] = batch
    snapshot = store.batch_json(batch)  # Mailchimp answers before it starts the work
    if store.batch_mode == "immediate":
        store.run_batch(batch.id)
    return 200, snapshot


def _get_batch(req: _Request):
    batch = req.store.batches.get(req.params["batch_id"])
    if batch is None:
        raise not_found()
    return 200, req.store.batch_json(batch)


def _delete_batch(req: _Request):
    if req.store.batches.pop(req.params["batch_id"], None) is None:
        raise not_found()
    return 204, None


_MEMBER = ("lists", "{list_id}", "members", "{member}")
_ROUTES: list[tuple[tuple[str, ...], dict]] = [
    ((), {"GET": _root}),
    (("ping",), {"GET": _ping}),
    (("lists",), {"GET": _lists}),
    (("lists", "{list_id}"), {"GET": _get_list}),
    (("lists", "{list_id}", "members"), {"GET": _list_members, "POST": _add_member}),
    (
        _MEMBER,
        {
            "GET": _get_member,
            "PUT": _upsert_member,
            "PATCH": _update_member,
            "DELETE": _archive_member,
        },
    ),
    ((*_MEMBER, "tags"), {"GET": _member_tags, "POST": _update_member_tags}),
    ((*_MEMBER, "actions", "delete-permanent"), {"POST": _delete_member_permanently}),
    (("batches",), {"GET": _list_batches, "POST": _start_batch}),
    (("batches", "{batch_id}"), {"GET": _get_batch, "DELETE": _delete_batch}),
]
