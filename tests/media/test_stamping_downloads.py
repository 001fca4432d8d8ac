"""download_deliver: a stamped copy streamed from the protected store, recorded in the
ledger with the hash of exactly what was sent, within a per-buyer download limit."""

import hashlib
import io
import subprocess
import threading
import time
from datetime import timedelta

import pikepdf
import pytest
from botocore.config import Config
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import RequestFactory
from django.utils import timezone

from media.downloads import download_deliver, http_status, source_problem
from media.exceptions import DownloadLimitReached, DownloadUnavailable, StorageUnavailable
from media.models import DownloadDelivery
from media.stamping.markers import markers_in
from media.stamping.prepare import forget_cached, is_derived_name
from media.stamping.samples import sample_pdf
from media.stamping.tasks import download_prepare
from tests.harness.ports import free_port

pytestmark = pytest.mark.django_db

BOOK = sample_pdf(10)


@pytest.fixture
def protected(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    forget_cached()
    yield storages["protected"]
    forget_cached()


@pytest.fixture
def book(protected) -> str:
    return protected.save("courses/binding/book.pdf", ContentFile(BOOK))


@pytest.fixture
def buyer(django_user_model):
    return django_user_model.objects.create_user(
        email="leila@example.com", password="-", first_name="Leila", last_name="Ahmadi"
    )


def _request():
    return RequestFactory().get("/", REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="Firefox/140")


def _deliver(name, buyer, **kwargs):
    kwargs.setdefault("order_reference", "1042")
    return download_deliver(
        source_name=name,
        user=buyer,
        filename=kwargs.pop("filename", "The Quiet Art of Binding.pdf"),
        request=_request(),
        **kwargs,
    )


def _received(response) -> bytes:
    return b"".join(response.streaming_content)


def _text(data: bytes, tmp_path) -> str:
    path = tmp_path / "received.pdf"
    path.write_bytes(data)
    return subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    ).stdout.decode()


def test_download_streams_a_copy_stamped_for_the_buyer(book, buyer, tmp_path):
    response = _deliver(book, buyer)

    data = _received(response)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == (
        "attachment; filename*=UTF-8''The%20Quiet%20Art%20of%20Binding.pdf"
    )
    assert response["Cache-Control"] == "private, no-store"
    pages = _text(data, tmp_path).split("\f")[:-1]
    assert len(pages) == 10
    assert all("Licensed to Leila Ahmadi <leila@example.com> · order 1042" in p for p in pages)


def test_ledger_records_the_hash_and_size_of_exactly_the_bytes_received(book, buyer):
    response = _deliver(book, buyer)

    data = _received(response)

    row = DownloadDelivery.objects.get()
    assert row.sent_sha256 == hashlib.sha256(data).hexdigest()
    assert row.sent_size == len(data) == int(response["Content-Length"])
    assert row.source_sha256 == hashlib.sha256(BOOK).hexdigest()
    assert row.source_name == book
    assert (row.user, row.order_reference, row.recipient_name) == (buyer, "1042", "Leila Ahmadi")
    assert (row.ip_address, row.user_agent) == ("198.51.100.7", "Firefox/140")
    assert row.stamped is True
    assert markers_in(data) == [row.marker]
    assert response.delivery == row


def test_each_download_gets_its_own_marker_but_shares_one_prepared_base(book, buyer, protected):
    first = _received(_deliver(book, buyer))
    second = _received(_deliver(book, buyer))

    markers = list(DownloadDelivery.objects.values_list("marker", flat=True))
    assert len(set(markers)) == 2
    assert first != second
    _dirs, files = protected.listdir("courses/binding")
    derived = [name for name in files if is_derived_name(name)]
    # The source, its manifest and one prepared base: no per-buyer copies are stored.
    assert sorted(files) == sorted(["book.pdf", *derived])
    assert len(derived) == 2


def test_sixth_download_in_the_window_is_refused_with_a_clear_message(book, buyer):
    for _ in range(5):
        _received(_deliver(book, buyer))

    with pytest.raises(DownloadLimitReached) as refused:
        _deliver(book, buyer)

    message = str(refused.value)
    assert "You have downloaded The Quiet Art of Binding.pdf 5 times in the last 30 days" in message
    assert "You can download it again from" in message
    assert http_status(refused.value) == 429
    assert DownloadDelivery.objects.count() == 5


def test_download_limit_follows_the_settings(book, buyer, settings):
    settings.DOWNLOAD_LIMIT_COUNT = 2
    settings.DOWNLOAD_LIMIT_WINDOW_DAYS = 7
    _deliver(book, buyer)
    _deliver(book, buyer)

    with pytest.raises(DownloadLimitReached, match="2 times in the last 7 days"):
        _deliver(book, buyer)


def test_downloads_older_than_the_window_do_not_count(book, buyer):
    for _ in range(5):
        _deliver(book, buyer)
    DownloadDelivery.objects.update(created_at=timezone.now() - timedelta(days=31))

    response = _deliver(book, buyer)

    assert response.status_code == 200


def test_one_buyers_limit_does_not_touch_another_buyer(book, buyer, django_user_model):
    for _ in range(5):
        _deliver(book, buyer)
    other = django_user_model.objects.create_user(email="sam@example.com", password="-")

    response = _deliver(book, other)

    assert DownloadDelivery.objects.filter(user=other).count() == 1
    assert response.status_code == 200


def test_damaged_pdf_is_reported_to_the_creator_and_not_sent_to_buyers(protected, buyer):
    name = protected.save("courses/binding/broken.pdf", ContentFile(b"%PDF-1.7\n" + b"\x00" * 900))

    problem = source_problem(name)

    assert "cannot be read as a PDF" in problem
    with pytest.raises(DownloadUnavailable, match="cannot be delivered right now"):
        _deliver(name, buyer)
    assert not DownloadDelivery.objects.exists()


def test_encrypted_pdf_is_reported_to_the_creator_and_not_sent_to_buyers(protected, buyer):
    locked = io.BytesIO()
    with pikepdf.open(io.BytesIO(sample_pdf(2))) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(owner="owner", user="reader"))
    name = protected.save("courses/binding/locked.pdf", ContentFile(locked.getvalue()))

    assert "password-protected" in source_problem(name)
    with pytest.raises(DownloadUnavailable):
        _deliver(name, buyer)


def test_unstampable_pdf_is_sent_as_it_is_only_when_allowed_and_recorded_as_unstamped(
    protected, buyer
):
    broken = b"%PDF-1.7\n" + b"\x00" * 900
    name = protected.save("courses/binding/broken.pdf", ContentFile(broken))

    data = _received(_deliver(name, buyer, allow_unstamped=True))

    assert data == broken
    row = DownloadDelivery.objects.get()
    assert row.stamped is False
    assert row.sent_sha256 == hashlib.sha256(broken).hexdigest()


def test_a_replaced_source_is_prepared_again(protected, buyer, tmp_path):
    name = protected.save("courses/binding/book.pdf", ContentFile(sample_pdf(2)))
    _received(_deliver(name, buyer))
    protected.delete(name)
    protected.save(name, ContentFile(sample_pdf(4, seed=9)))

    data = _received(_deliver(name, buyer))

    assert len(_text(data, tmp_path).split("\f")[:-1]) == 4
    versions = set(DownloadDelivery.objects.values_list("source_sha256", flat=True))
    assert len(versions) == 2


def test_within_the_recheck_window_a_process_does_not_ask_the_store_again(
    protected, buyer, settings
):
    # given a process that has just delivered a file and trusts what it knows for a minute
    settings.DOWNLOAD_SOURCE_RECHECK_SECONDS = 60
    name = protected.save("courses/binding/window.pdf", ContentFile(sample_pdf(2)))
    first = _received(_deliver(name, buyer))
    # when the source is replaced under the same name within that minute
    protected.delete(name)
    protected.save(name, ContentFile(sample_pdf(4, seed=9)))

    # then this process still sends the version it checked (from the prepared base), and
    # the ledger names that version
    second = _received(_deliver(name, buyer))
    assert len(second) == len(first)
    assert len(set(DownloadDelivery.objects.values_list("source_sha256", flat=True))) == 1

    # and once the window is over it sees the replacement
    settings.DOWNLOAD_SOURCE_RECHECK_SECONDS = 0
    assert len(_received(_deliver(name, buyer))) != len(first)
    assert len(set(DownloadDelivery.objects.values_list("source_sha256", flat=True))) == 2


def test_files_that_cannot_carry_a_stamp_are_sent_as_they_are_and_recorded(protected, buyer):
    audio = b"ID3\x04" + bytes(range(256)) * 50
    name = protected.save("courses/binding/interview.mp3", ContentFile(audio))

    response = _deliver(name, buyer, filename="interview.mp3")

    assert _received(response) == audio
    assert response["Content-Type"] == "audio/mpeg"
    assert DownloadDelivery.objects.get().stamped is False


def test_a_store_that_does_not_answer_is_a_clear_transient_error(settings, buyer):
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": "lodestone-protected",
                "access_key": "test",
                "secret_key": "test-secret",
                "endpoint_url": f"http://127.0.0.1:{free_port()}",
                "region_name": "us-east-1",
                "client_config": Config(
                    connect_timeout=1, read_timeout=1, retries={"max_attempts": 1}
                ),
            },
        },
    }
    forget_cached()

    with pytest.raises(StorageUnavailable, match="Please try again") as failed:
        _deliver("courses/binding/book.pdf", buyer)

    assert http_status(failed.value) == 503
    assert not DownloadDelivery.objects.exists()


def test_stamped_download_streams_from_s3(s3_protected_storage, buyer, tmp_path):
    forget_cached()
    storage = s3_protected_storage.storage
    name = storage.save("courses/binding/book.pdf", ContentFile(BOOK))

    response = _deliver(name, buyer)
    data = _received(response)

    row = DownloadDelivery.objects.get()
    assert row.sent_sha256 == hashlib.sha256(data).hexdigest()
    assert "Licensed to Leila Ahmadi <leila@example.com>" in _text(data, tmp_path)
    forget_cached()


def _at_once(count: int, work) -> tuple[list, list]:
    """Run work(i) in `count` threads released together; (results, errors)."""
    barrier = threading.Barrier(count)
    results, errors = [], []

    def run(i):
        try:
            barrier.wait()
            results.append(work(i))
        except Exception as exc:  # collected for the assertions
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


@pytest.mark.django_db(transaction=True)
def test_simultaneous_first_downloads_prepare_the_file_only_once(
    protected, django_user_model, caplog
):
    name = protected.save("courses/binding/book.pdf", ContentFile(BOOK))
    buyers = [
        django_user_model.objects.create_user(email=f"reader{i}@example.com", password="-")
        for i in range(4)
    ]
    caplog.set_level("INFO", logger="media.stamping.prepare")

    results, errors = _at_once(4, lambda i: _received(_deliver(name, buyers[i])))

    assert errors == []
    assert len(results) == 4
    prepared = [r for r in caplog.records if r.getMessage().startswith("Prepared ")]
    assert len(prepared) == 1
    rows = DownloadDelivery.objects.all()
    assert {row.sent_sha256 for row in rows} == {hashlib.sha256(d).hexdigest() for d in results}


def _a_download_waits_for_an_advisory_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_download_racing_another_for_the_last_slot_waits_and_is_refused(protected, buyer):
    # given four downloads, and a fifth whose transaction has not committed yet
    name = protected.save("courses/binding/book.pdf", ContentFile(BOOK))
    for _ in range(4):
        _received(_deliver(name, buyer))
    fifth_sent, commit_fifth = threading.Event(), threading.Event()
    outcome = {}

    def fifth():
        try:
            with transaction.atomic():
                _received(_deliver(name, buyer))
                fifth_sent.set()
                commit_fifth.wait(30)
        finally:
            connection.close()

    def sixth():
        try:
            outcome["sixth"] = _received(_deliver(name, buyer))
        except DownloadLimitReached as refused:
            outcome["sixth"] = refused
        finally:
            connection.close()

    first = threading.Thread(target=fifth)
    first.start()
    assert fifth_sent.wait(30)

    # when a sixth starts meanwhile
    second = threading.Thread(target=sixth)
    second.start()
    deadline = time.monotonic() + 30
    while second.is_alive() and not _a_download_waits_for_an_advisory_lock():
        assert time.monotonic() < deadline
    commit_fifth.set()
    first.join()
    second.join()

    # then it waited for the fifth to commit, counted it, and was refused
    assert isinstance(outcome["sixth"], DownloadLimitReached)
    assert DownloadDelivery.objects.count() == 5


def test_a_file_prepared_ahead_by_the_task_is_not_prepared_again_on_download(book, buyer, caplog):
    caplog.set_level("INFO", logger="media.stamping.prepare")
    assert download_prepare.apply(args=[book]).get() == ""
    forget_cached()  # the download runs in another process than the worker
    caplog.clear()

    _received(_deliver(book, buyer))

    assert not [r for r in caplog.records if r.getMessage().startswith("Prepared ")]


def test_prepare_downloads_reports_the_files_that_cannot_be_stamped(protected, book):
    protected.save("courses/binding/broken.pdf", ContentFile(b"%PDF-1.7\n" + b"\x00" * 900))
    out = io.StringIO()

    with pytest.raises(CommandError, match="1 of 2 files cannot be stamped"):
        call_command("prepare_downloads", "--prefix", "courses", stdout=out)

    report = out.getvalue()
    assert "courses/binding/book.pdf: ready (pdf," in report
    assert "courses/binding/broken.pdf: NOT STAMPABLE: This file cannot be read as a PDF" in report
