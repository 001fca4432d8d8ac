"""The B variant's files and the tracer's reference, on local disk (no database here)."""

from pathlib import Path

from django.core.files.storage import Storage

from .. import transcode
from .detect import Reference, cell_means, choose_cell

# Luma levels added in the marked cell: below what viewers notice, above what a CRF 30
# re-encode at 480p rounds away (docs/forensic-watermark.md has the measurements).
MARK_STRENGTH = 2
REFERENCE_NAME = "reference.npz"


def choose_mark(source: Path, strength: int = MARK_STRENGTH) -> transcode.Mark:
    """The cell for this file's mark, from its keyframes (fast: nothing else is decoded)."""
    column, row = choose_cell(cell_means(source, keyframes_only=True))
    return transcode.Mark(column=column, row=row, strength=strength)


def top_rendition(renditions: list[dict]) -> dict:
    return max(renditions, key=lambda r: (r["height"] * r["width"], r["bandwidth"]))


def stored_entries(storage: Storage, name: str) -> tuple[str | None, list[tuple[float, str]]]:
    with storage.open(name, "rb") as handle:
        return transcode.media_playlist_entries(handle.read().decode())


def concat_stored_rendition(storage: Storage, folder: str, playlist: str, target: Path) -> None:
    """init + every segment of a stored rendition, as one fragmented MP4 ffmpeg can read."""
    init, segments = stored_entries(storage, f"{folder}/{playlist}")
    base = f"{folder}/{playlist.rsplit('/', 1)[0]}"
    with target.open("wb") as out:
        for uri in [init, *(uri for _d, uri in segments)]:
            with storage.open(f"{base}/{uri}", "rb") as handle:
                while chunk := handle.read(4 * 1024 * 1024):
                    out.write(chunk)


def concat_local_rendition(folder: Path, playlist: str, target: Path) -> None:
    init, segments = transcode.media_playlist_entries((folder / playlist).read_text())
    base = (folder / playlist).parent
    with target.open("wb") as out:
        for uri in [init, *(uri for _d, uri in segments)]:
            out.write((base / uri).read_bytes())


def segment_starts(durations: list[float]) -> list[float]:
    starts, elapsed = [], 0.0
    for duration in durations:
        starts.append(elapsed)
        elapsed += duration
    return starts


def build_reference(
    *, a_file: Path, b_file: Path, rate: float, durations: list[float], mark: transcode.Mark
) -> Reference:
    return Reference.build(
        a_cells=cell_means(a_file, fps=rate),
        b_cells=cell_means(b_file, fps=rate),
        rate=rate,
        segment_starts=segment_starts(durations),
        cell=(mark.column, mark.row),
    )
