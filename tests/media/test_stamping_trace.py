"""manage.py trace_leak: from a leaked file back to the delivery, when the copy was sent
as it was, stripped of metadata, cropped away from its visible stamp or re-saved."""

import io
import subprocess
import zipfile
from decimal import Decimal

import pikepdf
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.test import RequestFactory

from media.downloads import download_deliver
from media.models import DownloadDelivery
from media.stamping.prepare import forget_cached
from media.stamping.samples import sample_epub, sample_pdf, sample_zip

pytestmark = pytest.mark.django_db


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
def buyer(django_user_model):
    return django_user_model.objects.create_user(
        email="leila@example.com", password="-", first_name="Leila", last_name="Ahmadi"
    )


def _leak(protected, buyer, tmp_path, data=None, name="books/binding.pdf") -> tuple:
    stored = protected.save(name, ContentFile(data or sample_pdf(6)))
    # Someone else downloads too: the trace must pick the right row.
    for email in ("sam@example.com", "leila@example.com"):
        response = download_deliver(
            source_name=stored,
            user=buyer if email == buyer.email else None,
            subscriber_email="" if email == buyer.email else email,
            order_reference="1042" if email == buyer.email else "",
            filename=name.rsplit("/", 1)[1],
            request=RequestFactory().get("/", REMOTE_ADDR="203.0.113.9"),
        )
        sent = b"".join(response.streaming_content)
    leaked = tmp_path / ("leaked-" + name.replace("/", "-"))
    leaked.write_bytes(sent)
    return leaked, DownloadDelivery.objects.get(user=buyer, source_name=stored)


def _trace(path) -> str:
    out = io.StringIO()
    call_command("trace_leak", str(path), stdout=out)
    return out.getvalue()


def _assert_names_the_buyer(report: str, row: DownloadDelivery) -> None:
    assert f"Marker {row.marker}" in report
    assert "Delivered to: Leila Ahmadi <leila@example.com> (account #" in report
    assert "Order:        1042" in report
    assert f"Date:         {row.created_at:%Y-%m-%d %H:%M:%S}" in report
    assert "From:         203.0.113.9" in report
    assert "sam@example.com" not in report


def test_the_file_as_sent_names_its_buyer_order_and_date(protected, buyer, tmp_path):
    leaked, row = _leak(protected, buyer, tmp_path)

    report = _trace(leaked)

    _assert_names_the_buyer(report, row)
    assert "page content" in report
    assert "document info" in report
    assert "XMP metadata" in report
    assert "byte for byte the file that was sent" in report


def test_a_copy_with_its_metadata_stripped_is_still_traced(protected, buyer, tmp_path):
    leaked, row = _leak(protected, buyer, tmp_path)
    stripped = tmp_path / "stripped.pdf"
    with pikepdf.open(leaked) as pdf:
        del pdf.trailer["/Info"]
        del pdf.Root["/Metadata"]
        pdf.save(stripped)

    report = _trace(stripped)

    _assert_names_the_buyer(report, row)
    assert "document info" not in report
    assert "XMP metadata" not in report
    assert "altered after delivery" in report


def test_a_copy_cropped_away_from_its_visible_stamp_is_still_traced(protected, buyer, tmp_path):
    leaked, row = _leak(protected, buyer, tmp_path)
    cropped = tmp_path / "cropped.pdf"
    with pikepdf.open(leaked) as pdf:
        for page in pdf.pages:
            page.MediaBox = [0, Decimal(60), 612, 780]
        del pdf.trailer["/Info"]
        pdf.save(cropped)
    text = subprocess.run(["pdftotext", str(cropped), "-"], capture_output=True).stdout.decode()
    assert "leila@example.com" not in text  # the visible stamp is gone

    report = _trace(cropped)

    _assert_names_the_buyer(report, row)


def test_a_copy_re_saved_page_by_page_by_qpdf_is_still_traced(protected, buyer, tmp_path):
    leaked, row = _leak(protected, buyer, tmp_path)
    resaved = tmp_path / "resaved.pdf"
    subprocess.run(
        ["qpdf", "--empty", "--pages", str(leaked), "1-z", "--", str(resaved)], check=True
    )

    report = _trace(resaved)

    _assert_names_the_buyer(report, row)


def test_a_cropped_stripped_and_re_saved_copy_still_shows_the_marker_to_pdftotext(
    protected, buyer, tmp_path
):
    leaked, row = _leak(protected, buyer, tmp_path)
    cropped = tmp_path / "cropped.pdf"
    with pikepdf.open(leaked) as pdf:
        for page in pdf.pages:
            page.CropBox = [0, 100, 612, 700]
        pdf.save(cropped)
    resaved = tmp_path / "resaved.pdf"
    subprocess.run(
        ["qpdf", "--empty", "--pages", str(cropped), "1-z", "--", str(resaved)], check=True
    )

    text = subprocess.run(["pdftotext", str(resaved), "-"], capture_output=True).stdout.decode()

    assert text.count(f"LSM-{row.marker}") >= 6  # once per page, in the middle of the page
    _assert_names_the_buyer(_trace(resaved), row)


def test_a_clean_pdf_is_reported_as_having_no_marker(tmp_path):
    clean = tmp_path / "clean.pdf"
    clean.write_bytes(sample_pdf(2))

    with pytest.raises(CommandError, match="No marker found"):
        _trace(clean)


def test_a_leaked_epub_and_zip_are_traced(protected, buyer, tmp_path):
    epub, epub_row = _leak(protected, buyer, tmp_path, sample_epub(), "books/binding.epub")
    bundle, zip_row = _leak(protected, buyer, tmp_path, sample_zip(), "bundles/course.zip")

    assert f"Marker {epub_row.marker}" in _trace(epub)
    assert f"Marker {zip_row.marker}" in _trace(bundle)


def test_a_zip_repacked_without_its_licence_and_comment_has_no_marker(protected, buyer, tmp_path):
    bundle, _row = _leak(protected, buyer, tmp_path, sample_zip(), "bundles/course.zip")
    repacked = tmp_path / "repacked.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(repacked, "w") as out:
        for info in src.infolist():
            if info.filename != "LICENSE.txt":
                out.writestr(info, src.read(info))

    with pytest.raises(CommandError, match="No marker found"):
        _trace(repacked)
