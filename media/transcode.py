"""From an uploaded video file to HLS on local disk: ffprobe, one ffmpeg run, a poster.

No database and no storage here: `media.services` feeds a local file in and uploads the
folder this writes. One ffmpeg process decodes the source once and encodes every
rendition from it, so all renditions share the same forced keyframes every
SEGMENT_SECONDS and their segments line up (a player switches quality at any boundary).

Segments are fragmented MP4 (CMAF-style, one init segment per rendition): MSE takes them
as they are, so hls.js has nothing to transmux (it would have to repackage MPEG-TS in
JavaScript), they carry less container overhead than TS, and Safari plays them natively.
"""

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Debian's ffmpeg (infra/install-system-packages.sh), found on PATH.
FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
SEGMENT_SECONDS = 6
POSTER_NAME = "poster.jpg"
MASTER_NAME = "master.m3u8"
PLAYLIST_NAME = "index.m3u8"
# Faster presets cost bitrate at equal quality; veryfast keeps a 2-core box near real time.
X264_PRESET = "veryfast"
# Capped CRF: screen recordings and slides (most course videos) come out far below the
# cap, busy footage is held to it.
X264_CRF = 23
MAX_FRAME_RATE = 60
POSTER_MAX_SHORT_SIDE = 720


class TranscodeError(Exception):
    """The source could not be turned into HLS; `reason` is for the creator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SourceUnreadable(TranscodeError):
    """ffprobe cannot read the file, or it has no video: retrying will not help."""


class ToolMissing(TranscodeError):
    """ffmpeg or ffprobe is not on this machine's PATH: the fix is installing it, not the
    file, and retrying before then will not help."""

    def __init__(self, tool: str) -> None:
        super().__init__(
            f"{tool} is not installed on the worker: install the Debian package ffmpeg "
            "(apt-get install ffmpeg), then process the video again (upload its file again, "
            "or run manage.py transcode_video with --again)."
        )
        self.tool = tool


def tools_check() -> None:
    """Raise ToolMissing unless ffmpeg and ffprobe are both on PATH."""
    for tool in (FFMPEG, FFPROBE):
        if shutil.which(tool) is None:
            raise ToolMissing(tool)


@contextlib.contextmanager
def _tool(tool: str) -> Iterator[None]:
    """Turn "no such program" from subprocess into ToolMissing (PATH changed after
    tools_check, or a caller that did not check)."""
    try:
        yield
    except FileNotFoundError as exc:
        if exc.filename == tool or str(exc.filename).endswith("/" + tool):
            raise ToolMissing(tool) from exc
        raise


@dataclass(frozen=True)
class SourceInfo:
    duration: float
    # As displayed: rotation and non-square pixels applied.
    width: int
    height: int
    has_audio: bool
    frame_rate: float

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)


@dataclass(frozen=True)
class Rung:
    """One rung of the quality ladder, named by the short side (portrait videos too)."""

    name: str
    short_side: int
    video_maxrate_kbps: int
    audio_kbps: int


LADDER = (
    Rung("360p", 360, 800, 96),
    Rung("720p", 720, 2800, 128),
    Rung("1080p", 1080, 5000, 160),
)


@dataclass(frozen=True)
class RenditionPlan:
    name: str
    width: int
    height: int
    video_maxrate_kbps: int
    audio_kbps: int


@dataclass
class RenditionResult:
    name: str
    width: int
    height: int
    playlist: str  # relative to the HLS folder: "720p/index.m3u8"
    bandwidth: int  # peak segment bit rate, bits/s (HLS BANDWIDTH)
    average_bandwidth: int
    codecs: str
    frame_rate: float
    segments: int
    bytes: int
    segment_durations: list[float] = field(default_factory=list)

    def as_json(self) -> dict:
        data = asdict(self)
        data.pop("segment_durations")
        return data


@dataclass
class HlsResult:
    folder: Path
    renditions: list[RenditionResult]
    poster: str | None
    seconds_spent: float = 0.0


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def rendition_ladder(info: SourceInfo) -> list[RenditionPlan]:
    """The renditions to make: every rung up to the source's size, never larger.

    A source smaller than 720p gets 360p plus one rung at its own size (a 480p webcam
    recording stays 480p); a source below 360p gets only its own size.
    """
    short = info.short_side
    rungs = [rung for rung in LADDER if rung.short_side <= short]
    own_size_rate = int(LADDER[0].video_maxrate_kbps * (short / LADDER[0].short_side) ** 2)
    if not rungs:
        rungs = [Rung(f"{_even(short)}p", _even(short), own_size_rate, LADDER[0].audio_kbps)]
    elif short < LADDER[1].short_side and short >= LADDER[0].short_side * 1.2:
        rungs.append(Rung(f"{_even(short)}p", _even(short), own_size_rate, LADDER[1].audio_kbps))
    plans = []
    for rung in rungs:
        scale = rung.short_side / short
        plans.append(
            RenditionPlan(
                name=rung.name,
                width=_even(info.width * scale),
                height=_even(info.height * scale),
                video_maxrate_kbps=rung.video_maxrate_kbps,
                audio_kbps=rung.audio_kbps,
            )
        )
    return plans


# --- ffprobe -------------------------------------------------------------------------


def _first_error_line(stderr: str, source: Path | None = None) -> str:
    for raw in stderr.splitlines():
        line = re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", raw.strip())
        if source is not None:
            line = line.replace(str(source), source.name)
        if line:
            return line[:500]
    return ""


def _fraction(value: str | None) -> float:
    if not value or value in ("0/0", "N/A"):
        return 0.0
    if "/" in value or ":" in value:
        num, den = re.split("[/:]", value, maxsplit=1)
        return float(num) / float(den) if float(den) else 0.0
    return float(value)


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return int(float(side["rotation"]))
    return int(float(stream.get("tags", {}).get("rotate", 0) or 0))


def probe(source: Path) -> SourceInfo:
    """Read what the transcode needs from the file; SourceUnreadable if it is no video."""
    command = [
        FFPROBE,
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        str(source),
    ]
    with _tool(FFPROBE):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
    if result.returncode != 0:
        line = _first_error_line(result.stderr, source) or f"ffprobe exited {result.returncode}"
        raise SourceUnreadable(f"Could not read the file: {line}")
    data = json.loads(result.stdout or "{}")
    streams = data.get("streams", [])
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video"
            and not s.get("disposition", {}).get("attached_pic")
            and s.get("width")
        ),
        None,
    )
    if video is None:
        raise SourceUnreadable("Could not read the file: it has no video stream.")
    duration = _fraction(data.get("format", {}).get("duration")) or _fraction(video.get("duration"))
    if duration <= 0:
        raise SourceUnreadable("Could not read the file: its duration is unknown.")
    width, height = int(video["width"]), int(video["height"])
    sar = _fraction(video.get("sample_aspect_ratio")) or 1.0
    width = _even(width * sar)
    if abs(_rotation(video)) % 180 == 90:
        width, height = height, width
    frame_rate = _fraction(video.get("avg_frame_rate")) or _fraction(video.get("r_frame_rate"))
    return SourceInfo(
        duration=duration,
        width=width,
        height=height,
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
        frame_rate=frame_rate if 0 < frame_rate < 1000 else 30.0,
    )


# --- ffmpeg ----------------------------------------------------------------------------


def output_frame_rate(info: SourceInfo) -> float:
    rate = info.frame_rate
    if rate > MAX_FRAME_RATE:
        rate /= math.ceil(rate / MAX_FRAME_RATE)
    return rate


@dataclass(frozen=True)
class Mark:
    """The forensic mark of a B variant: `strength` luma levels added to one cell of a
    GRID x GRID division of the picture (column, row), in every rendition after scaling,
    so each rendition's B differs from its A only there (media/watermark/)."""

    column: int
    row: int
    strength: int = 2
    grid: int = 5

    def filter(self, label: str) -> str:
        """Filter-graph text turning stream [label] into [label] marked (yuv420p in/out)."""
        g, c, r = self.grid, self.column, self.row
        return (
            f"[{label}]split[{label}a][{label}b];"
            f"[{label}b]crop=w=trunc(iw/{g}/2)*2:h=trunc(ih/{g}/2)*2:"
            f"x=trunc(iw*{c}/{g}/2)*2:y=trunc(ih*{r}/{g}/2)*2,"
            f"lutyuv=y=clip(val+{self.strength}\\,0\\,255)[{label}c];"
            f"[{label}a][{label}c]overlay=x=trunc(W*{c}/{g}/2)*2:y=trunc(H*{r}/{g}/2)*2:"
            f"format=yuv420,format=yuv420p"
        )


def hls_command(
    source: Path,
    folder: Path,
    info: SourceInfo,
    plans: list[RenditionPlan],
    *,
    segment_seconds: int = SEGMENT_SECONDS,
    mark: Mark | None = None,
) -> list[str]:
    """The one ffmpeg command that writes every rendition's playlist and segments.

    With `mark`, the same encode (same keyframes, segments and codec parameters, so the
    same init segment) of the B variant: the mark is drawn after scaling, nothing else
    in the graph changes.
    """
    rate = output_frame_rate(info)
    gop = max(1, round(rate * segment_seconds))
    fps_filter = f"fps={rate:.6g}," if rate != info.frame_rate else ""
    labels = [f"[s{i}]" for i in range(len(plans))]
    graph = [f"[0:v:0]{fps_filter}split={len(plans)}{''.join(labels)}"]
    for i, plan in enumerate(plans):
        scaled = f"[s{i}]scale={plan.width}:{plan.height}:flags=bicubic,setsar=1,format=yuv420p"
        if mark is None:
            graph.append(f"{scaled}[v{i}]")
        else:
            graph.append(f"{scaled}[u{i}]")
            graph.append(f"{mark.filter(f'u{i}')}[v{i}]")
    command = [
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-i",
        str(source),
        "-filter_complex",
        ";".join(graph),
    ]
    for i in range(len(plans)):
        command += ["-map", f"[v{i}]"]
        if info.has_audio:
            command += ["-map", "0:a:0"]
    command += [
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-c:v",
        "libx264",
        "-preset",
        X264_PRESET,
        "-profile:v",
        "high",
        "-crf",
        str(X264_CRF),
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-force_key_frames",
        f"expr:gte(t,n_forced*{segment_seconds})",
    ]
    for i, plan in enumerate(plans):
        command += [
            f"-maxrate:v:{i}",
            f"{plan.video_maxrate_kbps}k",
            f"-bufsize:v:{i}",
            f"{plan.video_maxrate_kbps * 2}k",
        ]
    if info.has_audio:
        command += ["-c:a", "aac", "-ac", "2", "-ar", "48000"]
        for i, plan in enumerate(plans):
            command += [f"-b:a:{i}", f"{plan.audio_kbps}k"]
    stream_map = " ".join(
        f"v:{i},a:{i},name:{plan.name}" if info.has_audio else f"v:{i},name:{plan.name}"
        for i, plan in enumerate(plans)
    )
    command += [
        "-max_muxing_queue_size",
        "4096",
        "-f",
        "hls",
        "-hls_time",
        str(segment_seconds),
        "-hls_playlist_type",
        "vod",
        "-hls_segment_type",
        "fmp4",
        "-hls_flags",
        "independent_segments",
        "-hls_fmp4_init_filename",
        "init_%v.mp4",
        "-hls_segment_filename",
        str(folder / "%v" / "seg_%05d.m4s"),
        "-master_pl_name",
        MASTER_NAME,
        "-var_stream_map",
        stream_map,
        "-progress",
        "pipe:1",
        "-nostats",
        str(folder / "%v" / PLAYLIST_NAME),
    ]
    return command


def _run_with_progress(
    command: list[str],
    *,
    duration: float,
    on_progress: Callable[[float], None],
    source: Path,
) -> None:
    """Run ffmpeg, reporting the fraction of the source encoded so far.

    `-progress pipe:1` prints key=value blocks about twice a second; out_time_us is how
    far the output has got. stderr goes to a file (only errors: -loglevel error), so a
    chatty ffmpeg can never fill a pipe and stall.
    """
    with tempfile.TemporaryFile(mode="w+") as stderr:
        with _tool(command[0]):
            process = subprocess.Popen(  # noqa: S603
                command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True
            )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                key, _, value = line.strip().partition("=")
                if key == "out_time_us" and value.lstrip("-").isdigit():
                    on_progress(min(1.0, max(0.0, int(value) / 1e6 / duration)))
            returncode = process.wait()
        finally:
            # A soft time limit or any error in the callback: leave no ffmpeg behind.
            if process.poll() is None:
                process.kill()
                process.wait()
        if returncode != 0:
            stderr.seek(0)
            line = _first_error_line(stderr.read(), source)
            if not line:
                line = (
                    f"ffmpeg was stopped by signal {-returncode}"
                    if returncode < 0
                    else f"ffmpeg exited {returncode}"
                )
            raise TranscodeError(f"Transcoding failed: {line}")


def make_poster(source: Path, target: Path, info: SourceInfo) -> None:
    # A frame a tenth of the way in: past a black first frame or a title fade.
    at = min(info.duration * 0.1, 10.0)
    scale = min(1.0, POSTER_MAX_SHORT_SIDE / info.short_side)
    command = [
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-ss",
        f"{at:.3f}",
        "-i",
        str(source),
        "-frames:v",
        "1",
        "-vf",
        f"scale={_even(info.width * scale)}:{_even(info.height * scale)},setsar=1",
        "-q:v",
        "3",
        str(target),
    ]
    with _tool(FFMPEG):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)  # noqa: S603
    if result.returncode != 0 or not target.exists():
        line = _first_error_line(result.stderr, source) or "no frame written"
        raise TranscodeError(f"Could not make the poster: {line}")


# --- Playlists ffmpeg wrote -----------------------------------------------------------

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attribute_list(text: str) -> dict[str, str]:
    return {key: value.strip('"') for key, value in _ATTRIBUTE.findall(text)}


def media_playlist_entries(text: str) -> tuple[str | None, list[tuple[float, str]]]:
    """(init segment URI, [(duration, segment URI), ...]) of a media playlist."""
    init, segments, duration = None, [], None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MAP:"):
            init = attribute_list(line[len("#EXT-X-MAP:") :]).get("URI")
        elif line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:") :].split(",", 1)[0])
        elif line and not line.startswith("#") and duration is not None:
            segments.append((duration, line))
            duration = None
    return init, segments


def _codecs_by_playlist(master_text: str) -> dict[str, str]:
    codecs, pending = {}, None
    for raw in master_text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = attribute_list(line[len("#EXT-X-STREAM-INF:") :]).get("CODECS", "")
        elif line and not line.startswith("#") and pending is not None:
            codecs[line] = pending
            pending = None
    return codecs


def stream_inf(rendition: dict) -> str:
    """The #EXT-X-STREAM-INF line for one rendition (a dict as stored in Video.renditions)."""
    parts = [
        f"BANDWIDTH={rendition['bandwidth']}",
        f"AVERAGE-BANDWIDTH={rendition['average_bandwidth']}",
        f"RESOLUTION={rendition['width']}x{rendition['height']}",
    ]
    if rendition.get("codecs"):
        parts.append(f'CODECS="{rendition["codecs"]}"')
    if rendition.get("frame_rate"):
        parts.append(f"FRAME-RATE={rendition['frame_rate']:.3f}")
    return "#EXT-X-STREAM-INF:" + ",".join(parts)


def start_order(renditions: list[dict]) -> list[dict]:
    """Renditions in master-playlist order. Players start with the first one listed
    (Safari always, hls.js before it has measured the network): 720p when there is one."""
    ordered = sorted(renditions, key=lambda r: r["bandwidth"])
    first = next((r for r in ordered if r["height"] == 720 or r["width"] == 720), ordered[-1])
    return [first, *(r for r in ordered if r is not first)]


def master_playlist(renditions: list[dict], uri: Callable[[dict], str]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rendition in start_order(renditions):
        lines += [stream_inf(rendition), uri(rendition)]
    return "\n".join(lines) + "\n"


def _measure(folder: Path, plan: RenditionPlan, codecs: str, frame_rate: float):
    playlist = folder / plan.name / PLAYLIST_NAME
    init, segments = media_playlist_entries(playlist.read_text())
    if not segments or init is None:
        raise TranscodeError(f"Transcoding failed: the {plan.name} playlist has no segments.")
    sizes = [(folder / plan.name / uri).stat().st_size for _duration, uri in segments]
    total_seconds = sum(duration for duration, _uri in segments)
    peak = max(
        size * 8 / max(duration, 0.1)
        for size, (duration, _uri) in zip(sizes, segments, strict=True)
    )
    return RenditionResult(
        name=plan.name,
        width=plan.width,
        height=plan.height,
        playlist=f"{plan.name}/{PLAYLIST_NAME}",
        bandwidth=math.ceil(peak),
        average_bandwidth=math.ceil(sum(sizes) * 8 / total_seconds),
        codecs=codecs,
        frame_rate=round(frame_rate, 3),
        segments=len(segments),
        bytes=sum(sizes) + (folder / plan.name / init).stat().st_size,
        segment_durations=[duration for duration, _uri in segments],
    )


def transcode_to_hls(
    source: Path,
    folder: Path,
    *,
    info: SourceInfo | None = None,
    on_progress: Callable[[float], None] = lambda fraction: None,
    segment_seconds: int = SEGMENT_SECONDS,
    mark: Mark | None = None,
) -> HlsResult:
    """Write the poster, every rendition and the master playlist into `folder`.

    The master playlist lists the measured peak and average bit rates of each
    rendition (HLS BANDWIDTH and AVERAGE-BANDWIDTH), not the encoder's targets.
    """
    started = time.monotonic()
    info = info or probe(source)
    plans = rendition_ladder(info)
    folder.mkdir(parents=True, exist_ok=True)
    for plan in plans:
        (folder / plan.name).mkdir(exist_ok=True)
    if mark is None:
        make_poster(source, folder / POSTER_NAME, info)
    _run_with_progress(
        hls_command(source, folder, info, plans, segment_seconds=segment_seconds, mark=mark),
        duration=info.duration,
        on_progress=on_progress,
        source=source,
    )
    codecs = _codecs_by_playlist((folder / MASTER_NAME).read_text())
    rate = output_frame_rate(info)
    renditions = [
        _measure(folder, plan, codecs.get(f"{plan.name}/{PLAYLIST_NAME}", ""), rate)
        for plan in plans
    ]
    (folder / MASTER_NAME).write_text(
        master_playlist([r.as_json() for r in renditions], lambda r: r["playlist"])
    )
    return HlsResult(
        folder=folder,
        renditions=renditions,
        poster=POSTER_NAME if mark is None else None,
        seconds_spent=time.monotonic() - started,
    )


def folder_files(folder: Path) -> list[Path]:
    """Every file under `folder`, as relative paths, in a stable order."""
    found = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            found.append(Path(root, name).relative_to(folder))
    return sorted(found)
