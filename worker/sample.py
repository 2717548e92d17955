"""The landing page's sample video: rendered once by the real pipeline when a render
worker first starts, kept under MEDIA_ROOT/sample/, never committed to the repository.

The web process serves it when it is there (web/media.py) and shows the page without it
until then, so a fresh deployment is never blocked on the render.
"""
from __future__ import annotations

import fcntl
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

SAMPLE_TOPIC = "The history of coffee"
SAMPLE_PLATFORM = "tiktok"
SAMPLE_SECONDS = 20
# a fixed take, so every deployment shows the same video
SAMPLE_SEED = 20261201
# a paid plan's look (no watermark or closing card) at the size phones show anyway
SAMPLE_SIZE = (720, 1280)


def sample_dir(media_root: Path) -> Path:
    return media_root / "sample"


def sample_video(media_root: Path) -> Path:
    return sample_dir(media_root) / "sample.mp4"


def sample_poster(media_root: Path) -> Path:
    return sample_dir(media_root) / "sample.jpg"


def sample_ready(media_root: Path) -> bool:
    """Both files are in place (each appears only once complete)."""
    return sample_video(media_root).is_file() and sample_poster(media_root).is_file()


def ensure_sample(media_root: Path, cache_dir: Path | None = None, renderer=None) -> bool:
    """Render the sample unless it exists; True when this call rendered it. Workers on one
    machine take a file lock, so only one of them renders; the files appear under their
    final names only when complete (render_short renames them into place). The renderer
    is imported here, so the web process can ask sample_ready() without loading it."""
    from .render import RenderSpec, render_short

    renderer = renderer or render_short
    folder = sample_dir(media_root)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # under the lock no other render of the sample runs: scratch here is a killed one's
        for scratch in folder.glob("render-*"):
            shutil.rmtree(scratch, ignore_errors=True)
        if sample_ready(media_root):
            return False
        log.info("rendering the landing page's sample video")
        spec = RenderSpec(*SAMPLE_SIZE, watermark=False, closing_card=False)
        renderer(SAMPLE_TOPIC, SAMPLE_PLATFORM, SAMPLE_SECONDS, spec, sample_video(media_root),
                 cache_dir=cache_dir, seed=SAMPLE_SEED)
        log.info("sample video ready: %s", sample_video(media_root))
        return True
