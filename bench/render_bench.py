"""Render time of a 20 s short per tier, as a ratio to 20 s of real time.

Cold = the first render at a frame size after start-up (the worker builds that size's
skip-frame template once, normally in the background at start-up); warm = the median
of three renders after that, which is what every user's video costs. The plain
pipeline (every frame through x264) is measured alongside for comparison.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from worker import h264
from worker.render import RenderSpec, draw_card, frame_counts, render_short, write_script

TIERS = {"free": RenderSpec(720, 1280, True), "starter": RenderSpec(1080, 1920, False),
         "pro/agency": RenderSpec(2160, 3840, False)}
DURATION = 20
GOALS = {"free": 0.1, "starter": 0.2, "pro/agency": 0.5}


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(repeats: int = 3) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="sg-render-bench-") as tmp:
        root = Path(tmp)
        for tier, spec in TIERS.items():
            out = root / f"{tier.replace('/', '-')}.mp4"
            cold = _timed(lambda: render_short("the history of coffee", "tiktok", DURATION, spec, out,
                                               cache_dir=root / "cache"))
            warm = statistics.median(
                _timed(lambda: render_short(f"topic {n} for the benchmark", "tiktok", DURATION, spec, out,
                                            cache_dir=root / "cache")) for n in range(repeats))
            cards = write_script("the history of coffee", DURATION)
            frames = [draw_card(card, spec, "tiktok", ((40, 40, 90), (120, 40, 90))).tobytes() for card in cards]
            work = root / "plain"
            work.mkdir(exist_ok=True)
            plain = _timed(lambda: h264.stills_to_h264_plainly(frames, frame_counts(cards, DURATION),
                                                               spec.width, spec.height, work))
            rows.append({"tier": tier, "size": f"{spec.width}x{spec.height}",
                         "warm s": f"{warm:.2f}", "warm ratio": f"{warm / DURATION:.3f}x",
                         "goal": f"<= {GOALS[tier]}x", "cold s": f"{cold:.2f}",
                         "plain x264 video only s": f"{plain:.2f}"})
    return rows


if __name__ == "__main__":
    from .common import table

    print(table(run()))
