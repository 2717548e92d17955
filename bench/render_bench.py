"""Render time of a narrated 20 s short per tier, as a ratio to 20 s of real time.

Warm = the median of three renders after one at the same size (the voice is loaded and
the size's skip frame built once per worker process, normally at start-up), which is
what every user's video costs. Wall time depends on what else the machine runs, so the
CPU time the render used (the process and its ffmpeg children) is printed beside it,
with the load average: on an idle 2-core machine wall ≈ CPU / 2 for the encode.
"""
from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from worker.render import RenderSpec, render_short

TIERS = {"free": RenderSpec(720, 1280, True), "starter": RenderSpec(1080, 1920, False),
         "pro/agency": RenderSpec(2160, 3840, False)}
DURATION = 20
GOALS = {"free": 0.2, "starter": 0.2, "pro/agency": 0.5}
CORES = os.cpu_count() or 1


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - wall, _cpu() - cpu


def run(repeats: int = 3) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="sg-render-bench-") as tmp:
        root = Path(tmp)
        for tier, spec in TIERS.items():
            out = root / f"{tier.replace('/', '-')}.mp4"
            cold, _ = _timed(lambda: render_short("the history of coffee", "tiktok", DURATION, spec, out,
                                                  cache_dir=root / "cache"))
            warm = [_timed(lambda n=n: render_short(f"topic {n} for the benchmark", "tiktok", DURATION, spec, out,
                                                    cache_dir=root / "cache", seed=n)) for n in range(repeats)]
            wall = statistics.median(w for w, _ in warm)
            cpu = statistics.median(c for _, c in warm)
            rows.append({"tier": tier, "size": f"{spec.width}x{spec.height}",
                         "warm s": f"{wall:.2f}", "warm ratio": f"{wall / DURATION:.3f}x",
                         "goal": f"<= {GOALS[tier]}x", "warm CPU s": f"{cpu:.2f}",
                         # what the work needs of two cores at best: wall can only get there
                         # when nothing else runs (TTS, pictures and audio overlap)
                         "CPU/2 cores s": f"{cpu / CORES:.2f}",
                         "cold s": f"{cold:.2f}", "load avg": f"{os.getloadavg()[0]:.1f}"})
    return rows


if __name__ == "__main__":
    from .common import table

    print(table(run()))
