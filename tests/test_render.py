"""The renderer on its own: real MP4s, probed, heard (volumedetect, ebur128, silencedetect)
and looked at (frames decoded and compared) with ffmpeg."""
from __future__ import annotations

import io
import re
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageDraw

from worker import fonts, h264
from worker.branding import Brand, clean_logo
from worker.render import (CLOSING_SECONDS, FPS, MOTION_FPS, RenderSpec, SAFE_MARGINS, closing_image, logo_box,
                           render_short, watermark_box)
from worker.script import OfflineWriter, ScriptRequest

from .media import (FFMPEG, decode_errors, frame_array, frame_count, frame_rgb, integrated_loudness, max_volume,
                    metadata, probe, region_contrast, sound_span)


def make_logo() -> bytes:
    """A logo with structure (a ring, a bar, letters) so a template match means something."""
    image = Image.new("RGBA", (400, 160), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse([10, 10, 150, 150], fill=(230, 40, 60, 255))
    draw.ellipse([50, 50, 110, 110], fill=(255, 255, 255, 255))
    draw.rectangle([170, 30, 390, 70], fill=(30, 140, 240, 255))
    draw.rectangle([170, 95, 300, 130], fill=(250, 200, 20, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return clean_logo(out.getvalue(), "image/png")


BRAND = Brand(logo_png=make_logo(), primary=(16, 120, 90), accent=(255, 120, 40))
TIERS = {"free": RenderSpec(720, 1280, True), "starter": RenderSpec(1080, 1920, False),
         "pro": RenderSpec(2160, 3840, False, brand=BRAND)}
TOPIC = "the history of coffee"


@pytest.fixture(scope="module")
def rendered(media_root):
    """One 20 s video per tier (the pro one branded), rendered once for the module."""
    out = {}
    for tier, spec in TIERS.items():
        steps = []
        out[tier] = (render_short(TOPIC, "tiktok", 20, spec, media_root / f"render-{tier}.mp4", steps.append,
                                  media_root / ".cache", seed=7), steps)
    return out


@pytest.mark.parametrize("tier", TIERS)
def test_each_tier_renders_a_playable_vertical_mp4_with_a_poster(rendered, tier):
    result, _ = rendered[tier]
    spec = TIERS[tier]
    info = probe(result.path)
    assert (info.width, info.height) == (spec.width, spec.height)
    assert abs(info.duration - 20) <= 0.1
    assert info.fps == 30 and info.video_codec == "h264" and info.pixel_format == "yuv420p"
    assert info.audio_codec == "aac"
    assert info.faststart, "moov atom must come first so playback starts at once"
    assert decode_errors(result.path) == ""
    assert frame_count(result.path) == 600
    with Image.open(result.poster) as poster:
        assert poster.format == "JPEG" and poster.width == min(spec.width, 720)
        assert abs(poster.height / poster.width - spec.height / spec.width) < 0.01


def test_the_audio_is_speech_at_streaming_loudness(rendered):
    result, _ = rendered["starter"]
    assert result.voice == "en_US-joe-medium"
    assert max_volume(result.path) >= -20
    assert abs(integrated_loudness(result.path) - (-14)) <= 1.5


def test_speech_lasts_as_long_as_the_narration(media_root):
    """Without the music bed, the loud part of the track is the speech: it starts and ends
    where the narration's first and last sentences do (within 5 % of its length)."""
    result = render_short("octopus intelligence", "youtube_shorts", 20, TIERS["free"], media_root / "speech.mp4",
                          cache_dir=media_root / ".cache", music=False, seed=3)
    first, last = result.sentences[0].start, result.sentences[-1].end
    heard_first, heard_last = sound_span(result.path)
    narration = last - first
    assert abs((heard_last - heard_first) - narration) <= 0.05 * narration, (heard_first, heard_last, first, last)
    assert abs(heard_first - first) <= 0.3


def _caption_change(path, spec, a: float, b: float) -> float:
    """Share of pixels in the caption band that changed sharply (text appearing or going)."""
    top, right, bottom, left = SAFE_MARGINS["tiktok"]
    y0, y1, x0, x1 = int(spec.height * 0.25), int(spec.height * (1 - bottom)), int(spec.width * left), \
        int(spec.width * (1 - right))
    one = frame_array(path, a, spec.width, spec.height)[y0:y1, x0:x1].astype(int).sum(axis=2)
    two = frame_array(path, b, spec.width, spec.height)[y0:y1, x0:x1].astype(int).sum(axis=2)
    return float((np.abs(one - two) > 240).mean())


def _audio_rms(path, start: float, end: float) -> float:
    pcm = subprocess.run([FFMPEG, "-v", "error", "-ss", f"{start:.3f}", "-t", f"{end - start:.3f}", "-i", str(path),
                          "-ac", "1", "-ar", "16000", "-f", "s16le", "-"], capture_output=True, check=True).stdout
    samples = np.frombuffer(pcm, "<i2").astype(float) / 32768
    return float(np.sqrt(np.mean(samples ** 2))) if len(samples) else 0.0


def test_captions_appear_when_their_sentence_is_spoken(rendered):
    """At each sentence's start the voice begins (the audio gets loud) and the caption
    changes (sharp pixel changes in the caption band); within a chunk it holds still."""
    result, _ = rendered["starter"]
    spec = TIERS["starter"]
    assert len(result.sentences) >= 4
    for sentence in result.sentences[1:]:
        first = next(c for c in result.chunks if c.sentence == result.sentences.index(sentence))
        assert sentence.start - 0.05 <= first.start <= sentence.start + 0.3, (sentence.text, first.start)
        shown = round(first.start * MOTION_FPS) / MOTION_FPS
        before, after = shown - 2 / FPS, shown + 1 / FPS
        assert _caption_change(result.path, spec, before, after) > 0.002, sentence.text
        hold = min(first.end, shown + 0.3) - 1 / FPS
        assert _caption_change(result.path, spec, after, hold) < 0.0005, sentence.text
        gap = sentence.start - 0.12
        assert _audio_rms(result.path, sentence.start + 0.05, sentence.start + 0.35) > \
            3 * _audio_rms(result.path, gap - 0.1, gap), sentence.text


def test_watermark_only_on_free(rendered):
    for tier, expect_mark in (("free", True), ("starter", False)):
        result, _ = rendered[tier]
        spec = TIERS[tier]
        for second in (1, 10, 19.5):
            rgb = frame_rgb(result.path, second, spec.width, spec.height)
            white, dark = region_contrast(rgb, spec.width, watermark_box(spec, "tiktok"))
            if expect_mark:
                assert white > 0.03 and dark > 0.3, (tier, second, white, dark)
            else:
                assert white < 0.005 and dark < 0.3, (tier, second, white, dark)


def _with_closing_card(frame: np.ndarray, spec: RenderSpec) -> np.ndarray:
    base = Image.fromarray(frame).convert("RGBA")
    base.alpha_composite(closing_image(spec))
    return np.asarray(base.convert("RGB")).astype(int)


def test_the_closing_card_is_free_only_and_paid_videos_never_name_us(rendered):
    """The last second is compared with the closing card drawn over the frame before it:
    the free video matches it, the paid ones do not (their captions simply stay)."""
    for tier in TIERS:
        result, _ = rendered[tier]
        spec = TIERS[tier]
        end = result.length - CLOSING_SECONDS - 0.15
        before = frame_array(result.path, end, spec.width, spec.height)
        last = frame_array(result.path, result.length - 0.2, spec.width, spec.height).astype(int)
        difference = float(np.abs(last - _with_closing_card(before, spec)).mean())
        if tier == "free":
            assert difference < 12, difference
        else:
            assert difference > 25, (tier, difference)
    assert "Made with Story Genius" in metadata(rendered["starter"][0].path)


def test_white_label_leaves_our_name_out_of_the_file(media_root):
    spec = RenderSpec(720, 1280, False, brand=BRAND, white_label=True)
    result = render_short(TOPIC, "tiktok", 15, spec, media_root / "white-label.mp4", cache_dir=media_root / ".cache")
    data = result.path.read_bytes()
    assert b"Story Genius" not in data and b"story genius" not in data.lower()
    assert "Story Genius" not in " ".join(result.script.lines) + result.script.title


def _match(frame: np.ndarray, template: np.ndarray) -> float:
    """Best normalised cross-correlation of a grey template anywhere in a grey frame."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(frame, template.shape)
    t = (template - template.mean()) / (template.std() + 1e-6)
    w = windows - windows.mean(axis=(2, 3), keepdims=True)
    w = w / (windows.std(axis=(2, 3), keepdims=True) + 1e-6)
    return float((w * t).mean(axis=(2, 3)).max())


def test_a_branded_render_carries_the_logo_and_colours(rendered):
    result, _ = rendered["pro"]
    spec = TIERS["pro"]
    scale = 8
    x0, y0, x1, y1 = logo_box(spec, "tiktok")
    logo = BRAND.logo()
    logo.thumbnail((x1 - x0, y1 - y0))
    backdrop = Image.new("RGBA", logo.size, (40, 40, 40, 255))
    backdrop.alpha_composite(logo)
    template = np.asarray(backdrop.convert("L").resize((logo.width // scale, logo.height // scale)), float)
    for second in (1, 12, 19.5):
        frame = Image.fromarray(frame_array(result.path, second, spec.width, spec.height)).convert("L")
        top = np.asarray(frame.resize((spec.width // scale, spec.height // scale)), float)[: spec.height // scale // 4]
        assert _match(top, template) > 0.8, second
    plain = Image.fromarray(frame_array(rendered["starter"][0].path, 1, 1080, 1920)).convert("L")
    top = np.asarray(plain.resize((2160 // scale, 3840 // scale)), float)[: 3840 // scale // 4]
    assert _match(top, template) < 0.6
    # the highlighted caption word is drawn in the brand's accent colour
    orange = 0
    for chunk in result.chunks[:6]:
        if chunk.highlight is not None:
            frame = frame_array(result.path, chunk.start + 0.1, spec.width, spec.height)[::4, ::4].astype(int)
            orange += int(((abs(frame[..., 0] - 255) < 40) & (abs(frame[..., 1] - 120) < 40)
                           & (frame[..., 2] < 90)).sum())
    assert orange > 500


def _tofu(text: str) -> list[str]:
    """Characters drawn as the font's 'missing glyph' box: each character is drawn alone
    with the font the layout chose for it and compared with that font's .notdef glyph."""
    boxes = []
    for run in fonts.runs(text):
        assert run.face is not None, run.text
        if run.face.emoji:
            boxes += [c for c in run.text if not c.isspace() and not run.face.covers(c) and ord(c) > 0x2000
                      and c not in "\u200d\ufe0f" and not 0x1F3FB <= ord(c) <= 0x1F3FF]
            continue
        font = fonts.pillow_font(run.face.path, run.face.index, 48)

        def glyph(char: str) -> bytes:
            image = Image.new("L", (120, 120))
            ImageDraw.Draw(image).text((20, 20), char, font=font, fill=255)
            return image.tobytes()

        notdef = glyph("\U000F0000")
        for char in run.text:
            if char.isspace() or not char.isprintable():
                continue
            if not run.face.covers(char) or glyph(char) == notdef:
                boxes.append(char)
    return boxes


MIXED = ("Café crème in Tōkyō ☕ 東京のカフェ. Привет, мир! Γειά σου κόσμε. مرحبا بالعالم. שלום עולם. "
         "हिन्दी ภาษาไทย 한국어 👩‍👩‍👧 🇯🇵")


def test_a_mixed_script_topic_renders_without_tofu(media_root):
    assert fonts.missing_characters(MIXED) == []
    assert _tofu(MIXED) == []
    result = render_short("Café culture in Tōkyō ☕ 東京", "instagram_reels", 20, RenderSpec(720, 1280, False),
                          media_root / "mixed.mp4", cache_dir=media_root / ".cache", script=MIXED)
    assert decode_errors(result.path) == ""
    shown = " ".join(c.text for c in result.chunks)
    for word in ("東京のカフェ.", "Привет,", "κόσμε.", "بالعالم.", "שלום", "👩‍👩‍👧"):
        assert word in shown
    for chunk in result.chunks:
        assert _tofu(chunk.text) == [], chunk.text
    # the Cyrillic chunk really is on screen: caption ink (white, or the accent yellow)
    chunk = next(c for c in result.chunks if "Привет," in c.words)
    frame = frame_array(result.path, chunk.start + 0.1, 720, 1280)[350:900]
    assert ((frame.min(axis=2) > 220) | ((frame[..., 0] > 225) & (frame[..., 1] > 180) & (frame[..., 2] < 80))
            ).mean() > 0.005


def test_boxes_would_be_caught():
    """The tofu checks are not vacuous: a character no font has is reported, and a
    character drawn with a font that lacks it is seen to be the box."""
    assert fonts.missing_characters("abc \U000F0000") == ["\U000F0000"]
    latin = fonts.chain()[0]
    font = fonts.pillow_font(latin.path, latin.index, 48)
    drawn = []
    for char in ("東", "\U000F0000", "a"):
        image = Image.new("L", (120, 120))
        ImageDraw.Draw(image).text((20, 20), char, font=font, fill=255)
        drawn.append(image.tobytes())
    assert drawn[0] == drawn[1] != drawn[2]


def test_a_users_script_is_narrated_as_written(media_root):
    script = "Coffee was first brewed in Yemen. Traders carried it to Cairo and Istanbul! Now it is everywhere."
    result = render_short("coffee", "tiktok", 15, TIERS["free"], media_root / "own-script.mp4",
                          cache_dir=media_root / ".cache", script=script)
    assert [s.text for s in result.sentences] == ["Coffee was first brewed in Yemen.",
                                                  "Traders carried it to Cairo and Istanbul!", "Now it is everywhere."]
    assert " ".join(c.text for c in result.chunks) == script
    assert result.script.source == "user" and max_volume(result.path) >= -20


def test_a_language_without_a_voice_gets_captions_and_a_note(media_root):
    result = render_short("東京のカフェ文化", "tiktok", 15, TIERS["free"], media_root / "ja.mp4",
                          cache_dir=media_root / ".cache", script="東京のカフェは朝早くから開いています。静かな店が多いです。",
                          music=False)
    assert result.language == "ja" and result.voice is None
    assert result.notes and "Japanese" in result.notes[0]
    assert max_volume(result.path) < -60
    assert [c.text for c in result.chunks][:2] == ["東京のカフェは", "朝早くから開い"]


def test_narration_can_be_switched_off(media_root):
    result = render_short(TOPIC, "tiktok", 15, TIERS["free"], media_root / "silent.mp4",
                          cache_dir=media_root / ".cache", tts=False, music=False)
    assert result.voice is None and result.notes == []
    assert max_volume(result.path) < -60
    assert len(result.chunks) > 5  # the captions are still timed, for reading


def test_the_same_topic_twice_is_another_take(media_root):
    one = render_short(TOPIC, "tiktok", 15, TIERS["free"], media_root / "take-1.mp4",
                       cache_dir=media_root / ".cache", seed=101)
    two = render_short(TOPIC, "tiktok", 15, TIERS["free"], media_root / "take-2.mp4",
                       cache_dir=media_root / ".cache", seed=202)
    assert one.script.lines != two.script.lines
    assert one.path.read_bytes() != two.path.read_bytes()


def test_the_offline_writer_writes_about_the_topic_and_titles_honestly():
    for topic in ("the history of coffee", "octopus intelligence", "why cats purr", "deep sea creatures"):
        keywords = {w for w in topic.lower().split() if len(w) > 3}
        for duration in (15, 20, 37, 60):
            for seed in range(5):
                script = OfflineWriter().write(ScriptRequest(topic, duration, "en", seed, duration - 2.0))
                again = OfflineWriter().write(ScriptRequest(topic, duration, "en", seed, duration - 2.0))
                assert script == again
                numbers = re.findall(r"(\d+)[- ]second", script.title + " " + " ".join(script.lines))
                assert all(int(n) == duration for n in numbers), (script.title, duration)
                text = " ".join(script.lines).lower()
                mentioned = sum(text.count(k) for k in keywords)
                assert mentioned >= min(len(script.lines) // 2, 3), (topic, script.lines)
                words = len(text.split())
                assert duration * 1.8 <= words <= duration * 3.4, (duration, words)


@pytest.mark.parametrize("duration", [15, 60])
def test_requested_duration_is_honoured_by_pacing(media_root, duration):
    result = render_short("deep sea creatures", "youtube_shorts", duration, TIERS["free"],
                          media_root / f"duration-{duration}.mp4", cache_dir=media_root / ".cache")
    assert abs(probe(result.path).duration - duration) <= 0.1
    assert frame_count(result.path) == duration * 30
    # the speech fills the video: no more than the lead-in, the tail and the closing card is quiet
    assert result.sentences[-1].end >= duration - CLOSING_SECONDS - 1.3


def test_long_and_unbreakable_topics_still_fit(media_root):
    topic = "Supercalifragilisticexpialidocious" * 5 + " and a very long tail of words " * 3
    result = render_short(topic[:200], "instagram_reels", 15, TIERS["free"], media_root / "long.mp4",
                          cache_dir=media_root / ".cache")
    assert decode_errors(result.path) == ""


@pytest.mark.parametrize("copies", [2, 3])
def test_repeating_pictures_shows_each_picture_exactly_n_times(tmp_path, media_root, copies):
    """x264's pictures, each followed by copies - 1 skip frames, decode to every picture
    `copies` times, bit for bit the pictures of the stream before repeating."""
    width, height = 192, 336
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "20", "-pix_fmt", "yuv420p", "-g", "20",
            "-x264-params", "bframes=0:ref=1"]
    source = h264.run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=s={width}x{height}:r={30 // copies}", "-vf",
                              "settb=1/30,setpts=N,setsar=1", "-r", "30", "-frames:v", "45", *x264, "-f", "h264", "pipe:1"])
    template = h264.skip_template(width, height, x264, media_root / ".cache")
    repeated = h264.repeat_pictures(source, template, copies)
    assert repeated is not None
    assert copies != 2 or repeated == h264.double_frame_rate(source, template)
    frames = []
    for name, stream in (("source", source), ("repeated", repeated)):
        (tmp_path / f"{name}.h264").write_bytes(stream)
        frames.append(np.frombuffer(h264.run_ffmpeg(["-f", "h264", "-i", str(tmp_path / f"{name}.h264"), "-f",
                                                     "rawvideo", "-pix_fmt", "gray", "pipe:1"]), np.uint8)
                      .reshape(-1, height, width))
    assert len(frames[0]) == 45 and len(frames[1]) == 45 * copies
    for copy in range(copies):
        assert (frames[1][copy::copies] == frames[0]).all()
    assert subprocess.run([FFMPEG, "-v", "error", "-f", "h264", "-i", str(tmp_path / "repeated.h264"), "-f", "null",
                           "-"], capture_output=True, text=True).stderr == ""


def test_progress_is_reported_in_steps(rendered):
    _, steps = rendered["free"]
    assert len(steps) >= 5 and steps == sorted(steps) and steps[-1] < 100


def _strip(path, seconds: float, spec: RenderSpec) -> np.ndarray:
    """The band below the captions (inside the platform's bottom margin): background only."""
    frame = frame_array(path, seconds, spec.width, spec.height).astype(float)
    return frame[int(spec.height * 0.82):int(spec.height * 0.95), int(spec.width * 0.1):int(spec.width * 0.9)]


def _best_shift(a: np.ndarray, b: np.ndarray, reach: int = 12) -> tuple[float, tuple[int, int]]:
    """The smallest mean difference between b and a shifted by up to `reach` pixels."""
    best = (float("inf"), (0, 0))
    for dy in range(-reach, reach + 1, 2):
        for dx in range(-reach, reach + 1, 2):
            x0, y0 = reach, reach
            h, w = a.shape[0] - 2 * reach, a.shape[1] - 2 * reach
            diff = float(np.abs(a[y0:y0 + h, x0:x0 + w] - b[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w]).mean())
            best = min(best, (diff, (dx, dy)))
    return best


def test_scenes_pan_and_cross_fade(media_root):
    """Motion kept: within a scene the background moves (a shift matches the next picture
    far better than standing still), and each new scene fades in over the last one."""
    from worker.render import TRANSITION_SECONDS, _frame_time

    spec = RenderSpec(720, 1280, False)
    result = render_short(TOPIC, "tiktok", 20, spec, media_root / "motion.mp4", cache_dir=media_root / ".cache",
                          seed=11)
    cut = next(_frame_time(s.start) for s in result.sentences[1:]
               if _frame_time(s.start) >= 2 * TRANSITION_SECONDS)
    a, b = _strip(result.path, 0.3, spec), _strip(result.path, 0.8, spec)
    still = float(np.abs(a - b).mean())
    shifted, (dx, dy) = _best_shift(a, b)
    assert (dx, dy) != (0, 0) and shifted < still / 2, (still, shifted, dx, dy)
    # before, during and after the cross-fade into the second scene
    before = _strip(result.path, cut - TRANSITION_SECONDS - 0.05, spec).mean(axis=(0, 1))
    during = _strip(result.path, cut - TRANSITION_SECONDS / 2, spec).mean(axis=(0, 1))
    after = _strip(result.path, cut + 0.05, spec).mean(axis=(0, 1))
    assert np.abs(after - before).max() > 6, (before, after)
    share = float(np.dot(during - before, after - before) / np.dot(after - before, after - before))
    assert 0.2 < share < 0.8, (before, during, after, share)
