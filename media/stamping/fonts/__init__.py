"""The font of the visible stamp: a subset of DejaVu Sans, embedded once per prepared PDF.

Buyers' names come in every script, so the stamp cannot use a standard PDF font (those
only know Latin-1). The embedded font is a CIDFontType2 with Identity-H encoding: the
stamp text is written as glyph ids, and a ToUnicode map lets pdftotext and copy-and-paste
read it back. Everything that depends on the font file is computed once per process.
"""

import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FONT_FILE = Path(__file__).with_name("DejaVuSans-Stamp.ttf")
FONT_NAME = "LDSTMP+DejaVuSans"


@dataclass(frozen=True)
class StampFont:
    font_bytes: bytes
    glyph_of: dict[int, int]  # code point → glyph id
    widths: tuple[int, ...]  # advance per glyph id, in 1/1000 em
    bbox: tuple[int, int, int, int]
    ascent: int
    descent: int
    cap_height: int
    missing_glyph: int

    def glyphs(self, text: str) -> list[int]:
        """Glyph ids for text; letters the font lacks lose their accents, or become '?'."""
        out = []
        for char in text:
            glyph = self.glyph_of.get(ord(char))
            if glyph is None:
                base = unicodedata.normalize("NFKD", char)
                decomposed = [
                    self.glyph_of.get(ord(c)) for c in base if not unicodedata.combining(c)
                ]
                if decomposed and all(g is not None for g in decomposed):
                    out.extend(decomposed)
                    continue
                glyph = self.missing_glyph
            out.append(glyph)
        return out

    def covers(self, text: str) -> bool:
        """Whether every letter can be drawn (directly, or without its accent)."""
        return self.missing_glyph not in self.glyphs(text.replace("?", ""))

    def width(self, glyphs: list[int], size: float) -> float:
        return sum(self.widths[g] for g in glyphs) * size / 1000


@cache
def stamp_font() -> StampFont:
    from fontTools.ttLib import TTFont

    data = FONT_FILE.read_bytes()
    font = TTFont(FONT_FILE)
    scale = 1000 / font["head"].unitsPerEm
    order = font.getGlyphOrder()
    index = {name: gid for gid, name in enumerate(order)}
    glyph_of = {cp: index[name] for cp, name in font.getBestCmap().items()}
    metrics = font["hmtx"].metrics
    widths = tuple(round(metrics[name][0] * scale) for name in order)
    head, hhea, os2 = font["head"], font["hhea"], font["OS/2"]
    cap_height = getattr(os2, "sCapHeight", 0) or round(0.73 * font["head"].unitsPerEm)
    return StampFont(
        font_bytes=data,
        glyph_of=glyph_of,
        widths=widths,
        bbox=tuple(round(v * scale) for v in (head.xMin, head.yMin, head.xMax, head.yMax)),
        ascent=round(hhea.ascent * scale),
        descent=round(hhea.descent * scale),
        cap_height=round(cap_height * scale),
        missing_glyph=glyph_of.get(ord("?"), 0),
    )


@cache
def stamp_to_unicode_cmap() -> bytes:
    """Glyph id → text, for every glyph of the font: shared by all buyers' stamps."""
    font = stamp_font()
    first: dict[int, int] = {}
    for cp, gid in sorted(font.glyph_of.items()):
        first.setdefault(gid, cp)
    entries = sorted(first.items())
    lines = [
        b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap",
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
        b"/CMapName /Adobe-Identity-UCS def /CMapType 2 def",
        b"1 begincodespacerange <0000> <FFFF> endcodespacerange",
    ]
    for start in range(0, len(entries), 100):
        chunk = entries[start : start + 100]
        lines.append(b"%d beginbfchar" % len(chunk))
        lines.extend(b"<%04X> <%s>" % (gid, _utf16_hex(cp)) for gid, cp in chunk)
        lines.append(b"endbfchar")
    lines.append(b"endcmap CMapName currentdict /CMap defineresource pop end end")
    return b"\n".join(lines) + b"\n"


def _utf16_hex(cp: int) -> bytes:
    return chr(cp).encode("utf-16-be").hex().upper().encode("ascii")
