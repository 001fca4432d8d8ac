"""Per-buyer ZIP stamping without rewriting the archive: the source's bytes up to its
central directory are sent unchanged, followed by the buyer's part.

A ZIP reader starts from the end-of-central-directory record, so appending entries only
takes a new central directory. The buyer's part holds the new entries (LICENSE.txt, and
for EPUB a licence page and a rewritten package document), then a central directory that
lists the source's entries (their records copied byte for byte: their local headers have
not moved) plus the new ones, and an end record whose comment names the buyer. An entry
the buyer's part replaces (an EPUB's package document) is left out of the new directory;
its old bytes stay in the file, unreferenced.

The format allows no more: anyone can unzip and zip again without the licence. The
licence still names the buyer to honest readers, and trace_leak finds the marker in any
copy that kept the comment, the licence or the package document.
"""

import struct
import time
import zlib
from dataclasses import asdict, dataclass

from ..exceptions import SourceCorrupt
from .markers import tagged
from .pdf import Licensee

EOCD = b"PK\x05\x06"
ZIP64_EOCD = b"PK\x06\x06"
ZIP64_LOCATOR = b"PK\x06\x07"
CENTRAL = b"PK\x01\x02"
LOCAL = b"PK\x03\x04"
TAIL_READ = 65_557 + 20 + 56  # the longest end record (with comment) and the zip64 records
UTF8_NAMES = 0x0800


@dataclass
class CentralEntry:
    name: str
    record: bytes  # the raw central directory record


@dataclass
class PreparedZip:
    """Where the source's central directory starts and what it holds (stored as JSON)."""

    cd_offset: int
    entries: list[CentralEntry]

    def to_json(self) -> dict:
        data = asdict(self)
        data["entries"] = [[e.name, e.record.decode("latin-1")] for e in self.entries]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "PreparedZip":
        entries = [CentralEntry(name, record.encode("latin-1")) for name, record in data["entries"]]
        return cls(cd_offset=data["cd_offset"], entries=entries)


def zip_tail_length(size: int) -> int:
    return min(size, TAIL_READ)


def zip_prepare(*, size: int, tail: bytes, read_range) -> PreparedZip:
    """Parse the central directory. `tail` is the file's last bytes (zip_tail_length);
    `read_range(start, length)` returns other bytes of the file."""
    at = tail.rfind(EOCD)
    if at < 0 or len(tail) - at < 22:
        raise SourceCorrupt("This file is not a valid ZIP archive (no end of central directory).")
    (_, _, _, _, total, cd_size, cd_offset, _) = struct.unpack("<4sHHHHIIH", tail[at : at + 22])
    eocd_pos = size - len(tail) + at
    if 0xFFFF in (total,) or 0xFFFFFFFF in (cd_size, cd_offset):
        locator = tail[at - 20 : at] if at >= 20 else b""
        if not locator.startswith(ZIP64_LOCATOR):
            raise SourceCorrupt("This ZIP archive's zip64 records are missing.")
        (zip64_pos,) = struct.unpack("<Q", locator[8:16])
        record = read_range(zip64_pos, 56)
        if not record.startswith(ZIP64_EOCD):
            raise SourceCorrupt("This ZIP archive's zip64 records are damaged.")
        total, cd_size, cd_offset = struct.unpack("<QQQ", record[32:56])
        eocd_pos = zip64_pos
    if cd_offset + cd_size > eocd_pos:
        raise SourceCorrupt("This ZIP archive's central directory is damaged.")
    directory = read_range(cd_offset, cd_size)
    entries = []
    pos = 0
    while pos < len(directory):
        if directory[pos : pos + 4] != CENTRAL:
            raise SourceCorrupt("This ZIP archive's central directory is damaged.")
        flags = struct.unpack("<H", directory[pos + 8 : pos + 10])[0]
        name_len, extra_len, comment_len = struct.unpack("<HHH", directory[pos + 28 : pos + 34])
        end = pos + 46 + name_len + extra_len + comment_len
        raw_name = directory[pos + 46 : pos + 46 + name_len]
        name = raw_name.decode("utf-8" if flags & UTF8_NAMES else "cp437", errors="replace")
        entries.append(CentralEntry(name, bytes(directory[pos:end])))
        pos = end
    if len(entries) != total:
        raise SourceCorrupt("This ZIP archive's central directory does not match its entry count.")
    return PreparedZip(cd_offset=cd_offset, entries=entries)


class _Writer:
    """Appends stored entries after `start` bytes of the source, then closes the archive."""

    def __init__(self, prepared: PreparedZip, *, skip: frozenset[str] = frozenset()):
        self.prepared = prepared
        self.out = bytearray()
        self.records = [e.record for e in prepared.entries if e.name not in skip]
        self.names = {e.name for e in prepared.entries}

    def free_name(self, wanted: str) -> str:
        if wanted not in self.names:
            return wanted
        stem, dot, ext = wanted.rpartition(".")
        n = 2
        while f"{stem}-{n}{dot}{ext}" in self.names:
            n += 1
        return f"{stem}-{n}{dot}{ext}"

    def add(self, name: str, data: bytes, *, when: time.struct_time, compress: bool = True) -> None:
        offset = self.prepared.cd_offset + len(self.out)
        raw_name = name.encode("utf-8")
        crc = zlib.crc32(data)
        method, payload = 0, data
        if compress:
            packer = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = packer.compress(data) + packer.flush()
            method = 8
        dos_time = (when.tm_hour << 11) | (when.tm_min << 5) | (when.tm_sec // 2)
        dos_date = ((when.tm_year - 1980) << 9) | (when.tm_mon << 5) | when.tm_mday
        self.out += LOCAL + struct.pack(
            "<HHHHHIIIHH",
            20,
            UTF8_NAMES,
            method,
            dos_time,
            dos_date,
            crc,
            len(payload),
            len(data),
            len(raw_name),
            0,
        )
        self.out += raw_name + payload
        extra = b""
        offset_field = offset
        if offset >= 0xFFFFFFFF:
            extra = struct.pack("<HHQ", 0x0001, 8, offset)
            offset_field = 0xFFFFFFFF
        record = CENTRAL + struct.pack(
            "<HHHHHHIIIHHHHHII",
            0x031E if not extra else 0x032D,  # made by Unix, spec 3.0 (4.5 with zip64)
            20 if not extra else 45,
            UTF8_NAMES,
            method,
            dos_time,
            dos_date,
            crc,
            len(payload),
            len(data),
            len(raw_name),
            len(extra),
            0,
            0,
            0,
            0o100644 << 16,
            offset_field,
        )
        self.records.append(record + raw_name + extra)
        self.names.add(name)

    def close(self, comment: bytes) -> bytes:
        cd_offset = self.prepared.cd_offset + len(self.out)
        directory = b"".join(self.records)
        self.out += directory
        count, size = len(self.records), len(directory)
        if count >= 0xFFFF or cd_offset >= 0xFFFFFFFF or size >= 0xFFFFFFFF:
            zip64_at = self.prepared.cd_offset + len(self.out)
            self.out += ZIP64_EOCD + struct.pack(
                "<QHHIIQQQQ", 44, 45, 45, 0, 0, count, count, size, cd_offset
            )
            self.out += ZIP64_LOCATOR + struct.pack("<IQI", 0, zip64_at, 1)
            count16, size32, offset32 = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
        else:
            count16, size32, offset32 = count, size, cd_offset
        comment = comment[:0xFFFF]
        self.out += EOCD + struct.pack(
            "<HHHHIIH", 0, 0, count16, count16, size32, offset32, len(comment)
        )
        self.out += comment
        return bytes(self.out)


def licence_text(licensee: Licensee, title: str = "") -> str:
    what = f"“{title}”" if title else "The files in this archive"
    return (
        f"{what}\n\n{licensee.stamp_text()}\n\n"
        "This copy is for the licensee's personal use. Please do not share it or upload it "
        "anywhere: every copy carries the name of the person it was sold to.\n\n"
        f"Delivery reference: {tagged(licensee.marker)}\n"
    )


def zip_comment(licensee: Licensee) -> bytes:
    return f"{licensee.stamp_text()} · {tagged(licensee.marker)}".encode()


def zip_suffix(prepared: PreparedZip, licensee: Licensee, *, title: str = "", issued_at) -> bytes:
    """The buyer's part of a ZIP: a LICENSE.txt, a new central directory and a comment."""
    writer = _Writer(prepared)
    when = issued_at.timetuple()
    writer.add(writer.free_name("LICENSE.txt"), licence_text(licensee, title).encode(), when=when)
    return writer.close(zip_comment(licensee))
