"""Forensic A/B watermark: recovery per attack, false accusations, collusion, costs.

    nice .venv/bin/python benchmarks/video_watermark.py [--seconds 300] [--trials 3]

One run, one machine, the production pipeline (media.transcode with 6 s segments, the B
variant with media.watermark.mark, the tracer's detect/code/trace.judge):
1. A 5-minute 720p lesson (ffmpeg testsrc2 with a tone) is transcoded (A) and marked (B);
   the B encode's time is reported against A's.
2. Buyers get random ids (a ledger of --ledger deliveries). For each attack, --trials
   buyers' streams are rebuilt from their A/B sequence (init + segments, as a pirate
   downloads them), attacked with ffmpeg, and traced: named right / cannot decide /
   named wrong. Per attack also the segments misread and the smallest decision margin.
3. An unmarked copy, and two colluders mixing their segments (per segment at random,
   and first half / second half), through the same attack.
4. Simulated readings with the error and erasure rates measured in 2: 10,000
   never-issued codewords and 10,000 random bit strings against the ledger (false
   accusations), and 10,000 two-colluder mixtures (innocents named).
5. Segments needed per id size, and per-viewer playlist cost (marked ÷ unmarked).
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
    )


ATTACKS = {
    "CRF 30 re-encode (720p)": ("0", "-2:min(ih\\,720)", "30"),
    "480p, CRF 30": ("0", "-2:min(ih\\,480)", "30"),
    "480p, CRF 30, trimmed 10 s each end (goal)": ("10", "-2:min(ih\\,480)", "30"),
    "360p, CRF 32, trimmed 10 s each end": ("10", "-2:min(ih\\,360)", "32"),
}
GOAL = "480p, CRF 30, trimmed 10 s each end (goal)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument(
        "--attacks",
        default="all",
        help='"all", "none", or attack numbers (1-4, comma-separated) to run on real video',
    )
    parser.add_argument(
        "--collusion-trials", type=int, help="real-video trials per mix (default: --trials)"
    )
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--ledger", type=int, default=1000)
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()

    import django

    django.setup()

    workdir = Path(args.keep or tempfile.mkdtemp(prefix="lodestone-bench-watermark-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir: Path) -> None:
    import numpy as np

    from media import transcode
    from media.watermark import code, detect, mark, trace

    rng = random.Random(20261124)
    source = workdir / f"lesson-{args.size}-{args.seconds}.mp4"
    if not source.exists():
        ffmpeg(
            "-f", "lavfi", "-i", f"testsrc2=size={args.size}:rate=30:duration={args.seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={args.seconds}",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-shortest", str(source),
        )  # fmt: skip
    info = transcode.probe(source)

    # 1. A and B (kept in --keep folders: a re-run reuses them and their timings)
    import json

    timings_file = workdir / "encode-timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    the_mark = mark.choose_mark(source)
    results = {}
    for variant, variant_mark in (("a", None), ("b", the_mark)):
        folder = workdir / variant
        if variant in timings and (folder / "master.m3u8").exists():
            results[variant] = transcode.HlsResult(
                folder=folder,
                renditions=[
                    transcode.RenditionResult(**r) for r in timings[f"{variant}-renditions"]
                ],
                poster=None,
            )
            continue
        shutil.rmtree(folder, ignore_errors=True)
        started = time.monotonic()
        results[variant] = transcode.transcode_to_hls(source, folder, info=info, mark=variant_mark)
        timings[variant] = time.monotonic() - started
        timings[f"{variant}-renditions"] = [
            {**r.as_json(), "segment_durations": r.segment_durations}
            for r in results[variant].renditions
        ]
        timings_file.write_text(json.dumps(timings))
    a = results["a"]
    a_seconds, b_seconds = timings["a"], timings["b"]
    top = mark.top_rendition([r.as_json() for r in a.renditions])
    durations = next(r for r in a.renditions if r.name == top["name"]).segment_durations
    started = time.monotonic()
    mark.concat_local_rendition(workdir / "a", top["playlist"], workdir / "a.mp4")
    mark.concat_local_rendition(workdir / "b", top["playlist"], workdir / "b.mp4")
    rate = transcode.output_frame_rate(info)
    reference = mark.build_reference(
        a_file=workdir / "a.mp4", b_file=workdir / "b.mp4", rate=rate, durations=durations,
        mark=the_mark,
    )  # fmt: skip
    reference_seconds = time.monotonic() - started
    same_init = all(
        (workdir / "a" / r.playlist).parent.joinpath(init).read_bytes()
        == (workdir / "b" / r.playlist).parent.joinpath(init).read_bytes()
        for r in a.renditions
        for init in [transcode.media_playlist_entries((workdir / "a" / r.playlist).read_text())[0]]
    )
    segments = len(durations)
    params = code.CodeParams.for_segments(segments)
    print(f"Lesson: {args.seconds} s, {info.width}x{info.height}, {segments} segments of 6 s")
    print(f"Mark: cell {the_mark.column},{the_mark.row} of 5x5, +{the_mark.strength} luma")
    print(
        f"Encode: A {a_seconds:.1f} s, B {b_seconds:.1f} s (B ÷ A {b_seconds / a_seconds:.2f}); "
        f"reference features {reference_seconds:.1f} s; init segments identical: {same_init}; "
        f"B - A in the cell after encoding: {float(np.mean(reference.d_b - reference.d_a)):.2f} levels"
    )
    print(f"Code: {params}, {params.bits} bits, id space {params.id_space:,}")

    # 2. the ledger, and attacks on real streams
    messages = set()
    while len(messages) < args.ledger:
        messages.add(code.random_message(params))
    ledger = [(i, m, code.encode(m, params)) for i, m in enumerate(sorted(messages))]
    matrix = trace.ledger_matrix(ledger, params)
    folder = Path(top["playlist"]).parent
    init, entries = transcode.media_playlist_entries((workdir / "a" / top["playlist"]).read_text())

    def rebuild(variants: str, target: Path) -> None:
        with target.open("wb") as out:
            out.write((workdir / "a" / folder / init).read_bytes())
            for i, (_d, uri) in enumerate(entries):
                out.write(
                    (workdir / ("b" if variants[i] == "1" else "a") / folder / uri).read_bytes()
                )

    def attack(stream: Path, name: str, target: Path) -> None:
        trim, scale, crf = ATTACKS[name]
        length = sum(durations) - 2 * float(trim)
        ffmpeg(
            "-ss", trim, "-i", str(stream), "-t", f"{length:.3f}", "-vf", f"scale={scale}",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", crf, "-c:a", "aac", "-b:a", "96k",
            str(target),
        )  # fmt: skip

    def read(leak_file: Path):
        leak = detect.cell_means(leak_file, fps=rate)
        alignment = detect.align(leak, reference.cells_a)
        reading = detect.read_segments(leak, reference, alignment)
        positions = code.positions_from_segments(reading.betas, reading.frames, params)
        decoded = code.decode(positions, params)
        return alignment, reading, positions, decoded

    errors_seen = erased_seen = bits_seen = 0
    results = {}
    chosen = list(ATTACKS)
    if args.attacks == "none":
        chosen = []
    elif args.attacks != "all":
        chosen = [chosen[int(number) - 1] for number in args.attacks.split(",")]
    for name in chosen:
        named_right = undecided = named_wrong = misread = erased = total = 0
        margins, seconds = [], []
        for _trial in range(args.trials):
            key, _message, word = rng.choice(ledger)
            variants = code.segment_variants(word, segments)
            rebuild(variants, workdir / "stream.mp4")
            attack(workdir / "stream.mp4", name, workdir / "leak.mp4")
            started = time.monotonic()
            _alignment, reading, positions, decoded = read(workdir / "leak.mp4")
            verdict = trace.judge(positions, params, decoded, ledger, matrix)
            seconds.append(time.monotonic() - started)
            for i, beta in enumerate(reading.betas):
                if beta is None:
                    erased += 1
                    continue
                total += 1
                margins.append(abs(beta - 0.5))
                if abs(beta - 0.5) < code.DECISION_MARGIN:
                    erased += 1
                elif (beta > 0.5) != (variants[i] == "1"):
                    misread += 1
            if verdict.verdict == trace.NAMED:
                named_right += verdict.named == key
                named_wrong += verdict.named != key
            else:
                undecided += 1
            # A long run on a busy machine: every trial on stderr as it ends.
            print(
                f"trial: {name}: {verdict.verdict} "
                f"{'(right)' if verdict.named == key else '(wrong)' if verdict.named is not None else ''}"
                f" {seconds[-1]:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        errors_seen += misread
        erased_seen += erased
        bits_seen += total + erased
        results[name] = (
            named_right,
            undecided,
            named_wrong,
            misread,
            erased,
            total,
            margins,
            seconds,
        )

    print()
    print(
        "| attack | named right | cannot decide | named wrong | segments misread | segments erased | smallest margin | trace time |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (
        right,
        undecided,
        wrong,
        misread,
        erased,
        total,
        margins,
        seconds,
    ) in results.items():
        print(
            f"| {name} | {right}/{args.trials} | {undecided} | {wrong} | {misread}/{total} | "
            f"{erased} | {min(margins, default=0):.2f} | {np.median(seconds):.1f} s |"
        )

    # 3. unmarked copy, and two colluders through the goal attack
    attack(source, GOAL, workdir / "unmarked.mp4")
    _al, _rd, positions, decoded = read(workdir / "unmarked.mp4")
    unmarked = trace.judge(positions, params, decoded, ledger, matrix)
    print(f"\nUnmarked copy through the goal attack: {unmarked.verdict} — {unmarked.summary}")
    print("\n| two colluders, mixed | named a colluder | cannot decide | named an innocent |")
    print("| --- | ---: | ---: | ---: |")
    for how in ("per segment at random", "first half / second half"):
        counts = {"colluder": 0, "undecided": 0, "innocent": 0}
        trials = args.trials if args.collusion_trials is None else args.collusion_trials
        for _trial in range(trials):
            (k1, _m1, w1), (k2, _m2, w2) = rng.sample(ledger, 2)
            v1, v2 = code.segment_variants(w1, segments), code.segment_variants(w2, segments)
            if how.startswith("per"):
                mixed = "".join(rng.choice(pair) for pair in zip(v1, v2, strict=True))
            else:
                mixed = v1[: segments // 2] + v2[segments // 2 :]
            rebuild(mixed, workdir / "stream.mp4")
            attack(workdir / "stream.mp4", GOAL, workdir / "leak.mp4")
            _al, _rd, positions, decoded = read(workdir / "leak.mp4")
            verdict = trace.judge(positions, params, decoded, ledger, matrix)
            if verdict.verdict != trace.NAMED:
                counts["undecided"] += 1
            elif verdict.named in (k1, k2):
                counts["colluder"] += 1
            else:
                counts["innocent"] += 1
        print(f"collusion: {how}: {counts}", file=sys.stderr, flush=True)
        print(
            f"| {how} (video) | {counts['colluder']} | {counts['undecided']} | {counts['innocent']} |"
        )

    # 4. simulations with the measured channel
    p_error = max(errors_seen / max(1, bits_seen), 0.01)
    p_erase = max(erased_seen / max(1, bits_seen), 0.05)

    def channel(variants: str) -> list[float | None]:
        betas = []
        for bit in variants:
            draw = rng.random()
            if draw < p_erase:
                betas.append(None)
            elif draw < p_erase + p_error:
                betas.append(1.0 - int(bit))
            else:
                betas.append(float(bit))
        return betas

    def simulate(make_variants) -> dict:
        counts = {"named": 0, "cannot decide": 0, "no match": 0, "innocent": 0, "colluder": 0}
        for _ in range(args.simulations):
            variants, guilty = make_variants()
            betas = channel(variants)
            positions = code.positions_from_segments(betas, [1] * segments, params)
            verdict = trace.judge(positions, params, code.decode(positions, params), ledger, matrix)
            counts[verdict.verdict] += 1
            if verdict.verdict == trace.NAMED:
                counts["colluder" if verdict.named in guilty else "innocent"] += 1
        return counts

    issued = {m for _k, m, _w in ledger}

    def never_issued():
        while True:
            m = code.random_message(params)
            if m not in issued:
                return code.segment_variants(code.encode(m, params), segments), ()

    def random_bits():
        return "".join(rng.choice("01") for _ in range(segments)), ()

    def collusion():
        (k1, _m1, w1), (k2, _m2, w2) = rng.sample(ledger, 2)
        v1, v2 = code.segment_variants(w1, segments), code.segment_variants(w2, segments)
        return "".join(rng.choice(pair) for pair in zip(v1, v2, strict=True)), (k1, k2)

    def single():
        k, _m, w = rng.choice(ledger)
        return code.segment_variants(w, segments), (k,)

    print(
        f"\nSimulated readings ({args.simulations:,} each, ledger {len(ledger):,}): segment "
        f"error rate {p_error:.3f}, erasure rate {p_erase:.3f} (measured above, floored at 1 % / 5 %)"
    )
    print("\n| readings | named | of whom innocent | cannot decide | no match |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, make in (
        ("never-issued codewords", never_issued),
        ("random bit strings", random_bits),
        ("one buyer (control)", single),
        ("two colluders, per-segment mix", collusion),
    ):
        counts = simulate(make)
        print(
            f"| {label} | {counts['named']} | {counts['innocent']} | {counts['cannot decide']} "
            f"| {counts['no match']} |"
        )

    # 5. segments per id size, playlist cost
    print("\n| id bits | symbols (n, k) | segments needed | lesson at 6 s | at 4 s | corrects |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")
    for k in (3, 4, 5, 6, 8):
        n = k + code.MIN_PARITY
        need = n * code.SYMBOL_BITS
        print(
            f"| {k * 4} | ({n}, {k}) | {need} | {need * 6 // 60}:{need * 6 % 60:02d} "
            f"| {need * 4 // 60}:{need * 4 % 60:02d} | 2 wrong or 4 unread symbols |"
        )
    playlist_cost(params)
    print(
        f"\nPython {sys.version.split()[0]}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}"
    )


def playlist_cost(params) -> None:
    """Per-viewer rendition playlists per second, marked vs unmarked (local HMAC signing)."""
    import statistics
    from types import SimpleNamespace

    from django.core.files.storage import FileSystemStorage

    from benchmarks.playlist_generation import stored_playlist_text
    from media import playlists
    from media.watermark import code

    folder = Path(tempfile.mkdtemp(prefix="lodestone-bench-wm-playlists-"))
    storage = FileSystemStorage(location=str(folder))
    print("\n| segments | unmarked playlists/s | marked playlists/s | marked ÷ unmarked |")
    print("| ---: | ---: | ---: | ---: |")
    for count in (50, 600):
        prefix = f"videos/bench{count}/hls/run"
        storage.save(
            f"{prefix}/720p/index.m3u8",
            __import__("io").BytesIO(stored_playlist_text(count).encode()),
        )
        video = SimpleNamespace(hls_prefix=prefix, watermark={"prefix": f"{prefix}/mark-x"})
        rendition = {"name": "720p", "playlist": "720p/index.m3u8"}
        word = code.encode(code.random_message(params), params)

        def rate(codeword, video=video, rendition=rendition):
            for _ in range(5):
                playlists.rendition_for_viewer(
                    storage=storage, video=video, rendition=rendition, user_id=7, codeword=codeword
                )
            samples = []
            deadline = time.perf_counter() + 1.5
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                playlists.rendition_for_viewer(
                    storage=storage, video=video, rendition=rendition, user_id=7, codeword=codeword
                )
                samples.append(time.perf_counter() - t)
            return 1 / statistics.median(samples)

        unmarked, marked = rate(None), rate(word)
        print(f"| {count} | {unmarked:,.0f} | {marked:,.0f} | {marked / unmarked:.2f} |")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
