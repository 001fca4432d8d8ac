"""Realistic sample files (a book-like PDF with text and photos, an EPUB, a ZIP), made on
the spot: for the tests, the stamping benchmark and trying a deployment by hand."""

import io
import random
import zipfile

import pikepdf
from pikepdf import Array, Dictionary, Name, Stream

WORDS = [
    *("paper", "thread", "glue", "spine", "signature", "folio", "press", "awl", "linen"),
    *("board", "kettle", "stitch", "bone", "folder", "grain", "headband", "endpaper"),
    *("quire", "sewing", "frame", "mull", "tape", "cover", "cloth", "leather"),
]


def sample_pdf(
    pages: int = 5,
    *,
    photos: int | None = None,
    photo_size: tuple[int, int] = (360, 270),
    seed: int = 1,
    page_size: tuple[float, float] = (612, 792),
    rotate: dict[int, int] | None = None,
    title: str = "The Quiet Art of Binding",
) -> bytes:
    """A PDF with a chapter heading and ~30 lines of text per page and a photo on every
    page; `photos` distinct JPEGs are cycled (default: one per page, like a real book)."""
    from PIL import Image, ImageDraw

    rnd = random.Random(seed)  # noqa: S311 - sample text, not a secret
    pdf = pikepdf.new()
    font = pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.Type1,
            BaseFont=Name("/Times-Roman"),
            Encoding=Name.WinAnsiEncoding,
        )
    )
    images = []
    for i in range(photos if photos is not None else pages):
        image = Image.effect_noise(photo_size, 40 + i % 30).convert("RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = rnd.randrange(photo_size[0]), rnd.randrange(photo_size[1])
            colour = tuple(rnd.randrange(256) for _ in range(3))
            draw.ellipse((x, y, x + rnd.randrange(20, 120), y + rnd.randrange(20, 90)), fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=82)
        stream = pdf.make_indirect(Stream(pdf, buffer.getvalue()))
        stream.Type, stream.Subtype = Name.XObject, Name.Image
        stream.Width, stream.Height = photo_size
        stream.ColorSpace, stream.BitsPerComponent, stream.Filter = (
            Name.DeviceRGB,
            8,
            Name.DCTDecode,
        )
        images.append(stream)
    width, height = page_size
    for number in range(1, pages + 1):
        lines = [b"BT /F1 16 Tf 72 %d Td" % (height - 72)]
        lines.append(b"(Chapter %d, page %d) Tj" % ((number - 1) // 10 + 1, number))
        lines.append(b"/F1 11 Tf 0 -28 Td 14 TL")
        for _ in range(28):
            line = " ".join(rnd.choice(WORDS) for _ in range(12))
            lines.append(b"(" + line.encode() + b") Tj T*")
        lines.append(b"ET")
        resources = Dictionary(Font=Dictionary(F1=font))
        if images:
            resources.XObject = Dictionary(Im1=images[(number - 1) % len(images)])
            lines.append(b"q 216 0 0 162 %d 60 cm /Im1 Do Q" % (width - 288))
        page = Dictionary(
            Type=Name.Page,
            MediaBox=Array([0, 0, width, height]),
            Contents=pdf.make_indirect(Stream(pdf, b"\n".join(lines))),
            Resources=resources,
        )
        if rotate and number in rotate:
            page.Rotate = rotate[number]
        pdf.pages.append(pikepdf.Page(page))
    pdf.docinfo["/Title"] = title
    pdf.docinfo["/Author"] = "Maren Holt"
    out = io.BytesIO()
    pdf.save(out, compress_streams=True, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    return out.getvalue()


def sample_epub(*, title: str = "The Quiet Art of Binding", chapters: int = 3) -> bytes:
    """A small valid EPUB 3: mimetype first and stored, a cover page, chapters, a nav."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as epub:
        epub.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip", zipfile.ZIP_STORED)
        epub.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?>\n<container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
            zipfile.ZIP_DEFLATED,
        )
        items, refs = [], []
        for n in range(chapters + 1):
            name = "cover.xhtml" if n == 0 else f"chapter-{n}.xhtml"
            heading = title if n == 0 else f"Chapter {n}"
            epub.writestr(
                f"OEBPS/{name}",
                '<?xml version="1.0" encoding="utf-8"?>\n'
                '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>'
                f"{heading}</title></head><body><h1>{heading}</h1>"
                "<p>Fold the signatures, then sew them along the spine.</p></body></html>",
                zipfile.ZIP_DEFLATED,
            )
            items.append(f'<item id="c{n}" href="{name}" media-type="application/xhtml+xml"/>')
            refs.append(f'<itemref idref="c{n}"/>')
        epub.writestr(
            "OEBPS/nav.xhtml",
            '<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml" '
            'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>Contents</title></head>'
            '<body><nav epub:type="toc"><ol><li><a href="chapter-1.xhtml">Chapter 1</a></li>'
            "</ol></nav></body></html>",
            zipfile.ZIP_DEFLATED,
        )
        epub.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">\n'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f'<dc:identifier id="id">urn:uuid:5b0e0f4e-2c51-4d1a-9a43-1d2b1c0e9f11</dc:identifier>'
            f"<dc:title>{title}</dc:title><dc:language>en</dc:language>"
            '<meta property="dcterms:modified">2026-01-01T00:00:00Z</meta></metadata>\n'
            "<manifest>"
            + "".join(items)
            + '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" '
            'properties="nav"/></manifest>\n<spine>' + "".join(refs) + "</spine>\n</package>\n",
            zipfile.ZIP_DEFLATED,
        )
    return out.getvalue()


def sample_zip() -> bytes:
    """A course bundle: a few files in folders, one of them stored uncompressed."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("binding-course/README.md", "# Bookbinding course files\n" * 20)
        bundle.writestr("binding-course/templates/signature-layout.svg", "<svg/>" * 200)
        bundle.writestr(
            zipfile.ZipInfo("binding-course/photos/press.jpg"),
            bytes(range(256)) * 64,
            zipfile.ZIP_STORED,
        )
    return out.getvalue()
