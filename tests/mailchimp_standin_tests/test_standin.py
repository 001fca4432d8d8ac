"""The Mailchimp stand-in, driven only through the official `mailchimp_marketing` client."""

import hashlib
import io
import json
import tarfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from mailchimp_marketing.api_client import ApiClientError

from tests.mailchimp_standin import configured_client, subscriber_hash

pytest_plugins = ["tests.mailchimp_standin.fixtures"]

ADA = "Ada.Lovelace@Analytical.io"


@pytest.fixture
def client(mailchimp):
    return configured_client(mailchimp)


@pytest.fixture
def list_id(mailchimp):
    return mailchimp.create_audience("Newsletter")


def problem(error: ApiClientError) -> dict:
    # Mailchimp answers errors as application/problem+json, which this client leaves as text.
    return json.loads(error.text)


def upsert(client, list_id, email, **body):
    return client.lists.set_list_member(
        list_id, subscriber_hash(email), {"email_address": email, **body}
    )


def test_ping_reports_chimpy_health(client):
    assert client.ping.get() == {"health_status": "Everything's Chimpy!"}


def test_unknown_audience_is_not_found(client):
    with pytest.raises(ApiClientError) as caught:
        client.lists.get_list("0000000000")

    assert caught.value.status_code == 404
    assert problem(caught.value)["title"] == "Resource Not Found"


def test_upsert_creates_new_member_with_status_if_new(client, list_id, mailchimp):
    member = upsert(client, list_id, ADA, status_if_new="subscribed", merge_fields={"FNAME": "Ada"})

    assert member["id"] == subscriber_hash(ADA)
    assert member["status"] == "subscribed"
    assert member["merge_fields"] == {"FNAME": "Ada", "LNAME": ""}
    assert mailchimp.member(list_id, ADA)["email_address"] == ADA
    assert client.lists.get_list(list_id)["stats"]["member_count"] == 1


def test_upsert_accepts_the_email_itself_in_place_of_the_hash(client, list_id):
    member = client.lists.set_list_member(
        list_id, ADA.upper(), {"email_address": ADA, "status_if_new": "subscribed"}
    )

    assert member["id"] == subscriber_hash(ADA)


def test_status_if_new_wins_over_status_for_a_new_member(client, list_id):
    member = upsert(client, list_id, ADA, status_if_new="pending", status="subscribed")

    assert member["status"] == "pending"


def test_upsert_updates_existing_member_and_keeps_unsent_fields(client, list_id):
    upsert(
        client,
        list_id,
        ADA,
        status_if_new="pending",
        merge_fields={"FNAME": "Ada", "LNAME": "Byron"},
    )

    member = upsert(
        client,
        list_id,
        ADA,
        status_if_new="subscribed",
        status="subscribed",
        merge_fields={"LNAME": "Lovelace"},
    )

    assert member["status"] == "subscribed"
    assert member["merge_fields"] == {"FNAME": "Ada", "LNAME": "Lovelace"}
    assert client.lists.get_list_member(list_id, subscriber_hash(ADA)) == member


def test_upsert_with_hash_not_matching_lowercased_email_is_rejected(client, list_id, mailchimp):
    # The md5 of the address as typed, not lowercased: a classic integration bug.
    wrong_hash = hashlib.md5(ADA.encode(), usedforsecurity=False).hexdigest()

    with pytest.raises(ApiClientError) as caught:
        client.lists.set_list_member(
            list_id, wrong_hash, {"email_address": ADA, "status_if_new": "subscribed"}
        )

    assert caught.value.status_code == 400
    assert problem(caught.value)["errors"][0]["field"] == "email_address"
    assert mailchimp.members(list_id) == []


def test_upsert_with_unknown_merge_field_is_rejected(client, list_id, mailchimp):
    with pytest.raises(ApiClientError) as caught:
        upsert(client, list_id, ADA, status_if_new="subscribed", merge_fields={"COURSE": "x"})

    assert caught.value.status_code == 400
    assert problem(caught.value)["detail"] == "Your merge fields were invalid."
    assert problem(caught.value)["errors"][0]["field"] == "COURSE"
    assert mailchimp.member(list_id, ADA) is None


def test_audience_merge_fields_are_configurable_and_required_ones_enforced(client, mailchimp):
    list_id = mailchimp.create_audience(
        "Courses", merge_fields={"FNAME": "text", "COURSE": {"type": "text", "required": True}}
    )

    with pytest.raises(ApiClientError) as caught:
        upsert(client, list_id, ADA, status_if_new="subscribed", merge_fields={"FNAME": "A"})
    member = upsert(
        client, list_id, ADA, status_if_new="subscribed", merge_fields={"COURSE": "Maths"}
    )

    assert problem(caught.value)["errors"] == [
        {"field": "COURSE", "message": "Please enter a value"}
    ]
    assert member["merge_fields"] == {"FNAME": "", "COURSE": "Maths"}


def test_unsubscribed_member_stays_unsubscribed_on_upsert_with_status_if_new(
    client,
    list_id,
    mailchimp,
):
    mailchimp.add_member(list_id, ADA, status="unsubscribed")

    member = upsert(client, list_id, ADA, status_if_new="subscribed", merge_fields={"FNAME": "Ada"})

    assert member["status"] == "unsubscribed"
    assert member["merge_fields"]["FNAME"] == "Ada"


def test_malformed_and_fake_looking_emails_are_rejected(client, list_id):
    for email, detail in [
        ("not-an-address", "Please provide a valid email address."),
        (
            "someone@example.com",
            "someone@example.com looks fake or invalid, please enter a real email address.",
        ),
    ]:
        with pytest.raises(ApiClientError) as caught:
            client.lists.add_list_member(list_id, {"email_address": email, "status": "subscribed"})
        assert caught.value.status_code == 400
        assert problem(caught.value)["detail"] == detail


def test_invalid_status_is_rejected(client, list_id):
    with pytest.raises(ApiClientError) as caught:
        upsert(client, list_id, ADA, status_if_new="active")

    assert caught.value.status_code == 400
    assert problem(caught.value)["errors"][0]["field"] == "status_if_new"


def test_adding_an_existing_member_is_member_exists(client, list_id):
    client.lists.add_list_member(list_id, {"email_address": ADA, "status": "subscribed"})

    with pytest.raises(ApiClientError) as caught:
        client.lists.add_list_member(list_id, {"email_address": ADA, "status": "subscribed"})

    assert caught.value.status_code == 400
    assert problem(caught.value)["title"] == "Member Exists"


def test_patch_of_absent_member_is_not_found(client, list_id):
    with pytest.raises(ApiClientError) as caught:
        client.lists.update_list_member(list_id, subscriber_hash(ADA), {"status": "subscribed"})

    assert caught.value.status_code == 404


def test_archived_member_reads_archived_and_deleted_member_cannot_be_resubscribed(
    client,
    list_id,
    mailchimp,
):
    member_hash = subscriber_hash(ADA)
    upsert(client, list_id, ADA, status_if_new="subscribed")

    client.lists.delete_list_member(list_id, member_hash)
    archived = client.lists.get_list_member(list_id, member_hash)
    client.lists.delete_list_member_permanent(list_id, member_hash)
    with pytest.raises(ApiClientError) as gone:
        client.lists.get_list_member(list_id, member_hash)
    with pytest.raises(ApiClientError) as refused:
        upsert(client, list_id, ADA, status_if_new="subscribed")
    pending = upsert(client, list_id, ADA, status_if_new="pending")

    assert archived["status"] == "archived"
    assert gone.value.status_code == 404
    assert problem(refused.value)["title"] == "Forgotten Email Not Subscribed"
    assert pending["status"] == "pending"


def test_tags_are_added_and_removed(client, list_id):
    member_hash = subscriber_hash(ADA)
    upsert(client, list_id, ADA, status_if_new="subscribed")

    client.lists.update_list_member_tags(
        list_id,
        member_hash,
        {"tags": [{"name": "lead", "status": "active"}, {"name": "buyer", "status": "active"}]},
    )
    client.lists.update_list_member_tags(
        list_id, member_hash, {"tags": [{"name": "lead", "status": "inactive"}]}
    )

    tags = client.lists.get_list_member_tags(list_id, member_hash)
    assert [t["name"] for t in tags["tags"]] == ["buyer"]
    assert tags["total_items"] == 1
    assert [t["name"] for t in client.lists.get_list_member(list_id, member_hash)["tags"]] == [
        "buyer"
    ]


def test_tags_in_upsert_body_apply_only_when_member_is_created(client, list_id):
    upsert(client, list_id, ADA, status_if_new="subscribed", tags=["lead"])

    member = upsert(client, list_id, ADA, status_if_new="subscribed", tags=["buyer"])

    assert [t["name"] for t in member["tags"]] == ["lead"]


def test_batch_of_three_operations_executes_and_reports(client, list_id, mailchimp):
    grace = "grace@hopper.io"
    members = f"/lists/{list_id}/members"
    operations = [
        {
            "method": "PUT",
            "path": f"{members}/{subscriber_hash(grace)}",
            "body": json.dumps({"email_address": grace, "status_if_new": "subscribed"}),
            "operation_id": "upsert-grace",
        },
        {
            "method": "POST",
            "path": f"{members}/{subscriber_hash(grace)}/tags",
            "body": json.dumps({"tags": [{"name": "webinar", "status": "active"}]}),
            "operation_id": "tag-grace",
        },
        {
            "method": "POST",
            "path": members,
            "body": "{not json",
            "operation_id": "broken",
        },
    ]

    started = client.batches.start({"operations": operations})
    finished = client.batches.status(started["id"])
    with urllib.request.urlopen(finished["response_body_url"], timeout=5) as answer:
        archive_bytes = answer.read()
    with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:gz") as archive:
        results = [
            result
            for entry in archive.getmembers()
            if entry.isfile()
            for result in json.loads(archive.extractfile(entry).read())
        ]

    assert started["status"] == "pending"
    assert started["total_operations"] == 3
    assert finished["status"] == "finished"
    assert finished["finished_operations"] == 3
    assert finished["errored_operations"] == 1
    assert [(r["operation_id"], r["status_code"]) for r in results] == [
        ("upsert-grace", 200),
        ("tag-grace", 204),
        ("broken", 400),
    ]
    assert json.loads(results[2]["response"])["title"] == "JSON Parse Exception"
    assert [t["name"] for t in mailchimp.member(list_id, grace)["tags"]] == ["webinar"]


def test_batch_stays_pending_until_finished_in_manual_mode(client, list_id, mailchimp):
    mailchimp.batch_mode = "manual"
    body = json.dumps({"email_address": ADA, "status": "subscribed"})

    batch = client.batches.start(
        {"operations": [{"method": "POST", "path": f"/lists/{list_id}/members", "body": body}]}
    )
    before = client.batches.status(batch["id"])
    assert mailchimp.finish_batches() == [batch["id"]]
    after = client.batches.status(batch["id"])

    assert before["status"] == "pending"
    assert mailchimp.batch(batch["id"])["results"][0]["status_code"] == 200
    assert after["status"] == "finished"
    assert after["response_body_url"].endswith(f"{batch['id']}.tar.gz")
    assert mailchimp.member(list_id, ADA)["status"] == "subscribed"


def test_wrong_api_key_is_refused_with_401(mailchimp):
    bad = configured_client(mailchimp, api_key="0123456789abcdef0123456789abcdef-us1")

    with pytest.raises(ApiClientError) as caught:
        bad.ping.get()

    assert caught.value.status_code == 401
    assert set(problem(caught.value)) == {"type", "title", "status", "detail", "instance"}
    assert problem(caught.value)["title"] == "API Key Invalid"
    assert mailchimp.requests[-1].auth_ok is False


def test_key_for_another_datacenter_is_refused_with_401(mailchimp):
    other_dc = mailchimp.api_key.rsplit("-", 1)[0] + "-us7"

    with pytest.raises(ApiClientError) as caught:
        configured_client(mailchimp, api_key=other_dc).ping.get()

    assert caught.value.status_code == 401


def test_missing_api_key_is_refused_with_401(mailchimp):
    with pytest.raises(ApiClientError) as caught:
        configured_client(mailchimp, api_key="").ping.get()

    assert caught.value.status_code == 401
    assert problem(caught.value)["title"] == "API Key Missing"


def test_injected_500_surfaces_then_next_call_succeeds(client, mailchimp):
    mailchimp.fail_next(500)

    with pytest.raises(ApiClientError) as caught:
        client.ping.get()

    assert caught.value.status_code == 500
    assert client.ping.get()["health_status"] == "Everything's Chimpy!"


def test_injected_429_surfaces_as_too_many_requests_then_next_call_succeeds(
    client,
    mailchimp,
):
    mailchimp.fail_next(429)

    with pytest.raises(ApiClientError) as caught:
        client.ping.get()

    assert caught.value.status_code == 429
    assert problem(caught.value)["title"] == "Too Many Requests"
    assert client.ping.get()["health_status"] == "Everything's Chimpy!"


def test_injected_fault_only_hits_matching_requests(client, list_id, mailchimp):
    mailchimp.fail_next(503, method="PUT", path=r"/members/", times=2)

    client.ping.get()
    for _ in range(2):
        with pytest.raises(ApiClientError) as caught:
            upsert(client, list_id, ADA, status_if_new="subscribed")
        assert caught.value.status_code == 503
    upsert(client, list_id, ADA, status_if_new="subscribed")

    assert [(r.method, r.status, r.fault) for r in mailchimp.requests] == [
        ("GET", 200, None),
        ("PUT", 503, "status:503"),
        ("PUT", 503, "status:503"),
        ("PUT", 200, None),
    ]


def test_hung_request_trips_the_client_timeout(mailchimp):
    mailchimp.hang_next(5)
    impatient = configured_client(mailchimp, timeout=0.2)

    with pytest.raises(ApiClientError) as caught:
        impatient.ping.get()

    assert caught.value.status_code is None
    assert "timed out" in str(caught.value.text)
    assert mailchimp.requests[0].fault == "hang:5"


def test_request_log_records_method_path_auth_and_body(client, list_id, mailchimp):
    upsert(client, list_id, ADA, status_if_new="subscribed", merge_fields={"FNAME": "Ada"})

    [sent] = mailchimp.wait_for_requests(1, method="PUT", path=r"/members/")

    assert sent.api_path == f"/lists/{list_id}/members/{subscriber_hash(ADA)}"
    assert sent.auth_ok is True
    assert sent.api_key == mailchimp.api_key
    assert sent.json == {
        "email_address": ADA,
        "status_if_new": "subscribed",
        "merge_fields": {"FNAME": "Ada"},
    }
    assert sent.status == 200
    assert sent.response["id"] == subscriber_hash(ADA)


def test_parallel_upserts_all_land(client, list_id):
    emails = [f"reader{i}@lodestone.dev" for i in range(64)]

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(
            pool.map(
                lambda e: upsert(client, list_id, e, status_if_new="subscribed")["status"], emails
            )
        )

    assert statuses == ["subscribed"] * len(emails)
    assert client.lists.get_list(list_id)["stats"]["member_count"] == len(emails)
