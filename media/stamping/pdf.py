"""Per-buyer PDF stamping as a prepared base plus a small incremental update.

Rewriting a whole PDF per download costs seconds for a long book; copying it costs
milliseconds. So the work is split:

Preparation (once per source version, pikepdf/qpdf): `pdf_prepare` writes the *base*.
  - Every page's content is wrapped as `q <original> Q` followed by a drawing of two form
    XObjects, the stamp (`/LdStamp…`: the visible line "Licensed to Name <email> · order
    N" plus an invisible copy of the marker) at the bottom of the page, and the mark
    (`/LdMark…`: the marker alone, invisible) at the middle and top of the page. The
    geometry (crop box, rotation, scale for narrow pages) is baked into each page's
    content; the XObjects themselves are drawn in the same coordinates for every page.
  - The stamp font (a DejaVu Sans subset) and Helvetica for the marker are added once.
  - Then the objects that make the file a *document* are blanked in the saved bytes,
    in place (same length, so no offset changes): the catalog, the page tree root, every
    page dictionary, the document information dictionary, the XMP stream and the two
    XObjects each become `N 0 obj null endobj`. What is left is a bag of content
    streams, images and fonts: the base's own trailer points at a null /Root, there is no
    object of /Type /Catalog, /Pages or /Page anywhere in it, and a page's content says
    `/LdStamp Do` through resources that only the buyer's part defines.
  The page dictionaries, the catalog and the page tree are kept as serialised bytes in the
  manifest: the *template* of the buyer's part, identical for every buyer.

Per download (`pdf_suffix`, no PDF library, microseconds): an incremental update (ISO
32000-1 §7.5.6) appended to the base: the template objects, the buyer's stamp and mark
XObjects, a document information dictionary and an XMP packet naming the buyer and the
marker, a cross-reference section for exactly those objects, and a trailer whose /Prev
points at the base's cross-reference table. Its size depends on the page count (the
template holds one page dictionary per page, ~150 bytes) but not on the file's bytes.

Why cutting the file at the first %%EOF yields nothing: the base alone has no catalog,
no page tree and no pages (qpdf and poppler refuse it, and their repair scans find no
catalog and no page to rebuild from). A person who can hand-write page dictionaries for
orphaned content streams could also just edit a stamp out of any rewritten PDF; no
stamping format stops that, which is why the ledger also records the file's hash.
"""

import bisect
import hashlib
import io
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from xml.sax.saxutils import escape

import pikepdf
from pikepdf import Array, Dictionary, Name, Stream

from ..exceptions import SourceCorrupt, SourceEncrypted
from .fonts import FONT_NAME, stamp_font, stamp_to_unicode_cmap
from .markers import tagged

FORMAT_VERSION = 1

# The stamp is designed for a band this wide (points) at the foot of a page; pages
# narrower than NARROW_PAGE get the whole drawing scaled down.
STAMP_WIDTH = 520
NARROW_PAGE = 560
STAMP_SIZE = 7.5
STAMP_MIN_SIZE = 4.5
STAMP_GREY = 0.4
MARK_SIZE = 4
FOOT = 12  # baseline of the stamp, above the bottom of the visible page
INHERITABLE = ("/Resources", "/MediaBox", "/CropBox", "/Rotate")
OUR_INFO_KEYS = {"/LodestoneMarker", "/LodestoneLicense", "/ModDate"}


@dataclass(frozen=True)
class Licensee:
    """Who a file is delivered to, as written into it."""

    name: str
    email: str
    order_reference: str
    marker: str

    def stamp_text(self) -> str:
        who = f"{self.name} <{self.email}>" if self.name and self.email else self.name or self.email
        text = f"Licensed to {who}"
        if self.order_reference:
            text += f" · order {self.order_reference}"
        return text


@dataclass
class PreparedPdf:
    """Everything the per-buyer writer needs about one prepared base (stored as JSON)."""

    base_size: int
    base_sha256: str
    prev_xref: int  # offset of the base's cross-reference table: the update's /Prev
    trailer_size: int
    id0: str  # hex of the first /ID string, kept by every delivered copy
    catalog: int
    pages: int
    stamp: int
    mark: int
    info: int
    metadata: int
    stamp_font: int
    mark_font: int
    page_count: int
    template: bytes  # serialised catalog, page tree and pages, in that order
    template_offsets: list[tuple[int, int]]  # (object number, offset within the template)
    info_entries: bytes  # the source's /Info entries, serialised, without << >>
    title: str = ""
    author: str = ""
    version: int = FORMAT_VERSION
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        data["template"] = self.template.decode("latin-1")
        data["info_entries"] = self.info_entries.decode("latin-1")
        return data

    @classmethod
    def from_json(cls, data: dict) -> "PreparedPdf":
        data = dict(data)
        data["template"] = data["template"].encode("latin-1")
        data["info_entries"] = data["info_entries"].encode("latin-1")
        data["template_offsets"] = [tuple(pair) for pair in data["template_offsets"]]
        return cls(**data)


# --- Preparation ----------------------------------------------------------------------------


def pdf_prepare(source, base_path) -> PreparedPdf:
    """Write the base for a source PDF (a path or a binary file) to `base_path`; return
    its manifest.

    Raises SourceEncrypted or SourceCorrupt with a message meant for the creator.
    """
    try:
        pdf = pikepdf.open(source)
    except pikepdf.PasswordError as exc:
        raise SourceEncrypted(
            "This PDF is password-protected. Export it again without a password and upload "
            "that copy, so each buyer's copy can be stamped with their name."
        ) from exc
    except (pikepdf.PdfError, OSError, ValueError) as exc:
        raise SourceCorrupt(
            f"This file cannot be read as a PDF ({_short(exc)}). Export it again from the "
            "program that made it and upload that copy."
        ) from exc
    with pdf:
        if pdf.is_encrypted:
            raise SourceEncrypted(
                "This PDF is encrypted (it has permission restrictions). Export it again "
                "without a password or restrictions and upload that copy, so each buyer's "
                "copy can be stamped with their name."
            )
        try:
            return _prepare(pdf, base_path)
        except (pikepdf.PdfError, TypeError, ValueError) as exc:
            raise SourceCorrupt(
                f"This PDF is damaged and cannot be stamped ({_short(exc)}). Export it "
                "again from the program that made it and upload that copy."
            ) from exc


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _prepare(pdf: pikepdf.Pdf, base_path) -> PreparedPdf:
    root = pdf.Root
    pages = [page.obj for page in pdf.pages]
    if not pages:
        raise SourceCorrupt("This PDF has no pages.")
    for page in pages:
        _push_inherited(page)

    info, title, author = _source_info(pdf)
    stamp_name, mark_name = _free_xobject_names(pages)
    stamp_font_obj, mark_font_obj = _add_fonts(pdf)

    def placeholder(kind: str, **entries) -> Stream:
        stream = Stream(pdf, b" ")
        stream.LdPlaceholder = Name("/" + kind)
        for key, value in entries.items():
            stream["/" + key] = value
        return stream

    fonts = Dictionary(F1=stamp_font_obj, F2=mark_font_obj)
    stamp = placeholder("Stamp", Resources=Dictionary(Font=fonts))
    mark = placeholder("Mark")
    metadata = placeholder("Metadata", Type=Name.Metadata, Subtype=Name.XML)
    pdf.trailer.Info = pdf.make_indirect(Dictionary(LdPlaceholder=Name.Info))
    root.Metadata = metadata

    tree = root.Pages
    tree.Kids = Array(pages)
    tree.Count = len(pages)
    for key in INHERITABLE:
        if key in tree:
            del tree[key]
    opening = pdf.make_indirect(Stream(pdf, b"q\n"))
    closings: dict[bytes, Stream] = {}
    for page in pages:
        page.Parent = tree
        xobjects = page.Resources.get("/XObject")
        if xobjects is None:
            page.Resources.XObject = xobjects = Dictionary()
        xobjects[stamp_name] = stamp
        xobjects[mark_name] = mark
        closing = _closing_content(page, stamp_name, mark_name)
        if closing not in closings:
            closings[closing] = pdf.make_indirect(Stream(pdf, closing))
        page.Contents = Array([opening, *_contents(page), closings[closing]])

    pdf.save(
        base_path,
        object_stream_mode=pikepdf.ObjectStreamMode.disable,
        compress_streams=True,
        stream_decode_level=pikepdf.StreamDecodeLevel.none,
        deterministic_id=True,
        fix_metadata_version=False,
    )
    with pikepdf.open(base_path) as saved:
        prepared = _manifest(saved, stamp_name, mark_name, info, title, author)
    with open(base_path, "r+b") as base:
        base.seek(0, io.SEEK_END)
        size = base.tell()
        base.seek(max(0, size - 1024))
        prepared.prev_xref = int(re.findall(rb"startxref\s+(\d+)", base.read())[-1])
        offsets = _xref_offsets(base, prepared.prev_xref)
        # Not the trailer's /Size: qpdf leaves it out when the source's trailer had none.
        prepared.trailer_size = max(offsets) + 1
        blanked = {prepared.catalog, prepared.pages, prepared.stamp, prepared.mark}
        blanked |= {prepared.info, prepared.metadata}
        blanked |= {num for num, _ in prepared.template_offsets}
        starts = [*sorted(offsets.values()), prepared.prev_xref]
        for num in sorted(blanked):
            offset = offsets[num]
            _blank(base, num, offset, starts[bisect.bisect_right(starts, offset)])
        base.seek(0)
        prepared.base_size = size
        prepared.base_sha256 = hashlib.file_digest(base, "sha256").hexdigest()
    return prepared


def _push_inherited(page: pikepdf.Dictionary) -> None:
    for key in INHERITABLE:
        if key in page:
            continue
        node = page.get("/Parent")
        seen = 0
        while node is not None and seen < 64:
            if key in node:
                page[key] = node[key]
                break
            node = node.get("/Parent")
            seen += 1
    if "/Resources" not in page or not isinstance(page.Resources, Dictionary):
        page.Resources = Dictionary()
    if "/MediaBox" not in page:
        page.MediaBox = Array([0, 0, 612, 792])


def _source_info(pdf: pikepdf.Pdf) -> tuple[bytes, str, str]:
    info = pdf.trailer.get("/Info")
    if not isinstance(info, Dictionary):
        return b"", "", ""
    entries = []
    for key, value in info.items():
        if key in OUR_INFO_KEYS or key == "/LdPlaceholder":
            continue
        if isinstance(value, Dictionary | Array | Stream):
            continue
        entries.append(Name(key).unparse() + b" " + value.unparse(resolved=True))
    title = str(info.get("/Title", "")) if isinstance(info.get("/Title"), pikepdf.String) else ""
    author = str(info.get("/Author", "")) if isinstance(info.get("/Author"), pikepdf.String) else ""
    return b" ".join(entries), title, author


def _free_xobject_names(pages: list) -> tuple[str, str]:
    used: set[str] = set()
    for page in pages:
        xobjects = page.Resources.get("/XObject")
        if isinstance(xobjects, Dictionary):
            used.update(xobjects.keys())
    n = 0
    while f"/LdStamp{n}" in used or f"/LdMark{n}" in used:
        n += 1
    return f"/LdStamp{n}", f"/LdMark{n}"


def _add_fonts(pdf: pikepdf.Pdf) -> tuple[pikepdf.Object, pikepdf.Object]:
    font = stamp_font()
    font_file = pdf.make_indirect(Stream(pdf, font.font_bytes))
    font_file.Length1 = len(font.font_bytes)
    descriptor = pdf.make_indirect(
        Dictionary(
            Type=Name.FontDescriptor,
            FontName=Name("/" + FONT_NAME),
            Flags=32,
            FontBBox=Array(list(font.bbox)),
            ItalicAngle=0,
            Ascent=font.ascent,
            Descent=font.descent,
            CapHeight=font.cap_height,
            StemV=80,
            FontFile2=font_file,
        )
    )
    cid_font = pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.CIDFontType2,
            BaseFont=Name("/" + FONT_NAME),
            CIDSystemInfo=Dictionary(
                Registry=pikepdf.String("Adobe"),
                Ordering=pikepdf.String("Identity"),
                Supplement=0,
            ),
            FontDescriptor=descriptor,
            W=Array([0, Array(list(font.widths))]),
            CIDToGIDMap=Name.Identity,
        )
    )
    type0 = pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.Type0,
            BaseFont=Name("/" + FONT_NAME),
            Encoding=Name("/Identity-H"),
            DescendantFonts=Array([cid_font]),
            ToUnicode=pdf.make_indirect(Stream(pdf, stamp_to_unicode_cmap())),
        )
    )
    helvetica = pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.Type1,
            BaseFont=Name.Helvetica,
            Encoding=Name.WinAnsiEncoding,
        )
    )
    return type0, helvetica


def _contents(page: pikepdf.Dictionary) -> list:
    contents = page.get("/Contents")
    if contents is None:
        return []
    if isinstance(contents, Array):
        return [c for c in contents if isinstance(c, Stream)]
    return [contents] if isinstance(contents, Stream) else []


def _box(page: pikepdf.Dictionary) -> tuple[float, float, float, float]:
    def norm(value) -> tuple[float, float, float, float]:
        a, b, c, d = (float(v) for v in list(value)[:4])
        return min(a, c), min(b, d), max(a, c), max(b, d)

    x0, y0, x1, y1 = norm(page.MediaBox)
    if "/CropBox" in page:
        try:
            cx0, cy0, cx1, cy1 = norm(page.CropBox)
        except (TypeError, ValueError):
            return x0, y0, x1, y1
        ix0, iy0, ix1, iy1 = max(x0, cx0), max(y0, cy0), min(x1, cx1), min(y1, cy1)
        if ix1 > ix0 and iy1 > iy0:
            return ix0, iy0, ix1, iy1
    return x0, y0, x1, y1


def _closing_content(page: pikepdf.Dictionary, stamp_name: str, mark_name: str) -> bytes:
    """`Q`, then the stamp at the foot and the mark at the middle and top of the page as
    displayed (after /Rotate), in the page's own user space."""
    x0, y0, x1, y1 = _box(page)
    try:
        rotate = int(page.get("/Rotate", 0)) % 360
    except (TypeError, ValueError):
        rotate = 0
    rotate = rotate - rotate % 90
    # Displayed origin, and the user-space directions of displayed "right" and "up".
    origin, right, up = {
        0: ((x0, y0), (1, 0), (0, 1)),
        90: ((x1, y0), (0, 1), (-1, 0)),
        180: ((x1, y1), (-1, 0), (0, -1)),
        270: ((x0, y1), (0, -1), (1, 0)),
    }[rotate]
    width, height = (x1 - x0, y1 - y0) if rotate in (0, 180) else (y1 - y0, x1 - x0)
    scale = min(1.0, width / NARROW_PAGE)

    def at(dx: float, dy: float) -> bytes:
        e = origin[0] + dx * right[0] + dy * up[0]
        f = origin[1] + dx * right[1] + dy * up[1]
        matrix = (scale * right[0], scale * right[1], scale * up[0], scale * up[1], e, f)
        return b" ".join(_num(v) for v in matrix) + b" cm"

    stamp, mark = stamp_name.encode(), mark_name.encode()
    return b"\n".join(
        [
            b"",
            b"Q",
            b"q " + at(width / 2, FOOT * scale) + b" " + stamp + b" Do Q",
            b"q " + at(width / 2, height / 2) + b" " + mark + b" Do Q",
            b"q " + at(width / 2, height - 8 * scale) + b" " + mark + b" Do Q",
            b"",
        ]
    )


def _manifest(saved, stamp_name, mark_name, info, title, author) -> PreparedPdf:
    first = saved.pages[0].obj
    stamp = first.Resources.XObject[stamp_name]
    mark = first.Resources.XObject[mark_name]
    pages_root = saved.Root.Pages
    page_objs = [page.obj for page in saved.pages]

    catalog = Dictionary(saved.Root)
    parts: list[tuple[int, bytes]] = [
        (saved.Root.objgen[0], catalog.unparse()),
        (
            pages_root.objgen[0],
            b"<< /Type /Pages /Kids [ "
            + b" ".join(b"%d 0 R" % p.objgen[0] for p in page_objs)
            + b" ] /Count %d >>" % len(page_objs),
        ),
    ]
    parts += [(p.objgen[0], p.unparse(resolved=True)) for p in page_objs]
    template = bytearray()
    template_offsets = []
    for num, body in parts:
        template_offsets.append((num, len(template)))
        template += b"%d 0 obj\n%s\nendobj\n" % (num, body)

    return PreparedPdf(
        base_size=0,
        base_sha256="",
        prev_xref=0,
        trailer_size=0,
        id0=bytes(saved.trailer.ID[0]).hex(),
        catalog=saved.Root.objgen[0],
        pages=pages_root.objgen[0],
        stamp=stamp.objgen[0],
        mark=mark.objgen[0],
        info=saved.trailer.Info.objgen[0],
        metadata=saved.Root.Metadata.objgen[0],
        stamp_font=stamp.Resources.Font.F1.objgen[0],
        mark_font=stamp.Resources.Font.F2.objgen[0],
        page_count=len(page_objs),
        template=bytes(template),
        template_offsets=template_offsets,
        info_entries=info,
        title=title,
        author=author,
    )


def _xref_offsets(base, start: int) -> dict[int, int]:
    """Offsets of in-use objects, from the classic cross-reference table qpdf wrote."""
    base.seek(start)
    if base.readline().strip() != b"xref":
        raise SourceCorrupt("Preparing this PDF produced an unexpected cross-reference table.")
    offsets: dict[int, int] = {}
    while True:
        line = base.readline().strip()
        if not line or line.startswith(b"trailer"):
            return offsets
        first, count = (int(v) for v in line.split())
        table = base.read(20 * count)
        for i in range(count):
            entry = table[20 * i : 20 * i + 20]
            if entry[17:18] == b"n":
                offsets[first + i] = int(entry[:10])


def _blank(base, num: int, offset: int, end: int) -> None:
    """Turn object `num`, which spans [offset, end), into `null` in place, keeping every
    byte offset in the file. The span ends where the next object (or the table) starts."""
    head = b"%d 0 obj" % num
    base.seek(offset)
    if base.read(len(head)) != head:
        raise SourceCorrupt("Preparing this PDF produced an object where none was expected.")
    replacement = head + b"\nnull"
    closing = b"\nendobj\n"
    base.seek(offset)
    base.write(replacement + b" " * (end - offset - len(replacement) - len(closing)) + closing)


# --- Per buyer ------------------------------------------------------------------------------


def pdf_suffix(prepared: PreparedPdf, licensee: Licensee, *, issued_at: datetime) -> bytes:
    """The buyer's incremental update, to be sent right after the base's bytes."""
    out = bytearray(b"\n")
    out += prepared.template
    offsets: dict[int, int] = {}

    def add(num: int, body: bytes) -> None:
        offsets[num] = prepared.base_size + len(out)
        out.extend(b"%d 0 obj\n%s\nendobj\n" % (num, body))

    marker = tagged(licensee.marker).encode("ascii")
    add(prepared.stamp, _stream(_stamp_dict(prepared), _stamp_content(licensee, marker)))
    add(prepared.mark, _stream(_mark_dict(prepared), _mark_content(marker)))
    add(prepared.info, _info(prepared, licensee, marker, issued_at))
    add(prepared.metadata, _stream(b"/Type /Metadata /Subtype /XML", _xmp(prepared, licensee)))

    xref_at = prepared.base_size + len(out)
    out += b"xref\n"
    for part in _xref_plan(prepared):
        out += part if isinstance(part, bytes) else _xref_entry(offsets[part])
    id1 = hashlib.sha256(marker + prepared.base_sha256.encode()).hexdigest()[:32]
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R /ID [ <%s> <%s> ] /Prev %d >>\n" % (
        prepared.trailer_size,
        prepared.catalog,
        prepared.info,
        prepared.id0.encode(),
        id1.encode(),
        prepared.prev_xref,
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def _xref_entry(offset: int) -> bytes:
    return b"%010d 00000 n\r\n" % offset


def _xref_plan(prepared: PreparedPdf) -> list[bytes | int]:
    """The update's cross-reference section, worked out once per prepared file: the
    template objects sit at fixed offsets (right after the base), so their entries are
    ready-made bytes; only the buyer's four objects (ints in the plan) vary in place."""
    plan = getattr(prepared, "_xref_plan", None)
    if plan is not None:
        return plan
    start = prepared.base_size + 1
    fixed = {num: start + rel for num, rel in prepared.template_offsets}
    numbers = sorted({*fixed, prepared.stamp, prepared.mark, prepared.info, prepared.metadata})
    plan, literal = [], bytearray()
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        literal += b"%d %d\n" % (numbers[i], j - i + 1)
        for num in numbers[i : j + 1]:
            if num in fixed:
                literal += _xref_entry(fixed[num])
            else:
                plan += [bytes(literal), num]
                literal = bytearray()
        i = j + 1
    plan.append(bytes(literal))
    prepared._xref_plan = plan
    return plan


def _stream(entries: bytes, data: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (entries, len(data), data)


def _stamp_dict(prepared: PreparedPdf) -> bytes:
    return (
        b"/Type /XObject /Subtype /Form /BBox [ %d -8 %d 16 ] "
        b"/Resources << /Font << /F1 %d 0 R /F2 %d 0 R >> >>"
        % (-STAMP_WIDTH // 2 - 10, STAMP_WIDTH // 2 + 10, prepared.stamp_font, prepared.mark_font)
    )


def _mark_dict(prepared: PreparedPdf) -> bytes:
    return (
        b"/Type /XObject /Subtype /Form /BBox [ -120 -4 120 8 ] "
        b"/Resources << /Font << /F2 %d 0 R >> >>" % prepared.mark_font
    )


def _stamp_content(licensee: Licensee, marker: bytes) -> bytes:
    font = stamp_font()
    if not font.covers(licensee.name):
        # A script the embedded font lacks (Arabic, CJK…): the stamp names the email
        # only, rather than a row of question marks. The metadata keeps the full name.
        licensee = Licensee("", licensee.email, licensee.order_reference, licensee.marker)
    text = licensee.stamp_text()
    glyphs = font.glyphs(text)
    size = STAMP_SIZE
    width = font.width(glyphs, size)
    if width > STAMP_WIDTH:
        size = max(STAMP_MIN_SIZE, size * STAMP_WIDTH / width)
        width = font.width(glyphs, size)
    while width > STAMP_WIDTH and len(text) > 20:
        # Only an absurdly long name gets here: shorten the name, keep the email whole.
        name = licensee.name[: max(1, len(licensee.name) * 3 // 4)]
        licensee = Licensee(name + "…", licensee.email, licensee.order_reference, licensee.marker)
        text = licensee.stamp_text()
        glyphs = font.glyphs(text)
        width = font.width(glyphs, size)
    hex_glyphs = b"".join(b"%04X" % g for g in glyphs)
    return b"q %s g BT /F1 %s Tf %s 0 Td <%s> Tj ET BT 3 Tr /F2 %d Tf %s -6 Td (%s) Tj ET Q" % (
        _num(STAMP_GREY),
        _num(size),
        _num(-width / 2),
        hex_glyphs,
        MARK_SIZE,
        _num(-width / 2),
        marker,
    )


def _mark_content(marker: bytes) -> bytes:
    return b"BT 3 Tr /F2 %d Tf -40 0 Td (%s) Tj ET" % (MARK_SIZE, marker)


def _info(prepared: PreparedPdf, licensee: Licensee, marker: bytes, issued_at: datetime) -> bytes:
    stamp = licensee.stamp_text()
    entries = [prepared.info_entries] if prepared.info_entries else []
    entries.append(b"/LodestoneMarker " + _pdf_text(marker.decode()))
    entries.append(b"/LodestoneLicense " + _pdf_text(stamp))
    entries.append(b"/ModDate " + _pdf_text(issued_at.strftime("D:%Y%m%d%H%M%SZ")))
    return b"<< " + b" ".join(entries) + b" >>"


def _xmp(prepared: PreparedPdf, licensee: Licensee) -> bytes:
    stamp = escape(licensee.stamp_text())
    marker = tagged(licensee.marker)
    described = ""
    if prepared.title:
        described += (
            f'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{escape(prepared.title)}'
            "</rdf:li></rdf:Alt></dc:title>"
        )
    if prepared.author:
        described += f"<dc:creator><rdf:Seq><rdf:li>{escape(prepared.author)}</rdf:li></rdf:Seq></dc:creator>"
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:xmpRights="http://ns.adobe.com/xap/1.0/rights/" '
        'xmlns:lodestone="urn:lodestone:delivery:1.0#">'
        f"{described}"
        "<xmpRights:Marked>True</xmpRights:Marked>"
        f'<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">{stamp}</rdf:li></rdf:Alt></dc:rights>'
        f'<xmpRights:UsageTerms><rdf:Alt><rdf:li xml:lang="x-default">{stamp}. '
        "Personal use only; do not share.</rdf:li></rdf:Alt></xmpRights:UsageTerms>"
        f"<lodestone:marker>{marker}</lodestone:marker>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )
    return packet.encode("utf-8")


def _pdf_text(text: str) -> bytes:
    """A PDF text string: literal when plain ASCII, else UTF-16BE with a byte-order mark."""
    if all(32 <= ord(c) < 127 for c in text):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        return b"(" + escaped.encode("ascii") + b")"
    return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode("ascii") + b">"


def _num(value: float) -> bytes:
    if value == int(value):
        return b"%d" % int(value)
    return (b"%.4f" % value).rstrip(b"0").rstrip(b".")
