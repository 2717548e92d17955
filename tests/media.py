"""Probing rendered videos with the ffmpeg from the imageio-ffmpeg wheel."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class Probe:
    width: int
    height: int
    duration: float
    fps: float
    video_codec: str
    pixel_format: str
    audio_codec: str | None
    faststart: bool


def probe(path: Path) -> Probe:
    """What `ffmpeg -i` says about the file."""
    info = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    duration = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info)
    video = re.search(r"Video: (\w+).*?, (yuv\w+)[^,]*(?:\([^)]*\))?.*?, (\d+)x(\d+).*?, ([\d.]+) fps", info)
    audio = re.search(r"Audio: (\w+)", info)
    assert duration and video, info
    hours, minutes, seconds = duration.groups()
    data = path.read_bytes()[:1 << 20]
    moov, mdat = data.find(b"moov"), data.find(b"mdat")
    return Probe(width=int(video.group(3)), height=int(video.group(4)),
                 duration=int(hours) * 3600 + int(minutes) * 60 + float(seconds), fps=float(video.group(5)),
                 video_codec=video.group(1), pixel_format=video.group(2),
                 audio_codec=audio.group(1) if audio else None, faststart=0 <= moov < mdat or mdat < 0 <= moov)


def decode_errors(path: Path) -> str:
    """Everything ffmpeg complains about while decoding every frame (empty when clean)."""
    return subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, text=True).stderr.strip()


def frame_count(path: Path) -> int:
    out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-",
                          "-progress", "pipe:1"], capture_output=True, text=True).stdout
    return int(re.findall(r"frame=(\d+)", out)[-1])


def frame_rgb(path: Path, seconds: float, width: int, height: int) -> bytes:
    """One decoded frame as raw RGB."""
    return subprocess.run([FFMPEG, "-v", "error", "-ss", str(seconds), "-i", str(path), "-frames:v", "1",
                           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout


def region_contrast(rgb: bytes, width: int, box: tuple[int, int, int, int]) -> tuple[float, float]:
    """(share of near-white pixels, share of dark pixels) inside box = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    white = dark = total = 0
    for y in range(y0, y1, 2):
        row = y * width * 3
        for x in range(x0, x1, 2):
            r, g, b = rgb[row + 3 * x: row + 3 * x + 3]
            luma = 0.2126 * r + 0.7152 * g + 0.0722 * b
            white += luma > 200
            dark += luma < 40
            total += 1
    return white / total, dark / total


def frame_array(path: Path, seconds: float, width: int, height: int):
    """One decoded frame as a (height, width, 3) uint8 numpy array."""
    import numpy as np

    return np.frombuffer(frame_rgb(path, seconds, width, height), np.uint8).reshape(height, width, 3)


def max_volume(path: Path) -> float:
    """ffmpeg volumedetect's max_volume (dBFS) of the audio track."""
    out = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:a:0", "-af", "volumedetect",
                          "-f", "null", "-"], capture_output=True, text=True).stderr
    return float(re.search(r"max_volume: (-?[\d.]+|-inf) dB", out).group(1).replace("-inf", "-200"))


def integrated_loudness(path: Path) -> float:
    """EBU R128 integrated loudness (LUFS) of the audio track, by ffmpeg's ebur128."""
    out = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:a:0",
                          "-af", "ebur128=framelog=quiet", "-f", "null", "-"], capture_output=True, text=True).stderr
    return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", out)[-1])


def sound_span(path: Path, noise_db: int = -40) -> tuple[float, float]:
    """(first, last) second of the audio louder than noise_db, by ffmpeg's silencedetect."""
    out = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:a:0",
                          "-af", f"silencedetect=noise={noise_db}dB:d=0.3", "-f", "null", "-"],
                         capture_output=True, text=True).stderr
    duration = probe(path).duration
    starts = [float(x) for x in re.findall(r"silence_start: (-?[\d.]+)", out)]
    ends = [float(x) for x in re.findall(r"silence_end: ([\d.]+)", out)]
    first = ends[0] if starts and starts[0] <= 0.01 else 0.0
    last = starts[-1] if starts and (len(ends) < len(starts) or ends[-1] >= duration - 0.05) else duration
    return first, last


def metadata(path: Path) -> str:
    """The container's metadata as ffmpeg prints it."""
    return subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
