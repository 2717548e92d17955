"""Topic -> vertical MP4: a short script, one still card per line, H.264 + AAC.

Deterministic and offline: the same topic always gives the same script and cards.
Narration is spoken by espeak-ng when the machine has it; otherwise the audio
track is silence (players and platforms expect one).
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFont

from . import h264

FPS = h264.FPS
WATERMARK_TEXT = "Story Genius"

# Where each platform's own buttons and captions sit, as fractions of the frame
# (top, right, bottom, left): text stays inside the rest.
SAFE_MARGINS = {
    "youtube_shorts": (0.12, 0.15, 0.22, 0.07),
    "tiktok": (0.13, 0.17, 0.24, 0.07),
    "instagram_reels": (0.12, 0.14, 0.22, 0.07),
}
PALETTES = [
    ((76, 29, 149), (219, 39, 119)), ((12, 74, 110), (20, 184, 166)), ((30, 27, 75), (99, 102, 241)),
    ((124, 45, 18), (234, 179, 8)), ((20, 83, 45), (132, 204, 22)), ((15, 23, 42), (71, 85, 105)),
]
KICKERS = ["Did you know?", "The short story of", "In 20 seconds:", "Here's the thing about"]
SCENE_LINES = [
    "Everyone has heard of {topic}. Few know the whole story.",
    "It starts with a simple question: why does {topic} matter?",
    "The first surprise: {topic} is older than most people think.",
    "Then comes the twist that changed everything.",
    "People still argue about what {topic} really means.",
    "Here is the part almost nobody tells you.",
    "Small details about {topic} add up to something big.",
    "Today, {topic} shapes more of daily life than you would guess.",
    "Remember this the next time {topic} comes up.",
]
CLOSING = ("Follow for more stories like this", "Made with Story Genius")


@dataclass(frozen=True)
class RenderSpec:
    """What the paid tier buys: frame size and whether the watermark is drawn."""

    width: int
    height: int
    watermark: bool


@dataclass(frozen=True)
class Card:
    kind: str  # title | scene | closing
    heading: str
    text: str
    seconds_share: float


def write_script(topic: str, duration: int) -> list[Card]:
    """Title card, 4–6 scene lines and a closing card, chosen by the topic's hash."""
    topic = " ".join(topic.split())
    seed = int.from_bytes(hashlib.sha256(topic.lower().encode()).digest()[:8], "big")
    rng = random.Random(seed)
    scene_count = 4 + seed % 3
    lines = rng.sample(SCENE_LINES, scene_count)
    title = topic[:1].upper() + topic[1:]
    cards = [Card("title", rng.choice(KICKERS), title, 0.18)]
    scene_share = (1 - 0.18 - 0.14) / scene_count
    cards += [Card("scene", f"{n}/{scene_count}", line.format(topic=topic), scene_share)
              for n, line in enumerate(lines, 1)]
    cards.append(Card("closing", CLOSING[1], CLOSING[0], 0.14))
    return cards


def frame_counts(cards: list[Card], duration: int) -> list[int]:
    """Frames per card, summing exactly to duration × FPS."""
    total = duration * FPS
    counts = [max(1, int(card.seconds_share * total)) for card in cards]
    counts[-1] += total - sum(counts)
    return counts


def _font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow's bundled FreeType font: no system fonts needed on the worker
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, max_width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            # a single word wider than the line is broken by characters
            while draw.textlength(word, font=font) > max_width and len(word) > 1:
                cut = len(word)
                while cut > 1 and draw.textlength(word[:cut], font=font) > max_width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            lines.append(word)
    return lines


def _gradient(width: int, height: int, top: tuple, bottom: tuple) -> Image.Image:
    """Top-to-bottom gradient, dimmed a quarter so white captions stay readable."""
    column = Image.new("RGB", (1, 256))
    column.putdata([tuple(round((a + (b - a) * y / 255) * 0.75) for a, b in zip(top, bottom)) for y in range(256)])
    return column.resize((width, height), Image.Resampling.BILINEAR)


def watermark_box(spec: RenderSpec, platform: str) -> tuple[int, int, int, int]:
    """Where the watermark goes: top-left inside the safe area (tests look here)."""
    top, _, _, left = SAFE_MARGINS[platform]
    x, y = int(spec.width * left), int(spec.height * top * 0.55)
    return x, y, x + int(spec.width * 0.42), y + int(spec.width * 0.085)


def draw_card(card: Card, spec: RenderSpec, platform: str, palette: tuple) -> Image.Image:
    """One card as an RGB image: gradient, wrapped caption in the safe area, watermark."""
    w, h = spec.width, spec.height
    image = _gradient(w, h, *palette)
    draw = ImageDraw.Draw(image)
    top, right, bottom, left = SAFE_MARGINS[platform]
    box_left, box_right = int(w * left), int(w * (1 - right))
    box_top, box_bottom = int(h * top), int(h * (1 - bottom))
    max_width = box_right - box_left

    size = w // (9 if card.kind == "title" else 12)
    while True:
        font = _font(size)
        lines = _wrap(draw, card.text, font, max_width)
        line_height = int(size * 1.22)
        heading_font = _font(max(size // 2, 12))
        block = len(lines) * line_height + int(size * 0.9)
        if block <= box_bottom - box_top or size <= w // 40:
            break
        size = int(size * 0.88)

    y = box_top + (box_bottom - box_top - block) // 2
    stroke = max(1, size // 22)
    draw.text((box_left, y), card.heading.upper(), font=heading_font, fill=(255, 255, 255, 210),
              stroke_width=max(1, stroke // 2), stroke_fill=(0, 0, 0))
    y += int(size * 0.9)
    for line in lines:
        draw.text((box_left, y), line, font=font, fill=(255, 255, 255), stroke_width=stroke, stroke_fill=(20, 16, 30))
        y += line_height

    if spec.watermark:
        x0, y0, x1, y1 = watermark_box(spec, platform)
        overlay = Image.new("RGBA", (x1 - x0, y1 - y0), (0, 0, 0, 0))
        pill = ImageDraw.Draw(overlay)
        pill.rounded_rectangle([0, 0, x1 - x0 - 1, y1 - y0 - 1], radius=(y1 - y0) // 2, fill=(0, 0, 0, 150))
        mark_font = _font(int((y1 - y0) * 0.55))
        text_width = pill.textlength(WATERMARK_TEXT, font=mark_font)
        pill.text(((x1 - x0 - text_width) / 2, (y1 - y0) * 0.2), WATERMARK_TEXT, font=mark_font,
                  fill=(255, 255, 255, 235))
        image.paste(overlay, (x0, y0), overlay)
    return image


def _narration(cards: list[Card], duration: int, workdir: Path) -> Path | None:
    """A WAV of the script spoken by espeak-ng, if it is installed."""
    espeak = shutil.which("espeak-ng")
    if not espeak:
        return None
    text = ". ".join(card.text for card in cards if card.kind != "closing")
    path = workdir / "narration.wav"
    # speak fast enough to fit the requested duration
    words = max(1, len(text.split()))
    rate = min(260, max(140, int(words / max(duration - 1, 1) * 60)))
    result = subprocess.run([espeak, "-s", str(rate), "-w", str(path), text], capture_output=True)
    return path if result.returncode == 0 and path.exists() else None


def mux(video: Path, audio: Path | None, duration: int, output: Path) -> None:
    """H.264 elementary stream + audio (or silence) -> MP4 that starts playing at once."""
    audio_input = ["-i", str(audio)] if audio else ["-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo"]
    h264.run_ffmpeg(["-y", "-f", "h264", "-framerate", str(FPS), "-i", str(video), *audio_input,
                     "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                     "-af", "apad", "-c:a", "aac", "-b:a", "96k", "-ac", "2", "-ar", "44100",
                     "-t", str(duration), "-movflags", "+faststart", "-f", "mp4", str(output)])


def render_short(topic: str, platform: str, duration: int, spec: RenderSpec, output: Path,
                 progress: Callable[[int], None] = lambda percent: None,
                 cache_dir: Path | None = None) -> Path:
    """Render the short to `output` (written under a temporary name, then renamed, so a
    half-written file is never served). Calls progress(percent) as it goes."""
    if platform not in SAFE_MARGINS:
        raise ValueError(f"unknown platform {platform!r}")
    output.parent.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or output.parent / ".cache"
    cards = write_script(topic, duration)
    counts = frame_counts(cards, duration)
    palette = PALETTES[int(hashlib.sha256(topic.lower().encode()).hexdigest(), 16) % len(PALETTES)]
    progress(10)
    frames = [draw_card(card, spec, platform, palette).tobytes() for card in cards]
    progress(35)
    with tempfile.TemporaryDirectory(prefix="render-", dir=output.parent) as tmp:
        workdir = Path(tmp)
        stream = h264.stills_to_h264(frames, counts, spec.width, spec.height, cache_dir)
        if stream is None:
            stream = h264.stills_to_h264_plainly(frames, counts, spec.width, spec.height, workdir)
        video = workdir / "video.h264"
        video.write_bytes(stream)
        del frames, stream
        progress(65)
        audio = _narration(cards, duration, workdir)
        progress(80)
        partial = workdir / "video.mp4"
        mux(video, audio, duration, partial)
        progress(95)
        os.replace(partial, output)
    return output
