"""Per-buyer EPUB stamping: a licence page in the reading order, and the buyer and marker
in the package metadata. Built on media.stamping.zip: the source's entries are sent as
they are; the buyer's part adds the licence page and a rewritten package document (OPF).

The OPF is edited as text (insertions before `</metadata>`, `</manifest>` and after the
first spine item), never re-serialised: publishers' OPF files carry prefixes and
namespaces that an XML round trip would rename.
"""

import re
from dataclasses import asdict, dataclass
from posixpath import dirname, join
from xml.sax.saxutils import escape, quoteattr

from ..exceptions import SourceCorrupt
from .markers import tagged
from .pdf import Licensee
from .zip import PreparedZip, _Writer, zip_comment

CONTAINER = "META-INF/container.xml"
DC = "http://purl.org/dc/elements/1.1/"


@dataclass
class PreparedEpub:
    zip: PreparedZip
    opf_name: str
    opf: str
    title: str

    def to_json(self) -> dict:
        data = asdict(self)
        data["zip"] = self.zip.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> "PreparedEpub":
        return cls(
            zip=PreparedZip.from_json(data["zip"]),
            opf_name=data["opf_name"],
            opf=data["opf"],
            title=data["title"],
        )


def epub_prepare(prepared_zip: PreparedZip, read_entry) -> PreparedEpub:
    """`read_entry(name)` returns an entry's uncompressed bytes."""
    names = {e.name for e in prepared_zip.entries}
    if CONTAINER not in names:
        raise SourceCorrupt("This EPUB has no META-INF/container.xml.")
    container = read_entry(CONTAINER).decode("utf-8", errors="replace")
    match = re.search(r"<(?:\w+:)?rootfile\b[^>]*\bfull-path\s*=\s*([\"'])(.*?)\1", container)
    if not match or match.group(2) not in names:
        raise SourceCorrupt("This EPUB's container does not point at a package document.")
    opf_name = match.group(2)
    try:
        opf = read_entry(opf_name).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceCorrupt("This EPUB's package document is not UTF-8.") from exc
    for part in ("metadata", "manifest", "spine"):
        if not re.search(rf"</(?:\w+:)?{part}\s*>", opf):
            raise SourceCorrupt(f"This EPUB's package document has no <{part}>.")
    title = re.search(r"<(?:\w+:)?title\b[^>]*>(.*?)</(?:\w+:)?title\s*>", opf, re.S)
    title_text = re.sub(r"<[^>]+>", "", title.group(1)).strip() if title else ""
    return PreparedEpub(zip=prepared_zip, opf_name=opf_name, opf=opf, title=_unescape(title_text))


def _unescape(text: str) -> str:
    return (
        text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    )


def licence_page(licensee: Licensee, title: str) -> bytes:
    book = f"<i>{escape(title)}</i>" if title else "this book"
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
        "<head><title>Licence</title></head>\n"
        '<body><section style="margin-top: 30%; text-align: center;">\n'
        f"<p>This copy of {book} is</p>\n"
        f"<p><strong>{escape(licensee.stamp_text())}</strong></p>\n"
        "<p>It is for your personal use. Please do not share it or upload it anywhere.</p>\n"
        f'<p style="font-size: 0.7em; color: #777;">Delivery reference {tagged(licensee.marker)}</p>\n'
        "</section></body>\n</html>\n"
    ).encode()


def _opf_with_licence(prepared: PreparedEpub, licensee: Licensee, href: str, item_id: str) -> str:
    opf = prepared.opf
    prefix_match = re.search(r"<(\w+:)?metadata\b", opf)
    opf_prefix = (prefix_match.group(1) or "") if prefix_match else ""
    dc_prefix = re.search(r'xmlns:(\w+)\s*=\s*["\']' + re.escape(DC), opf)
    rights = ""
    if dc_prefix:
        rights = f"<{dc_prefix.group(1)}:rights>{escape(licensee.stamp_text())}</{dc_prefix.group(1)}:rights>"
    meta = (
        f'<{opf_prefix}meta name="lodestone:marker" content={quoteattr(tagged(licensee.marker))}/>'
    )
    opf = re.sub(
        r"(</(?:\w+:)?metadata\s*>)", lambda m: f"{rights}{meta}\n{m.group(1)}", opf, count=1
    )
    item = (
        f"<{opf_prefix}item id={quoteattr(item_id)} href={quoteattr(href)} "
        'media-type="application/xhtml+xml"/>'
    )
    opf = re.sub(r"(</(?:\w+:)?manifest\s*>)", lambda m: f"{item}\n{m.group(1)}", opf, count=1)
    itemref = f"<{opf_prefix}itemref idref={quoteattr(item_id)}/>"
    first = re.search(
        r"<(?:\w+:)?itemref\b[^>]*?/>|<(?:\w+:)?itemref\b.*?</(?:\w+:)?itemref\s*>", opf, re.S
    )
    if first:
        # After the first item (usually the cover): the first thing a reader turns to.
        opf = opf[: first.end()] + itemref + opf[first.end() :]
    else:
        opf = re.sub(r"(</(?:\w+:)?spine\s*>)", lambda m: f"{itemref}{m.group(1)}", opf, count=1)
    return opf


def epub_suffix(prepared: PreparedEpub, licensee: Licensee, *, issued_at) -> bytes:
    writer = _Writer(prepared.zip, skip=frozenset({prepared.opf_name}))
    when = issued_at.timetuple()
    opf_dir = dirname(prepared.opf_name)
    page_name = writer.free_name(join(opf_dir, "lodestone-licence.xhtml"))
    href = page_name[len(opf_dir) + 1 :] if opf_dir else page_name
    item_id = "lodestone-licence"
    while re.search(rf"\bid\s*=\s*[\"']{item_id}[\"']", prepared.opf):
        item_id += "-x"
    writer.add(page_name, licence_page(licensee, prepared.title), when=when)
    opf = _opf_with_licence(prepared, licensee, href, item_id)
    writer.add(prepared.opf_name, opf.encode("utf-8"), when=when)
    return writer.close(zip_comment(licensee))
