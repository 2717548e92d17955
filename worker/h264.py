"""ffmpeg plumbing, and H.264 at 30 frames a second for the price of 10.

A short's motion is slow (a background panning a few pixels a frame, captions that
change a few times a second), so the composition is drawn and encoded at 10 (or 15)
pictures a second, and each picture is then shown for three (or two) frames. The
repeats cost nothing to make: after any picture, a P slice whose every macroblock is
skipped (zero motion, no residual) repeats it exactly, and its bytes depend only on the
frame size and the encoder settings, apart from the slice header's frame_num. So one such slice is asked
of x264 per frame size (kept on disk), and the stream is rebuilt as picture, skip,
skip, picture ..., with every slice's frame_num renumbered (a fixed-width field, so the
rest of each slice is untouched). x264 runs with B-frames off and one reference frame,
so every picture predicts from the frame just before it, which is now the identical
skip frame. The SPS/PPS of both encodes are compared first; if they ever differ
(another x264 build or settings) the caller encodes every frame instead.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

FPS = 30
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
NAL_SLICE, NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS = 1, 5, 6, 7, 8
START = b"\x00\x00\x00\x01"


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


def run_ffmpeg_stderr(args: list[str]) -> str:
    """Run ffmpeg for what it reports (filters such as loudnorm print to stderr)."""
    process = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", *args], capture_output=True)
    stderr = process.stderr.decode(errors="replace")
    if process.returncode != 0:
        raise EncodeError("ffmpeg failed: " + " | ".join(stderr.strip().splitlines()[-3:]))
    return stderr


def split_nal_units(stream: bytes) -> list[bytes]:
    """Annex B byte stream -> NAL units (without start codes)."""
    positions = [m.end() for m in re.finditer(b"\x00\x00\x01", stream)]
    units = []
    for n, start in enumerate(positions):
        end = positions[n + 1] - 3 if n + 1 < len(positions) else len(stream)
        unit = stream[start:end]
        # a 4-byte start code leaves a trailing zero on the previous unit
        if n + 1 < len(positions):
            unit = unit.rstrip(b"\x00")
        units.append(unit)
    return units


def nal_type(unit: bytes) -> int:
    return unit[0] & 0x1F


def _unescape(payload: bytes) -> bytes:
    """NAL payload -> RBSP (emulation-prevention bytes removed)."""
    return re.sub(b"\x00\x00\x03", b"\x00\x00", payload)


def _escape(rbsp: bytes) -> bytes:
    """RBSP -> NAL payload (00 00 0x becomes 00 00 03 0x)."""
    return re.sub(b"\x00\x00(?=[\x00-\x03])", b"\x00\x00\x03", rbsp)


class _Bits:
    """Reads a bit string MSB first, with Exp-Golomb codes."""

    def __init__(self, data: bytes):
        self.value = int.from_bytes(data, "big")
        self.size = len(data) * 8
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > self.size:
            raise EncodeError("H.264 header shorter than expected")
        self.pos += n
        return (self.value >> (self.size - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise EncodeError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)


@dataclass(frozen=True)
class StreamFormat:
    """What the slice headers need from the SPS/PPS."""

    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int
    bottom_field_poc: bool


def stream_format(sps: bytes, pps: bytes) -> StreamFormat:
    bits = _Bits(_unescape(sps[1:]))
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    bits.ue()  # sps id
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        if bits.ue() == 3:  # chroma_format_idc
            bits.u(1)
        bits.ue(), bits.ue(), bits.u(1)
        if bits.u(1):
            raise EncodeError("scaling matrices are not expected")
    log2_max_frame_num = bits.ue() + 4
    poc_type = bits.ue()
    log2_max_poc_lsb = bits.ue() + 4 if poc_type == 0 else 0
    if poc_type == 1:
        raise EncodeError("picture order count type 1 is not expected")
    pps_bits = _Bits(_unescape(pps[1:]))
    pps_bits.ue(), pps_bits.ue(), pps_bits.u(1)
    return StreamFormat(log2_max_frame_num, poc_type, log2_max_poc_lsb, bool(pps_bits.u(1)))


def renumber(unit: bytes, fmt: StreamFormat, frame_num: int) -> bytes:
    """A slice NAL unit with its frame_num (and, for POC type 0, its POC LSB) rewritten;
    both are fixed-width, so nothing else in the slice moves."""
    rbsp = bytearray(_unescape(unit[1:]))
    bits = _Bits(bytes(rbsp[:32]))
    bits.ue(), bits.ue(), bits.ue()  # first_mb_in_slice, slice_type, pps id
    fields = [(bits.pos, fmt.log2_max_frame_num, frame_num % (1 << fmt.log2_max_frame_num))]
    if fmt.poc_type == 0:
        bits.u(fmt.log2_max_frame_num)
        if nal_type(unit) == NAL_IDR:
            bits.ue()
        fields.append((bits.pos, fmt.log2_max_poc_lsb, (2 * frame_num) % (1 << fmt.log2_max_poc_lsb)))
    for position, width, value in fields:
        for i in range(width):
            byte, bit = divmod(position + i, 8)
            mask = 0x80 >> bit
            if (value >> (width - 1 - i)) & 1:
                rbsp[byte] |= mask
            else:
                rbsp[byte] &= ~mask & 0xFF
    return unit[:1] + _escape(bytes(rbsp))


@dataclass(frozen=True)
class SkipTemplate:
    sps: bytes
    pps: bytes
    skip: bytes  # a P slice that repeats the previous picture


_templates: dict[tuple, SkipTemplate] = {}
_template_lock = threading.Lock()


def skip_template(width: int, height: int, x264: list[str], cache_dir: Path) -> SkipTemplate:
    """The all-skip P slice for this frame size and these x264 settings: from memory,
    from disk, or from one x264 run on two identical black frames."""
    key = (width, height, tuple(x264))
    with _template_lock:
        if key in _templates:
            return _templates[key]
        settings = hashlib.sha256(repr((key, FFMPEG)).encode()).hexdigest()[:16]
        path = cache_dir / f"skip-{width}x{height}-{settings}.h264"
        if path.exists():
            stream = path.read_bytes()
        else:
            stream = run_ffmpeg(["-f", "lavfi", "-i", f"color=c=black:s={width}x{height}:r={FPS}",
                                 "-vf", "format=yuv420p", *x264, "-frames:v", "2", "-f", "h264", "pipe:1"])
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
            with os.fdopen(fd, "wb") as handle:
                handle.write(stream)
            os.replace(tmp, path)
        units = split_nal_units(stream)
        slices = [u for u in units if nal_type(u) == NAL_SLICE]
        if len(slices) != 1:
            raise EncodeError("unexpected skip template layout")
        template = SkipTemplate(next(u for u in units if nal_type(u) == NAL_SPS),
                                next(u for u in units if nal_type(u) == NAL_PPS), slices[0])
        _templates[key] = template
        return template


def repeat_pictures(stream: bytes, template: SkipTemplate, copies: int = 2) -> bytes | None:
    """Each picture of an Annex B stream followed by `copies - 1` skip frames that repeat
    it, every slice renumbered; None when the stream's parameter sets are not the
    template's."""
    if copies < 1:
        raise ValueError("copies must be at least 1")
    units = split_nal_units(stream)
    sps = {u for u in units if nal_type(u) == NAL_SPS}
    pps = {u for u in units if nal_type(u) == NAL_PPS}
    if sps != {template.sps} or pps != {template.pps}:
        return None
    fmt = stream_format(template.sps, template.pps)
    out: list[bytes] = []
    frame_num = 0
    for unit in units:
        kind = nal_type(unit)
        if kind not in (NAL_SLICE, NAL_IDR):
            out.append(START + unit)
            continue
        if _Bits(_unescape(unit[1:6])).ue() != 0:
            return None  # a picture in several slices: not what this expects
        if kind == NAL_IDR:
            frame_num = 0
        out.append(START + renumber(unit, fmt, frame_num))
        for copy in range(1, copies):
            out.append(START + renumber(template.skip, fmt, frame_num + copy))
        frame_num += copies
    return b"".join(out)


def double_frame_rate(stream: bytes, template: SkipTemplate) -> bytes | None:
    """Each picture shown twice (repeat_pictures with two copies)."""
    return repeat_pictures(stream, template, 2)
