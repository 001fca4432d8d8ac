"""Reading the mark: per-frame features, aligning a recording to the lesson, A or B per
segment.

Every frame is reduced to a 10 x 10 grid of mean luma (ffmpeg scales it to 160 x 90 by
area averaging, numpy averages the 16 x 9 blocks), so the size, aspect and encoding of a
leak hardly matter. The mark sits in one cell of a 5 x 5 grid (2 x 2 of these cells);
what is read is that cell's brightness minus the ring of cells around it, which cancels
any brightness change the pirate made to the whole picture.

Alignment: the leak is sampled at the lesson's frame rate and slid along the A
reference; the offset with the highest mean per-frame correlation of the 100-cell
pattern wins (one FFT cross-correlation). Trimming shifts where segments start in the
leak; after alignment each leak frame is attributed to the lesson segment it came from.

Per segment: d_leak = g * d_A + beta * delta, with delta = d_B - d_A measured on the
references (about +2 levels where the mark survived the encode) and g the leak's
contrast change (fitted over all frames, held near 1). beta is about 0 for A, 1 for B.
"""

import io
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FFMPEG = "ffmpeg"
ANALYSIS_WIDTH, ANALYSIS_HEIGHT = 160, 90
CELLS = 10
FRAME_BYTES = ANALYSIS_WIDTH * ANALYSIS_HEIGHT
MARK_GRID = 5
# Mean per-frame correlation of the cell pattern for "this recording is this lesson".
ALIGNMENT_MIN = 0.6
# Leak frames a segment needs before its estimate counts (seconds of video).
MIN_SEGMENT_SECONDS = 0.5
# A segment whose B - A difference (in luma levels) fell below this carries no mark
# (e.g. the cell turned white or black there).
MIN_DELTA = 0.5
# A and B readings closer than this (in units of the nominal mark) are not two groups.
MIN_SEPARATION = 0.35


class UnreadableVideo(Exception):
    pass


def cell_means(
    path: Path | str, *, fps: float | None = None, keyframes_only: bool = False
) -> np.ndarray:
    """(frames, 10, 10) float32 mean luma per cell, frame by frame (at `fps` if given)."""
    command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin"]
    if keyframes_only:
        command += ["-skip_frame", "nokey"]
    vf = f"scale={ANALYSIS_WIDTH}:{ANALYSIS_HEIGHT}:flags=area,format=gray"
    if fps:
        vf = f"fps={fps:.6g}," + vf
    command += ["-i", str(path), "-map", "0:v:0", "-vf", vf, "-an", "-sn"]
    if not fps:
        command += ["-fps_mode", "passthrough"]
    command += ["-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"]
    chunks = []
    with subprocess.Popen(  # noqa: S603
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    ) as process:
        assert process.stdout is not None
        while True:
            data = process.stdout.read(FRAME_BYTES * 256)
            if not data:
                break
            usable = len(data) - len(data) % FRAME_BYTES
            if usable != len(data):
                data += process.stdout.read(FRAME_BYTES - len(data) % FRAME_BYTES)
                usable = len(data) - len(data) % FRAME_BYTES
            frames = np.frombuffer(data[:usable], dtype=np.uint8).reshape(
                -1, CELLS, ANALYSIS_HEIGHT // CELLS, CELLS, ANALYSIS_WIDTH // CELLS
            )
            chunks.append(frames.mean(axis=(2, 4), dtype=np.float32))
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        returncode = process.wait()
    if returncode != 0 or not chunks:
        line = next((raw.strip() for raw in stderr.splitlines() if raw.strip()), "")
        raise UnreadableVideo(line or "no video frames could be decoded")
    return np.concatenate(chunks)


# --- The marked cell ----------------------------------------------------------------------


def _masks(column: int, row: int) -> tuple[np.ndarray, np.ndarray]:
    scale = CELLS // MARK_GRID
    inner = np.zeros((CELLS, CELLS), dtype=bool)
    inner[row * scale : (row + 1) * scale, column * scale : (column + 1) * scale] = True
    ring = np.zeros_like(inner)
    ring[
        max(0, row * scale - 1) : min(CELLS, (row + 1) * scale + 1),
        max(0, column * scale - 1) : min(CELLS, (column + 1) * scale + 1),
    ] = True
    ring &= ~inner
    return inner, ring


def cell_contrast(cells: np.ndarray, column: int, row: int) -> np.ndarray:
    """(frames,) the marked cell's mean luma minus its ring's."""
    inner, ring = _masks(column, row)
    return cells[:, inner].mean(axis=1) - cells[:, ring].mean(axis=1)


def choose_cell(cells: np.ndarray) -> tuple[int, int]:
    """Where to put the mark in this video: one of the 3 x 3 inner cells of the 5 x 5
    grid (edges get cropped, covered by logos and subtitles), the one where a +2 shift
    is read back best: little contrast with its ring (a contrast change by the pirate
    then barely biases the reading), little movement (less re-encoding noise), and no
    near-white or near-black (clipping would erase the shift)."""
    best, best_score = (2, 2), float("inf")
    for row in range(1, MARK_GRID - 1):
        for column in range(1, MARK_GRID - 1):
            inner, _ring = _masks(column, row)
            contrast = cell_contrast(cells, column, row)
            level = cells[:, inner].mean(axis=1)
            clipped = float(np.mean((level < 24) | (level > 226)))
            spread = float(cells[:, inner].std(axis=1).mean())
            score = (
                float(np.abs(contrast).mean())
                + 2 * float(contrast.std())
                + spread
                + 100 * clipped
                + 0.5 * (abs(column - 2) + abs(row - 2))
            )
            if score < best_score:
                best, best_score = (column, row), score
    return best


# --- References -----------------------------------------------------------------------------


@dataclass
class Reference:
    """What the tracer needs of a lesson: its A features, and the mark as encoded."""

    rate: float
    segment_starts: list[float]
    cell: tuple[int, int]
    cells_a: np.ndarray  # (frames, 10, 10)
    d_a: np.ndarray  # (frames,) cell contrast in A
    d_b: np.ndarray  # (frames,) cell contrast in B

    @classmethod
    def build(
        cls,
        *,
        a_cells: np.ndarray,
        b_cells: np.ndarray,
        rate: float,
        segment_starts: list[float],
        cell: tuple[int, int],
    ) -> "Reference":
        frames = min(len(a_cells), len(b_cells))
        a_cells, b_cells = a_cells[:frames], b_cells[:frames]
        return cls(
            rate=rate,
            segment_starts=list(segment_starts),
            cell=cell,
            cells_a=a_cells,
            d_a=cell_contrast(a_cells, *cell),
            d_b=cell_contrast(b_cells, *cell),
        )

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            rate=np.float64(self.rate),
            segment_starts=np.asarray(self.segment_starts, dtype=np.float64),
            cell=np.asarray(self.cell, dtype=np.int64),
            cells_a=self.cells_a.astype(np.float16),
            d_a=self.d_a.astype(np.float32),
            d_b=self.d_b.astype(np.float32),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Reference":
        with np.load(io.BytesIO(data)) as stored:
            return cls(
                rate=float(stored["rate"]),
                segment_starts=[float(x) for x in stored["segment_starts"]],
                cell=(int(stored["cell"][0]), int(stored["cell"][1])),
                cells_a=stored["cells_a"].astype(np.float32),
                d_a=stored["d_a"],
                d_b=stored["d_b"],
            )

    def segment_of_frames(self) -> np.ndarray:
        times = np.arange(len(self.d_a)) / self.rate
        # A frame belongs to the last segment starting at or before it (half a frame of
        # slack against rounding in the playlist's durations).
        starts = np.asarray(self.segment_starts)
        return np.searchsorted(starts, times + 0.5 / self.rate, side="right") - 1


# --- Alignment --------------------------------------------------------------------------------


def _normalised(cells: np.ndarray) -> np.ndarray:
    flat = cells.reshape(len(cells), -1).astype(np.float64)
    flat -= flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.maximum(norms, 1e-6)


@dataclass
class Alignment:
    offset: int  # leak frame j shows lesson frame j + offset
    score: float  # mean per-frame correlation over the overlap
    overlap: int  # frames of the leak inside the lesson


def align(leak: np.ndarray, reference: np.ndarray) -> Alignment:
    """Best offset of `leak` (frames, 10, 10) inside `reference`, by FFT cross-correlation
    of the per-frame normalised cell patterns; the overlap must cover at least half the
    shorter of the two."""
    a, b = _normalised(reference), _normalised(leak)
    total = len(a) + len(b)
    size = 1 << (total - 1).bit_length()
    spectrum = np.fft.rfft(a, size, axis=0) * np.conj(np.fft.rfft(b, size, axis=0))
    correlation = np.fft.irfft(spectrum.sum(axis=1), size)
    offsets = np.arange(-(len(b) - 1), len(a))
    sums = correlation[offsets % size]
    overlaps = np.minimum(len(b), len(a) - offsets) - np.maximum(0, -offsets)
    needed = max(1, min(len(a), len(b)) // 2)
    means = np.where(overlaps >= needed, sums / np.maximum(overlaps, 1), -np.inf)
    best = int(np.argmax(means))
    return Alignment(
        offset=int(offsets[best]), score=float(means[best]), overlap=int(overlaps[best])
    )


# --- A or B per segment -------------------------------------------------------------------------


@dataclass
class SegmentReading:
    betas: list[float | None]  # per lesson segment: ~0 = A, ~1 = B, None = not seen
    frames: list[int]  # leak frames behind each estimate
    gain: float  # the leak's contrast relative to the lesson, as fitted
    noise: float  # residual spread, luma levels
    details: dict = field(default_factory=dict)


def read_segments(leak: np.ndarray, reference: Reference, alignment: Alignment) -> SegmentReading:
    segments = len(reference.segment_starts)
    j = np.arange(len(leak))
    i = j + alignment.offset
    inside = (i >= 0) & (i < len(reference.d_a))
    j, i = j[inside], i[inside]
    d_leak = cell_contrast(leak[j], *reference.cell).astype(np.float64)
    d_a = reference.d_a[i].astype(np.float64)
    delta = (reference.d_b[i] - reference.d_a[i]).astype(np.float64)
    seg = reference.segment_of_frames()[i]

    # Joint least squares: d_leak = g * d_A + sum_s gamma_s * delta * [seg == s].
    columns = [d_a]
    used = sorted(set(seg.tolist()))
    for s in used:
        columns.append(np.where(seg == s, delta, 0.0))
    design = np.stack(columns, axis=1)
    gain = 1.0
    if d_a.std() >= 1.0:
        solution, *_ = np.linalg.lstsq(design, d_leak, rcond=None)
        gain = float(np.clip(solution[0], 0.75, 1.25))
    residual_signal = d_leak - gain * d_a

    betas: list[float | None] = [None] * segments
    frames = [0] * segments
    min_frames = max(1, int(MIN_SEGMENT_SECONDS * reference.rate))
    fitted = np.zeros_like(d_leak)
    for s in used:
        here = seg == s
        frames[s] = int(here.sum())
        energy = float((delta[here] ** 2).sum())
        if frames[s] < min_frames or float(delta[here].mean()) < MIN_DELTA:
            continue
        beta = float((residual_signal[here] * delta[here]).sum() / (gain * energy))
        betas[s] = beta
        fitted[here] = gain * beta * delta[here]
    noise = float((residual_signal - fitted).std()) if len(fitted) else 0.0
    low, high = calibrate([b for b in betas if b is not None])
    scaled = [None if b is None else (b - low) / (high - low) for b in betas]
    return SegmentReading(
        betas=scaled,
        frames=frames,
        gain=gain,
        noise=noise,
        details={"raw": betas, "a_level": low, "b_level": high},
    )


def calibrate(betas: list[float]) -> tuple[float, float]:
    """Where A and B segments actually read, (A level, B level): a re-encode shrinks the
    mark (B reads 0.6-0.8 at CRF 30), so split the readings in two groups around their
    midpoint (two-means, started at 0.5). When the groups are not clearly apart (an
    unmarked copy reads all near 0), keep the nominal (0, 1)."""
    values = np.asarray(betas, dtype=np.float64)
    if len(values) < 4:
        return 0.0, 1.0
    mid = 0.5
    for _ in range(20):
        low, high = values[values <= mid], values[values > mid]
        if len(low) < 2 or len(high) < 2:
            return 0.0, 1.0
        new_mid = (low.mean() + high.mean()) / 2
        if abs(new_mid - mid) < 1e-4:
            break
        mid = new_mid
    a_level, b_level = float(low.mean()), float(high.mean())
    spread = float(np.sqrt((low.var() * len(low) + high.var() * len(high)) / len(values)))
    # Two real groups: far apart, and the gap several times their own spread.
    if b_level - a_level < MIN_SEPARATION or b_level - a_level < 4 * spread:
        return 0.0, 1.0
    return a_level, b_level
