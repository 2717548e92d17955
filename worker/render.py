"""Topic -> narrated vertical MP4 with captions that follow the voice.

1. A ScriptWriter writes a title and lines (worker/script.py), or the user's own script
   is taken as written.
2. A Piper voice speaks each line, paced to fill the requested length; every word's
   time is known (worker/narration.py). A quiet music bed is synthesised under it and
   the mix is normalised to -14 LUFS.
3. Captions of 1–4 words appear as they are spoken, one keyword in the accent colour
   (worker/captions.py), inside the platform's safe area, in any script
   (worker/fonts.py).
4. Each sentence is a scene: a soft gradient background panning slowly, with a short
   cross-fade into the next. ffmpeg composes it (the background is scaled once per
   scene, then only cropped, so moving costs nothing; 10 pictures a second, each shown
   for three frames of the 30 fps video; captions are overlaid only while
   they show) and x264 encodes it with its fastest preset. Meanwhile another thread measures the mix's loudness and encodes it to AAC,
   so the last step only copies both streams into the MP4.

The plan decides the frame size, the watermark and closing card (free), the customer's
logo and colours (Pro, Agency) and the Story Genius name in the file's metadata (not
on white-label Agency videos). A poster frame (JPEG) is written next to the MP4.
"""
from __future__ import annotations

import colorsys
import hashlib
import logging
import os
import random
import tempfile
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from . import captions, fonts, narration, voices
from . import language as languages
from .branding import Brand
from . import h264
from .h264 import run_ffmpeg
from .script import OfflineWriter, Script, ScriptRequest, ScriptWriter, parse_topic, user_script

log = logging.getLogger(__name__)

FPS = h264.FPS
# pictures drawn and encoded a second; each is shown for FPS / MOTION_FPS frames. At
# 10 (not 15) the pan and the fades step every 0.1 s, still smooth at this speed (a few
# pixels a step), and x264 and the filters have a third less to do: the 4K encode is
# most of a 4K render's CPU time.
MOTION_FPS = 10
BRAND_NAME = "Story Genius"
WATERMARK_TEXT = BRAND_NAME
CLOSING_LINES = ("Follow for more stories like this", f"Made with {BRAND_NAME}")
CLOSING_SECONDS = 1.6
TRANSITION_SECONDS = 0.4
# how much larger than the frame a scene's background is: the room it pans across
PAN = (0.10, 0.05)
# backgrounds are drawn at this fraction of the frame size and scaled up once per scene
BACKGROUND_SCALE = 4
ACCENT = (255, 214, 10)

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
# ultrafast: no B-frames and one reference frame, which the frame doubling relies on;
# a key frame every 2 s of video (20 pictures at MOTION_FPS) so players can seek
_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "20", "-pix_fmt", "yuv420p",
         "-g", str(2 * MOTION_FPS), "-sc_threshold", "0", "-x264-params", "bframes=0:ref=1",
         "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv"]
_TO_BT709 = "scale=out_color_matrix=bt709:out_range=tv"


@dataclass(frozen=True)
class RenderSpec:
    """What the paid tier buys: frame size, the watermark, the closing card (by default
    with the watermark: the free plan's), the customer's branding, and white-label."""

    width: int
    height: int
    watermark: bool
    closing_card: bool | None = None
    brand: Brand | None = None
    white_label: bool = False

    @property
    def has_closing_card(self) -> bool:
        return self.watermark if self.closing_card is None else self.closing_card


@dataclass
class Rendered:
    path: Path
    poster: Path
    length: float
    script: Script
    language: str
    voice: str | None
    sentences: list[narration.Sentence]
    chunks: list[captions.Chunk]
    notes: list[str] = field(default_factory=list)
    loudnorm: str = ""


def topic_seed(topic: str) -> int:
    return int.from_bytes(hashlib.sha256(" ".join(topic.lower().split()).encode()).digest()[:8], "big")


def watermark_box(spec: RenderSpec, platform: str) -> tuple[int, int, int, int]:
    """Where the watermark goes: top-left inside the safe area (tests look here)."""
    top, _, _, left = SAFE_MARGINS[platform]
    x, y = int(spec.width * left), int(spec.height * top * 0.55)
    return x, y, x + int(spec.width * 0.42), y + int(spec.width * 0.085)


def logo_box(spec: RenderSpec, platform: str) -> tuple[int, int, int, int]:
    """Where a customer's logo goes (the corner the free plan's watermark takes)."""
    top, _, _, left = SAFE_MARGINS[platform]
    x, y = int(spec.width * left), int(spec.height * top * 0.3)
    return x, y, x + int(spec.width * 0.4), y + int(spec.height * top * 0.62)


def closing_box(spec: RenderSpec) -> tuple[int, int, int, int]:
    """The band the closing card's text fills (tests look here)."""
    return 0, int(spec.height * 0.36), spec.width, int(spec.height * 0.62)


# ---------------------------------------------------------------------------------
# pictures

def _shade(colour: tuple, hue_shift: float, light: float) -> tuple[int, int, int]:
    h, l, s = colorsys.rgb_to_hls(*(c / 255 for c in colour))
    r, g, b = colorsys.hls_to_rgb((h + hue_shift) % 1, min(1, max(0, l * light)), s)
    return round(r * 255), round(g * 255), round(b * 255)


def palette_for(seed: int, brand: Brand | None) -> tuple[tuple, tuple]:
    if brand and brand.primary:
        return _shade(brand.primary, 0, 0.55), _shade(brand.primary, 0.04, 1.1)
    return PALETTES[seed % len(PALETTES)]


def background(width: int, height: int, palette: tuple, rng: random.Random, scene: int) -> Image.Image:
    """A soft diagonal gradient with a few blurred light blobs, dimmed so white captions
    stay readable. Drawn small; ffmpeg scales it up once."""
    top, bottom = (_shade(c, 0.03 * (scene % 3 - 1), 1.0) for c in palette)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    mix = np.clip(0.8 * y + 0.2 * (x if scene % 2 else 1 - x), 0, 1)[..., None]
    pixels = (np.array(top, np.float32) * (1 - mix) + np.array(bottom, np.float32) * mix) * 0.72
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    blobs = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(blobs)
    for _ in range(4):
        radius = rng.uniform(0.18, 0.42) * width
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        colour = _shade(palette[rng.randrange(2)], rng.uniform(-0.06, 0.06), rng.uniform(1.2, 1.7))
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=(*colour, 95))
    blobs = blobs.filter(ImageFilter.GaussianBlur(width / 12))
    image.paste(blobs, (0, 0), blobs)
    return image


def watermark_image(spec: RenderSpec, platform: str) -> tuple[Image.Image, tuple[int, int]]:
    x0, y0, x1, y1 = watermark_box(spec, platform)
    overlay = Image.new("RGBA", (x1 - x0, y1 - y0), (0, 0, 0, 0))
    pill = ImageDraw.Draw(overlay)
    pill.rounded_rectangle([0, 0, x1 - x0 - 1, y1 - y0 - 1], radius=(y1 - y0) // 2, fill=(0, 0, 0, 150))
    size = int((y1 - y0) * 0.5)
    width = fonts.text_width(WATERMARK_TEXT, size)
    ascent, descent = fonts.line_metrics(size)
    fonts.draw_text(overlay, ((x1 - x0 - width) / 2, (y1 - y0 - ascent - descent) / 2), WATERMARK_TEXT, size,
                    (255, 255, 255, 235))
    return overlay, (x0, y0)


def logo_image(spec: RenderSpec, platform: str) -> tuple[Image.Image, tuple[int, int]] | None:
    logo = spec.brand.logo() if spec.brand else None
    if logo is None:
        return None
    x0, y0, x1, y1 = logo_box(spec, platform)
    logo.thumbnail((x1 - x0, y1 - y0), Image.Resampling.LANCZOS)
    return logo, (x0, y0 + (y1 - y0 - logo.height) // 2)


def title_image(title: str, spec: RenderSpec, box: captions.Box, language: str) -> Image.Image:
    words = title.split() if languages.spaced(language) else [title]
    return captions.draw_words(words, None, spec.width // 17, box.width, 2, language, ACCENT,
                               min_size=spec.width // 30, fill=(255, 255, 255, 230))


def closing_image(spec: RenderSpec) -> Image.Image:
    """The free plan's closing card: the frame darkened, the call to follow and our name."""
    card = Image.new("RGBA", (spec.width, spec.height), (10, 8, 20, 200))
    x0, y0, x1, y1 = closing_box(spec)
    follow = captions.draw_words(CLOSING_LINES[0].split(), None, spec.width // 11, int(spec.width * 0.84), 3,
                                 "en", ACCENT)
    made = captions.draw_words(CLOSING_LINES[1].upper().split(), 3, spec.width // 16, int(spec.width * 0.84), 2,
                               "en", ACCENT)
    gap = spec.height // 40
    top = y0 + (y1 - y0 - follow.height - gap - made.height) // 2
    card.alpha_composite(follow, ((spec.width - follow.width) // 2, top))
    card.alpha_composite(made, ((spec.width - made.width) // 2, top + follow.height + gap))
    return card


# ---------------------------------------------------------------------------------
# the render

@dataclass
class _Layer:
    """An RGBA picture overlaid at (x, y), from start to end seconds (None: throughout)."""

    image: Image.Image
    x: int
    y: int
    start: float | None = None
    end: float | None = None


def _settings(environ=None) -> dict:
    env = os.environ if environ is None else environ
    return {"tts": (env.get("TTS_ENABLED") or "1").lower() not in ("0", "false", "no", "off"),
            "voice": env.get("TTS_VOICE") or voices.DEFAULT_VOICE,
            "music": (env.get("RENDER_MUSIC") or "1").lower() not in ("0", "false", "no", "off")}


def render_short(topic: str, platform: str, duration: int, spec: RenderSpec, output: Path,
                 progress: Callable[[int], None] = lambda percent: None,
                 cache_dir: Path | None = None, *, seed: int | None = None, voice: str | None = None,
                 script: str | None = None, writer: ScriptWriter | None = None, tts: bool | None = None,
                 music: bool | None = None) -> Rendered:
    """Render the short to `output` and its poster to output.with_suffix('.jpg') (both
    written under temporary names, then renamed, so a half-written file is never
    served). Calls progress(percent) as it goes. `seed` (the job id) varies the take;
    `voice`, `tts` and `music` default to the TTS_VOICE, TTS_ENABLED and RENDER_MUSIC
    settings. `cache_dir` keeps the per-size skip frame (default: next to the output)."""
    if platform not in SAFE_MARGINS:
        raise ValueError(f"unknown platform {platform!r}")
    settings = _settings()
    tts = settings["tts"] if tts is None else tts
    music = settings["music"] if music is None else music
    seed = topic_seed(topic) if seed is None else seed
    rng = random.Random(seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    language = languages.detect(script or topic)
    closing = CLOSING_SECONDS if spec.has_closing_card else 0.0
    if script:
        written = user_script(topic, script)
    else:
        speech = duration - narration.LEAD_IN - narration.TAIL[0] - closing
        written = (writer or OfflineWriter()).write(ScriptRequest(topic, duration, language, seed, speech))
        language = languages.detect(" ".join(written.lines)) if written.source == "api" else language
    progress(10)

    speaker = None
    if tts:
        speaker = voices.voice_for_language(language, voice or settings["voice"])
        if speaker is None:
            notes.append(f"No narration voice speaks {languages.NAMES.get(language, language)} yet, so this "
                         "video has captions and music only.")
        elif voice and speaker != voice:
            notes.append(f"The voice {voice} does not speak {languages.NAMES.get(language, language)}; "
                         f"{speaker} narrated instead.")
    spoken = narration.narrate(list(written.lines), language, speaker, duration, closing)
    frames = max(2, round(spoken.length * MOTION_FPS)) * (FPS // MOTION_FPS)
    length = frames / FPS
    progress(30)

    box = captions.safe_box(spec.width, spec.height, SAFE_MARGINS[platform])
    keywords = {k.lower() for k in parse_topic(topic).keywords}
    caption_end = _frame_time(length - closing)
    chunks = captions.chunk(spoken.sentences, language, keywords, caption_end)
    accent = spec.brand.accent if spec.brand and spec.brand.accent else ACCENT
    layers: list[_Layer] = []
    title = title_image(written.title, spec, box, language)
    layers.append(_Layer(title, box.left + (box.width - title.width) // 2, box.top, None, caption_end))
    caption_top = box.top + title.height + spec.height // 30
    caption_area = captions.Box(box.left, caption_top, box.right, box.bottom)
    for item in chunks:
        image = captions.draw_words(item.words, item.highlight, spec.width // 9, caption_area.width, 2, language,
                                    accent, min_size=spec.width // 16)
        x = caption_area.left + (caption_area.width - image.width) // 2
        y = caption_area.top + int(caption_area.height * 0.45) - image.height // 2
        shown = _frame_time(item.start)
        layers.append(_Layer(image, x, max(caption_area.top, y), shown,
                             max(_frame_time(item.end), shown + 1 / MOTION_FPS)))
    logo = logo_image(spec, platform)
    if logo:
        layers.append(_Layer(logo[0], *logo[1]))
    if spec.has_closing_card:
        layers.append(_Layer(closing_image(spec), 0, 0, caption_end, None))
    if spec.watermark:
        mark, (x, y) = watermark_image(spec, platform)
        layers.append(_Layer(mark, x, y))

    palette = palette_for(seed, spec.brand)
    # a scene per sentence, starting as it is spoken (scenes shorter than two fades merge)
    bounds = [0.0]
    for sentence in spoken.sentences[1:]:
        start = _frame_time(sentence.start)
        if start - bounds[-1] >= 2 * TRANSITION_SECONDS and length - start >= 2 * TRANSITION_SECONDS:
            bounds.append(start)
    bounds.append(length)
    small = (max(16, round(spec.width * (1 + PAN[0]) / BACKGROUND_SCALE)),
             max(16, round(spec.height * (1 + PAN[1]) / BACKGROUND_SCALE)))
    scenes = [background(*small, palette, rng, n) for n in range(len(bounds) - 1)]
    progress(45)

    mixed = narration.mix(spoken, narration.music_bed(length, seed) if music else None)
    mixed = np.resize(mixed, round(length * narration.SAMPLE_RATE))
    # a moment with the title and the first words on screen
    poster_time = min(length - 1 / FPS, chunks[0].start + 0.4 if chunks else 1.0)
    with tempfile.TemporaryDirectory(prefix="render-", dir=output.parent) as tmp:
        workdir = Path(tmp)
        wav = narration.write_wav(mixed, workdir / "audio.wav")
        # the audio (two loudness measurements, then AAC) is made while ffmpeg draws the
        # pictures and x264 encodes them: neither waits for the other
        audio = _audio_makers.submit(_encode_audio, wav, length, workdir / "audio.m4a")
        try:
            video = _compose(spec, scenes, bounds, layers, frames, workdir, cache_dir or output.parent / ".cache")
        finally:
            # the scratch directory outlives the audio maker, even when the pictures failed
            wait([audio])
        progress(90)
        audio_path, loudnorm = audio.result()
        partial = workdir / "video.mp4"
        _mux(video, audio_path, frames, written.title, spec.white_label, partial)
        poster = workdir / "poster.jpg"
        run_ffmpeg(["-ss", f"{poster_time:.3f}", "-i", str(partial), "-frames:v", "1",
                    "-vf", f"scale={min(spec.width, 720)}:-2", "-q:v", "3", "-y", str(poster)])
        progress(95)
        poster_path = output.with_suffix(".jpg")
        os.replace(poster, poster_path)
        os.replace(partial, output)
    return Rendered(output, poster_path, length, written, language, speaker, spoken.sentences, chunks, notes,
                    loudnorm)


def warm_up(sizes: list[tuple[int, int]], cache_dir: Path) -> None:
    """What the first render would otherwise wait for: the skip frame of each size, the
    default voice (loaded once per process) and the fonts' character maps. Logs what is
    missing, with the command that installs it."""
    missing = fonts.missing_fonts()
    if missing:
        log.warning("fonts missing: %s; captions fall back to other fonts. Install them with: "
                    "apt-get install %s (or put the files in a folder named by FONT_DIRS)",
                    ", ".join(missing), fonts.DEBIAN_PACKAGES)
    fonts.chain("en")
    for width, height in sizes:
        h264.skip_template(width, height, _X264, cache_dir)
    settings = _settings()
    if settings["tts"]:
        voices.load(settings["voice"])


def _frame_time(seconds: float) -> float:
    """`seconds` on the composition's clock (MOTION_FPS ticks)."""
    return round(seconds * MOTION_FPS) / MOTION_FPS


def _raw_input(image: Image.Image, path: Path, mode: str) -> list[str]:
    image = image.convert(mode)
    path.write_bytes(image.tobytes())
    pix = {"RGB": "rgb24", "RGBA": "rgba"}[mode]
    return ["-f", "rawvideo", "-pix_fmt", pix, "-s", f"{image.width}x{image.height}",
            "-framerate", str(MOTION_FPS), "-i", str(path)]


def _scene_graph(spec: RenderSpec, scenes: list[Image.Image], bounds: list[float]) -> tuple[list[str], str]:
    """Filters for the backgrounds: each scene scaled up once, held, cropped a little
    further each frame (the pan), and faded in over the previous one during the
    TRANSITION_SECONDS before it starts (only those frames are blended)."""
    w, h = spec.width, spec.height
    big_w, big_h = _even(w * (1 + PAN[0])), _even(h * (1 + PAN[1]))
    fade = round(TRANSITION_SECONDS * MOTION_FPS)
    last = len(scenes) - 1
    graph, parts = [], []
    for n, (start, end) in enumerate(zip(bounds, bounds[1:])):
        count = round((end - start) * MOTION_FPS) + (fade if n else 0)
        dx, dy = big_w - w, big_h - h
        # alternate directions so consecutive scenes drift different ways
        x_from, x_to = (0, dx) if n % 2 == 0 else (dx, 0)
        y_from, y_to = (0, dy) if n % 4 < 2 else (dy, 0)
        graph.append(f"[{n}:v]scale={big_w}:{big_h}:flags=bicubic:out_color_matrix=bt709:out_range=tv,"
                     f"format=yuv420p,loop=loop={count - 1}:size=1:start=0,settb=1/{MOTION_FPS},setpts=N,"
                     f"crop={w}:{h}:x='{x_from}+({x_to - x_from})*n/{count}':y='{y_from}+({y_to - y_from})*n/{count}'"
                     f"[s{n}]")
        head, tail = (fade if n else 0), (fade if n < last else 0)
        outputs = [name for name, wanted in (("h", head), ("m", True), ("t", tail)) if wanted]
        graph.append(f"[s{n}]split={len(outputs)}" + "".join(f"[{o}{n}in]" for o in outputs))
        if head:
            graph.append(f"[h{n}in]trim=end_frame={head},setpts=N[h{n}]")
        graph.append(f"[m{n}in]trim=start_frame={head}:end_frame={count - tail},setpts=N[m{n}]")
        if tail:
            graph.append(f"[t{n}in]trim=start_frame={count - tail},setpts=N[t{n}]")
        if n:
            # the incoming scene's alpha rises over the outgoing one (ffmpeg's xfade spent
            # ~60 ms a 4K frame here, this ~15)
            graph.append(f"[h{n}]format=yuva420p,fade=t=in:st=0:d={TRANSITION_SECONDS}:alpha=1[a{n}]")
            graph.append(f"[t{n - 1}][a{n}]overlay=eof_action=pass:format=yuv420[f{n}]")
            parts.append(f"[f{n}]")
        parts.append(f"[m{n}]")
    graph.append("".join(parts) + f"concat=n={len(parts)}:v=1:a=0,settb=1/{MOTION_FPS},setpts=N[bg]")
    return graph, "bg"


def _compose(spec: RenderSpec, scenes: list[Image.Image], bounds: list[float], layers: list[_Layer],
             frames: int, workdir: Path, cache_dir: Path) -> Path:
    """The composition at MOTION_FPS through x264, repeated to 30 fps (worker/h264.py):
    the H.264 stream."""
    inputs: list[str] = []
    for n, image in enumerate(scenes):
        inputs += _raw_input(image, workdir / f"scene{n}.rgb", "RGB")
    graph, current = _scene_graph(spec, scenes, bounds)
    base = len(scenes)
    for n, layer in enumerate(layers):
        inputs += _raw_input(layer.image, workdir / f"layer{n}.rgba", "RGBA")
        graph.append(f"[{base + n}:v]{_TO_BT709},format=yuva420p[l{n}]")
        window = []
        if layer.start is not None:
            window.append(f"gte(t,{layer.start - 0.001:.4f})")
        if layer.end is not None:
            window.append(f"lt(t,{layer.end - 0.001:.4f})")
        enable = f":enable='{'*'.join(window)}'" if window else ""
        graph.append(f"[{current}][l{n}]overlay=x={layer.x}:y={layer.y}:eof_action=repeat{enable}[o{n}]")
        current = f"o{n}"
    copies = FPS // MOTION_FPS
    distinct = frames // copies
    # presented to x264 as consecutive 30 fps frames: repeated afterwards, they are. The
    # fps filter gives each frame its new one-tick duration: frames still carrying their
    # MOTION_FPS duration made ffmpeg's constant-rate output repeat the first picture
    # (at 10 pictures a second every caption came 0.2 s late)
    graph.append(f"[{current}]settb=1/{FPS},setpts=N,fps={FPS},format=yuv420p,setsar=1[video]")
    script = workdir / "graph.txt"
    script.write_text(";\n".join(graph))
    half = workdir / "half.h264"
    run_ffmpeg([*inputs, "-/filter_complex", str(script), "-map", "[video]", *_X264, "-r", str(FPS),
                "-frames:v", str(distinct), "-f", "h264", "-y", str(half)])
    template = h264.skip_template(spec.width, spec.height, _X264, cache_dir)
    repeated = h264.repeat_pictures(half.read_bytes(), template, copies)
    video = workdir / "video.h264"
    if repeated is None:
        log.warning("x264's parameter sets differ from the skip template's: encoding every frame")
        run_ffmpeg(["-f", "h264", "-framerate", str(MOTION_FPS), "-i", str(half), "-vf", f"fps={FPS}",
                    *_X264, "-frames:v", str(frames), "-f", "h264", "-y", str(video)])
    else:
        video.write_bytes(repeated)
    return video


# Audio is made beside the pictures (one thread a render; more renders, more threads).
_audio_makers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="audio")


def _encode_audio(wav: Path, seconds: float, output: Path) -> tuple[Path, str]:
    """The mix brought to -14 LUFS (narration.loudnorm_filter) as 44.1 kHz stereo AAC;
    the file and the loudness filter used."""
    loudnorm = narration.loudnorm_filter(wav)
    run_ffmpeg(["-i", str(wav), "-af", f"{loudnorm},aresample=44100", "-c:a", "aac", "-b:a", "128k", "-ac", "2",
                "-t", f"{seconds:.4f}", "-map_metadata", "-1", "-fflags", "+bitexact", "-f", "mp4", "-y",
                str(output)])
    return output, loudnorm


def _mux(video: Path, audio: Path, frames: int, title: str, white_label: bool, output: Path) -> None:
    """Both streams copied into a fast-start MP4, with the title (and, unless white-label,
    our name) as metadata."""
    metadata = ["-metadata", f"title={title}"]
    if not white_label:
        metadata += ["-metadata", f"comment=Made with {BRAND_NAME}"]
    run_ffmpeg(["-f", "h264", "-framerate", str(FPS), "-i", str(video), "-i", str(audio),
                "-map", "0:v:0", "-map", "1:a:0", "-c", "copy", "-t", f"{frames / FPS:.4f}", *metadata,
                "-map_metadata", "-1", "-fflags", "+bitexact", "-movflags", "+faststart", "-f", "mp4", "-y",
                str(output)])


def _even(value: float) -> int:
    return int(round(value / 2) * 2)
