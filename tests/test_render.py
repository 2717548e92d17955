"""The renderer on its own: real MP4s probed with ffmpeg."""
from __future__ import annotations

import pytest

from worker import h264
from worker.render import RenderSpec, frame_counts, render_short, watermark_box, write_script

from .media import decode_errors, frame_count, frame_rgb, probe, region_contrast

TIERS = {"free": RenderSpec(720, 1280, True), "starter": RenderSpec(1080, 1920, False),
         "pro": RenderSpec(2160, 3840, False)}


@pytest.fixture(scope="module")
def rendered(media_root):
    """One 20 s video per tier, rendered once for the module."""
    out = {}
    for tier, spec in TIERS.items():
        steps = []
        out[tier] = (render_short("the history of coffee", "tiktok", 20, spec, media_root / f"render-{tier}.mp4",
                                  steps.append, media_root / ".cache"), steps)
    return out


@pytest.mark.parametrize("tier", TIERS)
def test_each_tier_renders_a_playable_vertical_mp4(rendered, tier):
    path, _ = rendered[tier]
    spec = TIERS[tier]
    info = probe(path)
    assert (info.width, info.height) == (spec.width, spec.height)
    assert abs(info.duration - 20) <= 0.5
    assert info.fps == 30 and info.video_codec == "h264" and info.pixel_format == "yuv420p"
    assert info.audio_codec == "aac"
    assert info.faststart, "moov atom must come first so playback starts at once"
    assert decode_errors(path) == ""
    assert frame_count(path) == 600


def test_watermark_on_free_and_not_on_starter(rendered):
    for tier, expect_mark in (("free", True), ("starter", False)):
        path, _ = rendered[tier]
        spec = TIERS[tier]
        for second in (1, 10, 19):  # title, a scene and the closing card
            rgb = frame_rgb(path, second, spec.width, spec.height)
            white, dark = region_contrast(rgb, spec.width, watermark_box(spec, "tiktok"))
            if expect_mark:
                assert white > 0.03 and dark > 0.3, (tier, second, white, dark)
            else:
                assert white < 0.005 and dark < 0.3, (tier, second, white, dark)


def test_progress_is_reported_in_steps(rendered):
    _, steps = rendered["free"]
    assert len(steps) >= 5 and steps == sorted(steps) and steps[-1] < 100


def test_script_is_deterministic_with_4_to_6_scenes():
    first, again = write_script("Octopus intelligence", 20), write_script("Octopus intelligence", 20)
    assert first == again
    kinds = [card.kind for card in first]
    assert kinds[0] == "title" and kinds[-1] == "closing" and 4 <= kinds.count("scene") <= 6
    for duration in (15, 20, 37, 60):
        assert sum(frame_counts(write_script("any topic", duration), duration)) == duration * 30


@pytest.mark.parametrize("duration", [15, 60])
def test_requested_duration_is_honoured(media_root, duration):
    path = render_short("deep sea creatures", "youtube_shorts", duration, TIERS["free"],
                        media_root / f"duration-{duration}.mp4", cache_dir=media_root / ".cache")
    assert abs(probe(path).duration - duration) <= 0.5
    assert frame_count(path) == duration * 30


def test_long_and_unbreakable_topics_still_fit(media_root):
    topic = "Supercalifragilisticexpialidocious" * 5 + " and a very long tail of words " * 3
    path = render_short(topic[:200], "instagram_reels", 15, TIERS["free"], media_root / "long.mp4",
                        cache_dir=media_root / ".cache")
    assert decode_errors(path) == ""


def test_fast_path_matches_the_plain_pipeline(tmp_path, media_root):
    """The skip-frame stream decodes to the same pictures as encoding every frame."""
    from PIL import Image

    width, height = 180, 320
    frames = [Image.new("RGB", (width, height), color).tobytes() for color in ((200, 30, 30), (30, 200, 30))]
    counts = [40, 35]
    fast = h264.stills_to_h264(frames, counts, width, height, media_root / ".cache")
    plain = h264.stills_to_h264_plainly(frames, counts, width, height, tmp_path)
    assert fast is not None
    decoded = []
    for name, stream in (("fast", fast), ("plain", plain)):
        (tmp_path / f"{name}.h264").write_bytes(stream)
        decoded.append(h264.run_ffmpeg(["-f", "h264", "-i", str(tmp_path / f"{name}.h264"),
                                        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]))
    frame_size = width * height * 3
    assert len(decoded[0]) == len(decoded[1]) == 75 * frame_size

    def frame(stream: bytes, n: int) -> bytes:
        return stream[n * frame_size:(n + 1) * frame_size][::97]

    # the same picture frame for frame (both are lossy encodes: a few levels apart at most),
    # and the cut from red to green lands on the same frame
    for n in (0, 39, 40, 74):
        assert max(abs(x - y) for x, y in zip(frame(decoded[0], n), frame(decoded[1], n))) <= 10, n
    assert frame(decoded[0], 39)[0] > 150 and frame(decoded[0], 40)[0] < 60
