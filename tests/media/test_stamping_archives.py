"""EPUB and ZIP downloads carry their buyer as far as the formats allow: a licence page and
package metadata in an EPUB, a LICENSE.txt and the archive comment in a ZIP."""

import io
import re
import subprocess
import zipfile

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.test import RequestFactory

from media.downloads import download_deliver
from media.models import DownloadDelivery
from media.stamping.markers import tagged
from media.stamping.prepare import forget_cached
from media.stamping.samples import sample_epub, sample_zip

pytestmark = pytest.mark.django_db

STAMP = "Licensed to Leila Ahmadi <leila@example.com> · order 1042"


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


def _deliver(protected, name: str, data: bytes, filename: str) -> tuple[bytes, DownloadDelivery]:
    stored = protected.save(name, ContentFile(data))
    response = download_deliver(
        source_name=stored,
        user=None,
        subscriber_email="leila@example.com",
        recipient_name="Leila Ahmadi",
        order_reference="1042",
        filename=filename,
        request=RequestFactory().get("/"),
    )
    return b"".join(response.streaming_content), DownloadDelivery.objects.get()


def test_epub_gets_a_licence_page_after_the_cover_in_the_reading_order(protected):
    data, row = _deliver(protected, "books/binding.epub", sample_epub(), "binding.epub")

    with zipfile.ZipFile(io.BytesIO(data)) as epub:
        opf = epub.read("OEBPS/content.opf").decode()
        licence = epub.read("OEBPS/lodestone-licence.xhtml").decode()

    assert "<i>The Quiet Art of Binding</i>" in licence
    assert "Licensed to Leila Ahmadi &lt;leila@example.com&gt; · order 1042" in licence
    assert tagged(row.marker) in licence
    spine = re.findall(r'<itemref idref="([^"]+)"/>', opf)
    assert spine == ["c0", "lodestone-licence", "c1", "c2", "c3"]
    assert 'href="lodestone-licence.xhtml"' in opf


def test_epub_metadata_names_the_buyer_and_the_marker(protected):
    data, row = _deliver(protected, "books/binding.epub", sample_epub(), "binding.epub")

    with zipfile.ZipFile(io.BytesIO(data)) as epub:
        opf = epub.read("OEBPS/content.opf").decode()

    assert (
        "<dc:rights>Licensed to Leila Ahmadi &lt;leila@example.com&gt; · order 1042</dc:rights>"
        in opf
    )
    assert f'<meta name="lodestone:marker" content="{tagged(row.marker)}"/>' in opf
    assert opf.count("<dc:title>") == 1


def test_stamped_epub_is_still_a_valid_epub_container(protected):
    data, row = _deliver(protected, "books/binding.epub", sample_epub(), "binding.epub")

    with zipfile.ZipFile(io.BytesIO(data)) as epub:
        assert epub.testzip() is None
        names = epub.namelist()
        first = epub.infolist()[0]
        chapter = epub.read("OEBPS/chapter-2.xhtml")

    # mimetype stays the first entry, stored: readers sniff the type from those bytes.
    assert names[0] == "mimetype"
    assert first.compress_type == zipfile.ZIP_STORED
    assert data[30:38] == b"mimetype"
    assert names.count("OEBPS/content.opf") == 1
    assert b"Chapter 2" in chapter
    assert tagged(row.marker).encode() in zipfile.ZipFile(io.BytesIO(data)).comment


def test_zip_gets_a_licence_file_and_a_comment_naming_the_buyer(protected):
    data, row = _deliver(protected, "bundles/course.zip", sample_zip(), "course.zip")

    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        licence = bundle.read("LICENSE.txt").decode()
        comment = bundle.comment.decode()

    assert STAMP in licence
    assert tagged(row.marker) in licence
    assert comment == f"{STAMP} · {tagged(row.marker)}"


def test_zip_keeps_every_original_file_intact(protected, tmp_path):
    original = sample_zip()
    data, _row = _deliver(protected, "bundles/course.zip", original, "course.zip")
    (tmp_path / "course.zip").write_bytes(data)

    unzip = subprocess.run(["unzip", "-t", str(tmp_path / "course.zip")], capture_output=True)

    assert unzip.returncode == 0, unzip.stdout.decode() + unzip.stderr.decode()
    with (
        zipfile.ZipFile(io.BytesIO(original)) as before,
        zipfile.ZipFile(io.BytesIO(data)) as after,
    ):
        for name in before.namelist():
            assert after.read(name) == before.read(name)


def test_zip_ledger_hash_matches_the_bytes_received(protected):
    import hashlib

    data, row = _deliver(protected, "bundles/course.zip", sample_zip(), "course.zip")

    assert row.sent_sha256 == hashlib.sha256(data).hexdigest()
    assert row.sent_size == len(data)
    assert row.stamped is True
