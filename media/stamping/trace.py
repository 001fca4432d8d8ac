"""Finding the delivery markers in a leaked file, wherever they survived.

A stamped PDF carries its marker in the page content (an invisible text line drawn on
every page, three times), in the document information dictionary and in the XMP packet.
Stripping the metadata, re-saving with qpdf or cropping the pages away from the visible
stamp leaves the page content, and the scan below reads every decoded stream. Text that
a re-writing tool re-encoded is caught by pdftotext as a last pass. ZIP and EPUB copies
carry it in the archive comment, LICENSE.txt, the licence page and the package document.
"""

import hashlib
import io
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field

from .markers import markers_in

MAX_ENTRY = 64 * 1024 * 1024
STAMP_TEXT = re.compile(r"Licensed to (.{0,200}?)\s*<([^<>\s]+@[^<>\s]+)>(?: · order (\S+))?")


@dataclass
class Trace:
    sha256: str
    markers: dict[str, set[str]] = field(default_factory=dict)  # marker → where found
    visible_stamps: list[tuple[str, str, str]] = field(default_factory=list)  # name, email, order

    def found(self, markers: list[str], where: str) -> None:
        for marker in markers:
            self.markers.setdefault(marker, set()).add(where)


def trace_bytes(data: bytes) -> Trace:
    trace = Trace(sha256=hashlib.sha256(data).hexdigest())
    trace.found(markers_in(data), "raw bytes")
    if data.lstrip()[:5] == b"%PDF-" or b"%PDF-" in data[:1024]:
        _trace_pdf(data, trace)
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        _trace_zip(data, trace)
    if not trace.markers:
        _trace_text(data, trace)
    return trace


def _trace_pdf(data: bytes, trace: Trace) -> None:
    import pikepdf

    try:
        pdf = pikepdf.open(io.BytesIO(data))
    except pikepdf.PdfError:
        return
    with pdf:
        info = pdf.trailer.get("/Info")
        if isinstance(info, pikepdf.Dictionary):
            trace.found(markers_in(info.unparse(resolved=True)), "document info")
            for value in info.values():
                if isinstance(value, pikepdf.String):
                    trace.found(markers_in(str(value).encode("utf-8", "replace")), "document info")
        for obj in pdf.objects:
            if not isinstance(obj, pikepdf.Stream) or obj.get("/Subtype") == pikepdf.Name.Image:
                continue
            try:
                content = obj.read_bytes()
            except pikepdf.PdfError:
                continue
            is_xmp = obj.get("/Type") == pikepdf.Name.Metadata
            trace.found(markers_in(content), "XMP metadata" if is_xmp else "page content")


def _trace_zip(data: bytes, trace: Trace) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return
    with archive:
        trace.found(markers_in(archive.comment), "archive comment")
        for info in archive.infolist():
            if info.file_size > MAX_ENTRY or info.is_dir():
                continue
            try:
                content = archive.read(info)
            except (zipfile.BadZipFile, RuntimeError, ValueError, OSError):
                continue
            trace.found(markers_in(content), info.filename)


def _trace_text(data: bytes, trace: Trace) -> None:
    """pdftotext sees text that a re-writing tool re-encoded, and the visible stamp."""
    if shutil.which("pdftotext") is None or b"%PDF-" not in data[:1024]:
        return
    with tempfile.NamedTemporaryFile(suffix=".pdf") as leaked:
        leaked.write(data)
        leaked.flush()
        result = subprocess.run(  # noqa: S603 - fixed program, our own temp file
            ["pdftotext", "-q", leaked.name, "-"],  # noqa: S607
            capture_output=True,
            timeout=120,
            check=False,
        )
    text = result.stdout.decode("utf-8", "replace")
    trace.found(markers_in(re.sub(r"\s+", "", text).encode()), "extracted text")
    for match in STAMP_TEXT.finditer(text):
        stamp = (match.group(1).strip(), match.group(2), match.group(3) or "")
        if stamp not in trace.visible_stamps:
            trace.visible_stamps.append(stamp)
