"""A PDF prepared once and finished per buyer by an incremental update: checked with the
real tools (qpdf, poppler's pdftotext/pdftoppm, and PDFium, Chromium's PDF engine)."""

import io
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image

from media.exceptions import SourceCorrupt, SourceEncrypted
from media.stamping.markers import marker_new, tagged
from media.stamping.pdf import Licensee, PreparedPdf, pdf_prepare, pdf_suffix
from media.stamping.samples import sample_pdf
from tests.harness.browser import CHROMIUM, CHROMIUM_ARGS

ISSUED = datetime(2026, 5, 4, 10, 30, tzinfo=UTC)
BUYER = Licensee("Leila Ahmadi", "leila@example.com", "1042", "")


def _stamped(tmp_path: Path, source: bytes, licensee: Licensee = BUYER) -> tuple[Path, Licensee]:
    (tmp_path / "source.pdf").write_bytes(source)
    prepared = pdf_prepare(tmp_path / "source.pdf", tmp_path / "base.pdf")
    # Through JSON, as the manifest is stored.
    prepared = PreparedPdf.from_json(prepared.to_json())
    licensee = Licensee(licensee.name, licensee.email, licensee.order_reference, marker_new())
    out = tmp_path / "stamped.pdf"
    out.write_bytes(
        (tmp_path / "base.pdf").read_bytes() + pdf_suffix(prepared, licensee, issued_at=ISSUED)
    )
    return out, licensee


def _pages_text(path: Path) -> list[str]:
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    ).stdout.decode()
    return text.split("\f")[:-1]


def _qpdf_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)


def test_stamped_pdf_passes_qpdf_check(tmp_path):
    stamped, _ = _stamped(tmp_path, sample_pdf(12))

    result = _qpdf_check(stamped)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "No syntax or stream encoding errors found" in result.stdout


def test_every_page_shows_the_buyers_name_email_and_order(tmp_path):
    stamped, _ = _stamped(tmp_path, sample_pdf(12))

    pages = _pages_text(stamped)

    assert len(pages) == 12
    for page in pages:
        assert "Licensed to Leila Ahmadi <leila@example.com> · order 1042" in page
        assert "Chapter" in page  # the book's own text is still there


def test_every_page_carries_the_marker_in_its_content(tmp_path):
    stamped, licensee = _stamped(tmp_path, sample_pdf(8))

    pages = _pages_text(stamped)

    assert all(tagged(licensee.marker) in page for page in pages)


def test_marker_and_licence_are_in_the_document_metadata(tmp_path):
    stamped, licensee = _stamped(tmp_path, sample_pdf(3))

    with pikepdf.open(stamped) as pdf:
        info = pdf.docinfo
        xmp = pdf.Root.Metadata.read_bytes().decode()

    assert str(info["/LodestoneMarker"]) == tagged(licensee.marker)
    assert str(info["/Title"]) == "The Quiet Art of Binding"
    assert tagged(licensee.marker) in xmp
    assert "Licensed to Leila Ahmadi &lt;leila@example.com&gt; · order 1042" in xmp


def test_poppler_renders_the_stamp_at_the_foot_of_each_page(tmp_path):
    stamped, _ = _stamped(tmp_path, sample_pdf(3))

    subprocess.run(["pdftoppm", "-r", "72", "-png", str(stamped), str(tmp_path / "p")], check=True)

    renders = sorted(tmp_path.glob("p-*.png"))
    assert len(renders) == 3
    for render in renders:
        image = Image.open(render).convert("L")
        width, height = image.size
        foot = image.crop((width // 4, height - 20, 3 * width // 4, height - 4))
        assert foot.getextrema()[0] < 160, f"no stamp drawn at the foot of {render.name}"


def test_chromiums_pdf_engine_opens_and_draws_the_stamped_file(tmp_path):
    stamped, _ = _stamped(tmp_path, sample_pdf(4))

    document = pdfium.PdfDocument(str(stamped))

    assert len(document) == 4
    for index in range(len(document)):
        page = document[index]
        assert "leila@example.com" in page.get_textpage().get_text_range()
        image = page.render(scale=1).to_pil().convert("L")
        width, height = image.size
        assert (
            image.crop((width // 4, height - 20, 3 * width // 4, height - 4)).getextrema()[0] < 160
        )


def test_rotated_and_odd_sized_pages_get_an_upright_stamp_on_the_visible_page(tmp_path):
    source = sample_pdf(3, rotate={2: 90, 3: 270}, page_size=(420, 595))
    stamped, _ = _stamped(tmp_path, source)

    subprocess.run(["pdftoppm", "-r", "72", "-png", str(stamped), str(tmp_path / "p")], check=True)

    assert all("leila@example.com" in page for page in _pages_text(stamped))
    for render in sorted(tmp_path.glob("p-*.png")):
        image = Image.open(render).convert("L")
        width, height = image.size
        # Upright at the bottom edge of the page as displayed: rotated pages render in
        # landscape, and the stamp is still along the bottom.
        foot = image.crop((width // 4, height - 16, 3 * width // 4, height - 2))
        assert foot.getextrema()[0] < 160, render.name


def test_names_in_any_latin_greek_or_cyrillic_script_are_drawn(tmp_path):
    buyer = Licensee("Nguyễn Văn Anh · Дарья Ωμέγα", "anh@example.com", "77", "")
    stamped, _ = _stamped(tmp_path, sample_pdf(2), buyer)

    pages = _pages_text(stamped)

    assert all("Nguyễn Văn Anh · Дарья Ωμέγα <anh@example.com>" in page for page in pages)


def test_a_name_in_a_script_the_font_lacks_leaves_the_email_on_the_stamp(tmp_path):
    buyer = Licensee("لیلا", "leila@example.com", "", "")
    stamped, _ = _stamped(tmp_path, sample_pdf(2), buyer)

    pages = _pages_text(stamped)

    assert all("Licensed to leila@example.com" in page for page in pages)
    assert not any("?" in page for page in pages)


def test_cutting_the_file_at_its_first_eof_yields_no_readable_copy(tmp_path):
    stamped, _ = _stamped(tmp_path, sample_pdf(6))
    data = stamped.read_bytes()
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(data[: data.index(b"%%EOF") + len(b"%%EOF\n")])

    check = _qpdf_check(truncated)
    repaired = subprocess.run(
        ["qpdf", str(truncated), str(tmp_path / "repaired.pdf")], capture_output=True
    )
    text = subprocess.run(["pdftotext", str(truncated), "-"], capture_output=True)
    render = subprocess.run(
        ["pdftoppm", "-r", "20", "-png", str(truncated), str(tmp_path / "t")], capture_output=True
    )

    assert check.returncode != 0
    assert repaired.returncode != 0
    assert text.returncode != 0
    assert b"Chapter" not in text.stdout
    assert render.returncode != 0
    assert not list(tmp_path.glob("t*.png"))


def test_the_truncated_base_holds_no_catalog_page_tree_or_page(tmp_path):
    stamped, _ = _stamped(tmp_path, sample_pdf(6))
    data = stamped.read_bytes()
    base = data[: data.index(b"%%EOF")]

    for kind in (b"/Catalog", b"/Pages", b"/Page ", b"/Page/", b"/Page>>"):
        assert kind not in base


def test_chromiums_pdf_engine_refuses_the_truncated_base(tmp_path):
    stamped, _ = _stamped(tmp_path, sample_pdf(3))
    data = stamped.read_bytes()
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(data[: data.index(b"%%EOF") + 6])

    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(str(truncated))


def test_two_buyers_differ_only_in_their_part_after_the_shared_base(tmp_path):
    (tmp_path / "source.pdf").write_bytes(sample_pdf(5))
    prepared = pdf_prepare(tmp_path / "source.pdf", tmp_path / "base.pdf")
    one = Licensee("A", "a@example.com", "1", marker_new())
    two = Licensee("B", "b@example.com", "2", marker_new())

    first = pdf_suffix(prepared, one, issued_at=ISSUED)
    second = pdf_suffix(prepared, two, issued_at=ISSUED)

    assert first != second
    assert len(first) < 20_000  # the buyer's part: small, whatever the book weighs
    assert tagged(one.marker).encode() in first
    assert tagged(two.marker).encode() not in first


def test_a_damaged_pdf_is_refused_with_a_message_for_the_creator(tmp_path):
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 40)

    with pytest.raises(SourceCorrupt, match="cannot be read as a PDF"):
        pdf_prepare(damaged, tmp_path / "base.pdf")


def test_a_pdf_cut_short_in_transfer_is_refused(tmp_path):
    source = sample_pdf(4)
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(source[: len(source) // 3])

    with pytest.raises(SourceCorrupt):
        pdf_prepare(cut, tmp_path / "base.pdf")


def test_a_password_protected_pdf_is_refused_with_a_message_for_the_creator(tmp_path):
    with pikepdf.open(io.BytesIO(sample_pdf(2))) as pdf:
        pdf.save(tmp_path / "locked.pdf", encryption=pikepdf.Encryption(owner="o", user="u"))

    with pytest.raises(SourceEncrypted, match="password-protected"):
        pdf_prepare(tmp_path / "locked.pdf", tmp_path / "base.pdf")


def test_a_pdf_encrypted_only_with_permission_restrictions_is_refused_too(tmp_path):
    with pikepdf.open(io.BytesIO(sample_pdf(2))) as pdf:
        pdf.save(tmp_path / "restricted.pdf", encryption=pikepdf.Encryption(owner="o", user=""))

    with pytest.raises(SourceEncrypted, match="encrypted"):
        pdf_prepare(tmp_path / "restricted.pdf", tmp_path / "base.pdf")


def test_a_tagged_pdf_printed_by_chromium_keeps_its_links_outline_and_structure(tmp_path):
    # given a realistic book page: headings, an internal and an external link, a photo
    Image.effect_noise((300, 200), 50).convert("RGB").save(tmp_path / "photo.jpg")
    (tmp_path / "book.html").write_text(
        "<html><body><h1 id='one'>Chapter One</h1><p>See <a href='#two'>chapter two</a> "
        "or <a href='https://example.com/'>the website</a>.</p><img src='photo.jpg'>"
        "<h1 id='two' style='page-break-before: always'>Chapter Two</h1><p>Ελληνικά, Русский.</p>"
        "</body></html>"
    )
    subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_ARGS,
            f"--print-to-pdf={tmp_path / 'book.pdf'}",
            "--no-pdf-header-footer",
            "--generate-pdf-document-outline",
            (tmp_path / "book.html").as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )

    # when it is stamped
    stamped, _ = _stamped(tmp_path, (tmp_path / "book.pdf").read_bytes())

    # then it is still the same document, with the stamp on both pages
    assert _qpdf_check(stamped).returncode == 0
    with pikepdf.open(tmp_path / "book.pdf") as before, pikepdf.open(stamped) as after:
        assert len(after.pages) == len(before.pages) == 2
        assert "/StructTreeRoot" in after.Root
        assert str(after.Root.Outlines.First.Title) == "Chapter One"
        links = [a for a in after.pages[0].Annots if a.Subtype == "/Link"]
        assert len(links) == len([a for a in before.pages[0].Annots if a.Subtype == "/Link"])
    pages = _pages_text(stamped)
    assert "Chapter Two" in pages[1]
    assert all("Licensed to Leila Ahmadi <leila@example.com> · order 1042" in p for p in pages)
