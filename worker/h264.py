"""Still cards -> H.264, with every identical frame encoded once.

A short is a handful of still cards, each held for seconds. Encoding 30 frames a
second of an unchanging picture costs a naive pipeline most of its time (at 4K, x264
spends ~12 ms a frame proving nothing moved). But after an IDR frame, a frame that
repeats it is a P slice made only of skipped macroblocks, and with B-frames off (so
picture order follows frame_num) and a constant QP, the bytes of the k-th such slice
after an IDR depend only on k and the encoder settings, not on the picture.

So for each resolution we ask x264 once for a run of skip frames (a "template", kept
on disk), and for each video we ask it only for one IDR frame per card, encoded with
the same settings. The stream is IDR(card 1) + k skip frames + IDR(card 2) + ...
The SPS/PPS of both encodes are compared before they are combined; if they ever
differ (another x264 build, other settings) the plain pipeline is used instead.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

FPS = 30
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
# Long enough that no IDR is inserted inside a card (cards are held at most 60 s).
_KEYINT = 4000
# Constant quantiser: keeps skip slices byte-identical and text crisp.
_QP = 21
_X264 = [
    "-c:v", "libx264", "-preset", "ultrafast", "-qp", str(_QP), "-pix_fmt", "yuv420p",
    "-x264-params", f"keyint={_KEYINT}:min-keyint={_KEYINT}:scenecut=0:bframes=0:threads=2",
    "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv",
]
_TO_YUV = ["-vf", "scale=out_color_matrix=bt709:out_range=tv:flags=bicubic,format=yuv420p,setsar=1"]

NAL_SLICE, NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS = 1, 5, 6, 7, 8


class EncodeError(RuntimeError):
    """ffmpeg failed or produced a stream we did not expect."""


def run_ffmpeg(args: list[str], stdin: bytes | None = None) -> bytes:
    """Run ffmpeg quietly; its stdout, or EncodeError with its last error lines."""
    process = subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", *args],
                             input=stdin, capture_output=True)
    if process.returncode != 0:
        message = process.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise EncodeError("ffmpeg failed: " + " | ".join(message))
    return process.stdout


def split_nal_units(stream: bytes) -> list[bytes]:
    """Annex B byte stream -> NAL units (without start codes)."""
    units = []
    positions = []
    i = 0
    while True:
        i = stream.find(b"\x00\x00\x01", i)
        if i < 0:
            break
        positions.append(i + 3)
        i += 3
    for n, start in enumerate(positions):
        end = positions[n + 1] - 3 if n + 1 < len(positions) else len(stream)
        # a 4-byte start code leaves a trailing zero on the previous unit
        unit = stream[start:end]
        if n + 1 < len(positions) and unit.endswith(b"\x00"):
            unit = unit[:-1]
        units.append(unit)
    return units


def nal_type(unit: bytes) -> int:
    return unit[0] & 0x1F


def _raw_input(width: int, height: int) -> list[str]:
    return ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(FPS), "-i", "pipe:0"]


@dataclass(frozen=True)
class SkipTemplate:
    """SPS, PPS and the skip slices that follow an IDR frame at one resolution."""

    sps: bytes
    pps: bytes
    skip_slices: tuple[bytes, ...]


_templates: dict[tuple[int, int], SkipTemplate] = {}
# one lock per frame size: building the 4K template must not hold up a 720p render
_template_locks: dict[tuple[int, int], threading.Lock] = {}
_locks_lock = threading.Lock()


def _template_path(cache_dir: Path, width: int, height: int, frames: int) -> Path:
    settings = hashlib.sha256(repr((_X264, _TO_YUV, FFMPEG, frames)).encode()).hexdigest()[:16]
    return cache_dir / f"skip-{width}x{height}-{settings}.h264"


def skip_template(width: int, height: int, max_frames: int, cache_dir: Path) -> SkipTemplate:
    """The skip-slice template for this size, from memory, disk, or one x264 run."""
    with _locks_lock:
        lock = _template_locks.setdefault((width, height), threading.Lock())
    with lock:
        cached = _templates.get((width, height))
        if cached and len(cached.skip_slices) >= max_frames - 1:
            return cached
        # 15 s covers every card of a 60 s short; a longer card asks for a longer run
        frames = max(max_frames, 15 * FPS)
        path = _template_path(cache_dir, width, height, frames)
        if path.exists():
            stream = path.read_bytes()
        else:
            source = ["-f", "lavfi", "-i", f"color=c=black:s={width}x{height}:r={FPS}"]
            stream = run_ffmpeg([*source, *_TO_YUV, *_X264, "-frames:v", str(frames), "-f", "h264", "pipe:1"])
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
            with os.fdopen(fd, "wb") as handle:
                handle.write(stream)
            os.replace(tmp, path)
        units = split_nal_units(stream)
        sps = next(u for u in units if nal_type(u) == NAL_SPS)
        pps = next(u for u in units if nal_type(u) == NAL_PPS)
        slices = tuple(u for u in units if nal_type(u) == NAL_SLICE)
        if sum(nal_type(u) == NAL_IDR for u in units) != 1 or len(slices) != frames - 1:
            raise EncodeError("unexpected skip template layout")
        template = SkipTemplate(sps, pps, slices)
        _templates[(width, height)] = template
        return template


def encode_idr_frames(frames: list[bytes], width: int, height: int) -> tuple[bytes, bytes, list[bytes]]:
    """Encode each RGB frame as an IDR picture with the template's settings.
    Returns (sps, pps, [idr slice NAL per frame])."""
    stream = run_ffmpeg([*_raw_input(width, height), *_TO_YUV, *_X264,
                         "-force_key_frames", "expr:1", "-forced-idr", "1",
                         "-f", "h264", "pipe:1"], stdin=b"".join(frames))
    units = split_nal_units(stream)
    sps = {u for u in units if nal_type(u) == NAL_SPS}
    pps = {u for u in units if nal_type(u) == NAL_PPS}
    idrs = [u for u in units if nal_type(u) == NAL_IDR]
    if len(sps) != 1 or len(pps) != 1 or len(idrs) != len(frames):
        raise EncodeError("unexpected IDR stream layout")
    return sps.pop(), pps.pop(), idrs


def stills_to_h264(frames: list[bytes], frame_counts: list[int], width: int, height: int,
                   cache_dir: Path) -> bytes | None:
    """An Annex B stream showing frames[i] for frame_counts[i] frames each, or None when
    the two encodes' parameter sets differ (then the caller encodes plainly)."""
    template = skip_template(width, height, max(frame_counts), cache_dir)
    sps, pps, idrs = encode_idr_frames(frames, width, height)
    if sps != template.sps or pps != template.pps:
        return None
    start = b"\x00\x00\x00\x01"
    parts = []
    for idr, count in zip(idrs, frame_counts):
        parts += [start + sps, start + pps, start + idr]
        parts += [start + s for s in template.skip_slices[:count - 1]]
    return b"".join(parts)


def stills_to_h264_plainly(frames: list[bytes], frame_counts: list[int], width: int, height: int,
                           workdir: Path) -> bytes:
    """The straightforward pipeline, every frame through x264: each card is decoded once
    and held for its duration by ffmpeg's concat demuxer and fps filter."""
    from PIL import Image

    listing = []
    for n, (frame, count) in enumerate(zip(frames, frame_counts)):
        path = workdir / f"card-{n}.bmp"
        Image.frombytes("RGB", (width, height), frame).save(path)
        listing.append(f"file '{path}'\nduration {count / FPS:.6f}\n")
    # the concat demuxer ignores the last entry's duration unless the file is listed again
    listing.append(f"file '{workdir / f'card-{len(frames) - 1}.bmp'}'\n")
    (workdir / "cards.txt").write_text("".join(listing))
    return run_ffmpeg(["-f", "concat", "-safe", "0", "-i", str(workdir / "cards.txt"), "-vf",
                       f"fps={FPS},scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,setsar=1",
                       *_X264, "-frames:v", str(sum(frame_counts)), "-f", "h264", "pipe:1"])
