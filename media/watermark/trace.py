"""From a leaked recording to a delivery: align, read A/B per segment, decode, check.

It names a delivery only when all of these hold:
- the recording aligns with a watermarked lesson (mean frame correlation >= 0.6);
- the segments read decode to a Reed–Solomon codeword within the code's capability;
- that codeword's id was issued for the lesson (the ledger, VideoDelivery);
- the chance that a delivery unrelated to the recording agrees as well, over every
  delivery of the lesson, is below ACCUSE_BELOW (binomial tail, union bound);
- no other delivery of the lesson fits nearly as well (two colluders mixing their
  streams give two partial fits: then it cannot decide).
Otherwise it says "cannot decide" or "no match", and why.
"""

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..models import Video, VideoDelivery, WatermarkStatus
from ..storage import protected_storage
from . import code
from .detect import (
    ALIGNMENT_MIN,
    Alignment,
    Reference,
    SegmentReading,
    UnreadableVideo,
    align,
    cell_means,
    read_segments,
)

ACCUSE_BELOW = 1e-6
# The named delivery must agree on this many more segments than any other delivery.
RUNNER_UP_GAP = 4

NAMED, CANNOT_DECIDE, NO_MATCH = "named", "cannot decide", "no match"


@dataclass
class VideoTrace:
    verdict: str
    summary: str
    video: Video | None = None
    alignment: Alignment | None = None
    reading: SegmentReading | None = None
    params: code.CodeParams | None = None
    positions: list = field(default_factory=list)
    decoded: code.Decoded | None = None
    delivery: VideoDelivery | None = None
    agree: int = 0
    compared: int = 0
    chance: float = 1.0
    runner_up: tuple[VideoDelivery, int] | None = None
    ledger_size: int = 0


@lru_cache(maxsize=16)
def _reference(name: str) -> Reference:
    # Each watermark run writes a new folder: a name's content never changes.
    with protected_storage().open(name, "rb") as handle:
        return Reference.from_bytes(handle.read())


def marked_videos():
    return [
        video
        for video in Video.objects.filter(
            status=Video.Status.READY, watermark_status=WatermarkStatus.READY
        )
        if video.watermark.get("hls_prefix") == video.hls_prefix
        and video.watermark.get("reference")
    ]


def trace_video(path: Path, *, videos: list[Video] | None = None) -> VideoTrace:
    candidates = marked_videos() if videos is None else videos
    if not candidates:
        return VideoTrace(NO_MATCH, "No video on this site has a forensic watermark.")
    leaks: dict[float, np.ndarray] = {}
    best = None
    for video in candidates:
        reference = _reference(video.watermark["reference"])
        rate = round(reference.rate, 3)
        if rate not in leaks:
            try:
                leaks[rate] = cell_means(path, fps=reference.rate)
            except UnreadableVideo as exc:
                return VideoTrace(NO_MATCH, f"The file could not be decoded as video: {exc}")
        alignment = align(leaks[rate], reference.cells_a)
        if best is None or alignment.score > best[2].score:
            best = (video, reference, alignment, leaks[rate])
    video, reference, alignment, leak = best
    if alignment.score < ALIGNMENT_MIN:
        return VideoTrace(
            NO_MATCH,
            "The recording matches none of this site's watermarked videos "
            f"(best: “{video.title}”, frame correlation {alignment.score:.2f} < {ALIGNMENT_MIN}).",
            video=video,
            alignment=alignment,
        )
    reading = read_segments(leak, reference, alignment)
    params = code.CodeParams(**video.watermark["code"])
    positions = code.positions_from_segments(reading.betas, reading.frames, params)
    decoded = code.decode(positions, params)
    trace = VideoTrace(
        CANNOT_DECIDE,
        "",
        video=video,
        alignment=alignment,
        reading=reading,
        params=params,
        positions=positions,
        decoded=decoded,
    )
    if decoded.message is None:
        trace.summary = f"Cannot decide: {decoded.reason}."
        return trace
    ledger = list(
        VideoDelivery.objects.filter(video=video).values_list("pk", "message", "codeword")
    )
    judgement = judge(positions, params, decoded, ledger)
    trace.verdict, trace.summary = judgement.verdict, judgement.summary
    trace.agree, trace.compared, trace.chance = (
        judgement.agree,
        judgement.compared,
        judgement.chance,
    )
    trace.ledger_size = len(ledger)
    if judgement.named is not None:
        trace.delivery = VideoDelivery.objects.select_related("user").get(pk=judgement.named)
    if judgement.runner_up is not None:
        other = VideoDelivery.objects.get(pk=judgement.runner_up[0])
        trace.runner_up = (other, judgement.runner_up[1])
    return trace


def ledger_matrix(ledger: list[tuple[object, int, str]], params: code.CodeParams) -> np.ndarray:
    """(deliveries, bits) uint8: each codeword's bits (a word of another length: 2s,
    which agree with nothing)."""
    words = [w if len(w) == params.bits else "2" * params.bits for _k, _m, w in ledger]
    if not words:
        return np.zeros((0, params.bits), dtype=np.uint8)
    flat = np.frombuffer("".join(words).encode(), dtype=np.uint8) - ord("0")
    return flat.reshape(len(words), params.bits)


@dataclass
class Judgement:
    verdict: str
    summary: str
    named: object = None  # the ledger key of the delivery
    agree: int = 0
    compared: int = 0
    chance: float = 1.0
    runner_up: tuple | None = None  # (ledger key, agreeing positions)


def judge(
    positions: list[float | None],
    params: code.CodeParams,
    decoded: code.Decoded,
    ledger: list[tuple[object, int, str]],
    matrix: np.ndarray | None = None,
) -> Judgement:
    """The verdict on decoded readings, against the video's ledger [(key, message,
    codeword)]. Pure: the benchmark runs it on simulated readings."""
    if decoded.message is None:
        return Judgement(CANNOT_DECIDE, f"Cannot decide: {decoded.reason}.")
    agree, compared = code.agreement(positions, decoded.codeword)
    result = Judgement(CANNOT_DECIDE, "", agree=agree, compared=compared)
    if decoded.message == 0:
        result.verdict = NO_MATCH
        result.summary = (
            "Every segment reads as A: an unmarked copy (the original file, or a stream "
            "from before the watermark was on). It cannot be traced to a viewer."
        )
        return result
    result.chance = code.chance_of_match(agree, compared, max(1, len(ledger)))
    named = next((row for row in ledger if row[1] == decoded.message), None)
    if named is None:
        result.verdict = NO_MATCH
        result.summary = (
            f"The mark decodes to id {decoded.message}, which was never issued for this "
            "video: no viewer can be named."
        )
        return result
    rows = ledger_matrix(ledger, params) if matrix is None else matrix
    bits = code.hard_bits(positions)
    readable = np.array([b is not None for b in bits])
    observed = np.array([0 if b is None else b for b in bits], dtype=np.uint8)
    agreeing = ((rows == observed) & readable).sum(axis=1)
    for index, (key, _message, word) in enumerate(ledger):
        if key == named[0] or len(word) != params.bits:
            continue
        if result.runner_up is None or agreeing[index] > result.runner_up[1]:
            result.runner_up = (key, int(agreeing[index]))
    if result.chance > ACCUSE_BELOW:
        result.summary = (
            f"Cannot decide: the best fit agrees on {agree} of {compared} readable "
            f"positions; a viewer unrelated to the recording would fit this well with "
            f"probability {result.chance:.1e} (limit {ACCUSE_BELOW:.0e})."
        )
        return result
    if result.runner_up and result.runner_up[1] > agree - RUNNER_UP_GAP:
        result.summary = (
            "Cannot decide: two deliveries fit almost equally well "
            f"({agree} and {result.runner_up[1]} of {compared}) — several viewers' "
            "streams may have been mixed."
        )
        return result
    result.verdict = NAMED
    result.named = named[0]
    result.summary = "Named: the mark identifies one delivery."
    return result
