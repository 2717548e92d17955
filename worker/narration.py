"""Narration: each sentence spoken by a Piper voice, paced to fill the requested length,
with every word's time known so the captions can follow the speech.

Pacing, not padding: the voice's speed (Piper's length scale, 0.8–1.3) and the pauses
between sentences (0.15–0.8 s) are chosen so that the speech fills the video; only the
lead-in, a short tail and (on the free plan) the closing card are without speech. Word
times come from the phoneme alignments Piper reports (a space phoneme ends a word);
when a sentence's spoken words cannot be matched to its written ones (numbers read out
as several words, say), its words share the sentence's speech by length.

The music bed is synthesised here too (a slow, quiet chord pad, different for each
video), so nothing is downloaded. Loudness is normalised by ffmpeg's loudnorm (two
passes, linear) in worker/render.py's mux.
"""
from __future__ import annotations

import json
import math
import re
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import language as languages
from . import voices
from .h264 import run_ffmpeg_stderr

SAMPLE_RATE = 22050
LEAD_IN = 0.25
GAP = (0.15, 0.35, 0.8)  # shortest, usual, longest pause between sentences
TAIL = (0.5, 1.2)  # the quiet after the last word: at least, at most
LENGTH_SCALE = (0.8, 1.3)  # fastest, slowest the voice may be asked to speak
WORDS_PER_SECOND = voices.WORDS_PER_SECOND
# reading speed for captions nobody speaks (no voice for the language)
READ_CHARS_PER_SECOND = {"ja": 7.0, "zh": 6.0, "ko": 9.0}
LOUDNESS = {"I": -14.0, "TP": -1.5, "LRA": 11.0}
MUSIC_BELOW_VOICE_DB = 20.0


@dataclass
class Word:
    text: str
    start: float
    end: float


@dataclass
class Sentence:
    """A sentence as shown and (when spoken) heard, on the video's clock."""

    text: str
    start: float
    end: float
    words: list[Word]
    spoken: bool
    timed_by: str  # alignment | proportional | reading


@dataclass
class Narration:
    sentences: list[Sentence]
    audio: np.ndarray  # float32 mono at SAMPLE_RATE, as long as the video
    length: float  # seconds of video this narration wants
    voice: str | None
    length_scale: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def speech_span(self) -> tuple[float, float]:
        spoken = [s for s in self.sentences if s.spoken]
        return (spoken[0].start, spoken[-1].end) if spoken else (0.0, 0.0)


@dataclass
class _Take:
    """One sentence synthesised: its samples and its spoken words' (start, end) in samples."""

    samples: np.ndarray
    word_spans: list[tuple[int, int]]


def _speakable_text(sentence: str, language: str) -> str:
    return " ".join(w for w in sentence.split() if languages.speakable(w, language))


def _word_spans(chunk) -> list[tuple[int, int]] | None:
    """(start, end) sample of each word in one Piper audio chunk, from its phoneme
    alignments; None when the voice gives none."""
    if not chunk.phoneme_alignments:
        return None
    spans, position, start = [], 0, None
    for alignment in chunk.phoneme_alignments:
        phoneme, samples = alignment.phoneme, int(alignment.num_samples)
        if phoneme in ("^", "$", "_"):
            position += samples
            continue
        if phoneme == " ":
            if start is not None:
                spans.append((start, position))
                start = None
        elif start is None and re.match(r"\w", phoneme):
            start = position
        position += samples
    if start is not None:
        spans.append((start, position))
    return spans


def _synthesise(voice, text: str, length_scale: float) -> _Take:
    from piper import SynthesisConfig

    config = SynthesisConfig(length_scale=length_scale * (voice.config.length_scale or 1.0))
    parts, spans, offset, aligned = [], [], 0, True
    for chunk in voice.synthesize(text, syn_config=config, include_alignments=True):
        audio = chunk.audio_float_array.astype(np.float32)
        chunk_spans = _word_spans(chunk)
        if chunk_spans is None:
            aligned = False
        else:
            spans += [(offset + a, offset + b) for a, b in chunk_spans]
        parts.append(audio)
        offset += len(audio)
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return _Take(samples, spans if aligned else [])


# Sentences are spoken two at a time: one Piper inference keeps about one core busy (its
# ONNX graph is a chain of small operators), the machine has two, and Piper serialises
# only the phonemiser (espeak-ng), which takes a millisecond a sentence.
_speakers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="piper")


def _synthesise_all(voice, texts: list[str], length_scale: float) -> list[_Take | None]:
    """Every sentence spoken (None for one with nothing to say), in order."""
    return list(_speakers.map(lambda text: _synthesise(voice, text, length_scale) if text else None, texts))


def _speech_bounds(samples: np.ndarray) -> tuple[int, int]:
    """First and last sample louder than -40 dBFS (Piper leaves a little silence around)."""
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return (int(loud[0]), int(loud[-1]) + 1) if len(loud) else (0, len(samples))


def _time_words(text: str, language: str, take: _Take | None, start: float, length: float) -> tuple[list[Word], str]:
    """Each written word's time: matched to the spoken words when their counts agree,
    else shared out by length over the sentence."""
    written = text.split() if languages.spaced(language) else [text]
    if take is not None and take.word_spans:
        speakable = [i for i, w in enumerate(written) if languages.speakable(w, language)]
        if len(speakable) == len(take.word_spans):
            times = [None] * len(written)
            for index, (a, b) in zip(speakable, take.word_spans):
                times[index] = (start + a / SAMPLE_RATE, start + b / SAMPLE_RATE)
            # words nobody says (another script, an emoji) appear with the word after them
            following = start + length
            for index in range(len(written) - 1, -1, -1):
                if times[index] is None:
                    times[index] = (following, following)
                following = times[index][0]
            return [Word(w, a, b) for w, (a, b) in zip(written, times)], "alignment"
    if take is not None:
        first, last = _speech_bounds(take.samples)
        start, length = start + first / SAMPLE_RATE, (last - first) / SAMPLE_RATE
    weights = [len(w) + 1 for w in written]
    total, clock, words = sum(weights), start, []
    for w, weight in zip(written, weights):
        span = length * weight / total
        words.append(Word(w, clock, clock + span))
        clock += span
    return words, "proportional" if take is not None else "reading"


def _reading_seconds(sentence: str, language: str) -> float:
    if language in READ_CHARS_PER_SECOND:
        return max(1.2, len(sentence.replace(" ", "")) / READ_CHARS_PER_SECOND[language])
    return max(1.2, len(sentence.split()) / WORDS_PER_SECOND)


def estimate_seconds(sentences: list[str], language: str = "en") -> float:
    """Roughly how long the sentences take to say at the voice's own pace (for writers)."""
    return sum(_reading_seconds(s, language) for s in sentences) + GAP[1] * max(0, len(sentences) - 1)


def narrate(sentences: list[str], language: str, voice_name: str | None, target: float,
            closing: float = 0.0) -> Narration:
    """Speak `sentences` (or time them for reading, when `voice_name` is None) to fill
    `target` seconds, the last `closing` of which belong to the closing card."""
    sentences = [s for s in (" ".join(s.split()) for s in sentences) if s]
    if not sentences:
        raise ValueError("nothing to narrate")
    budget = target - LEAD_IN - TAIL[0] - closing
    gaps = max(0, len(sentences) - 1)
    takes: list[_Take | None]
    scale = None
    if voice_name is not None:
        voice = voices.load(voice_name)
        texts = [_speakable_text(s, language) for s in sentences]
        estimate = sum(len(t.split()) for t in texts) / WORDS_PER_SECOND
        scale = _clamp((budget - gaps * GAP[1]) / max(estimate, 0.1), *LENGTH_SCALE)
        takes = _synthesise_all(voice, texts, scale)
        spoken = sum(len(t.samples) for t in takes if t) / SAMPLE_RATE
        # the estimate was off by more than the pauses can absorb: say it again, faster or slower
        if spoken and not _fits(spoken, gaps, budget):
            wanted = _clamp(scale * (budget - gaps * GAP[1]) / spoken, *LENGTH_SCALE)
            if abs(wanted - scale) > 0.02:
                scale = wanted
                takes = _synthesise_all(voice, texts, scale)
        lengths = [len(t.samples) / SAMPLE_RATE if t else _reading_seconds(s, language) * 0.5
                   for t, s in zip(takes, sentences)]
    else:
        takes = [None] * len(sentences)
        reading = [_reading_seconds(s, language) for s in sentences]
        stretch = _clamp((budget - gaps * GAP[1]) / sum(reading), 0.6, 2.5)
        lengths = [r * stretch for r in reading]
    total = sum(lengths)
    gap = _clamp((budget - total) / gaps, GAP[0], GAP[2]) if gaps else 0.0
    clock = LEAD_IN
    timed: list[Sentence] = []
    audio_parts: list[tuple[float, np.ndarray]] = []
    for text, take, length in zip(sentences, takes, lengths):
        words, how = _time_words(text, language, take, clock, length)
        timed.append(Sentence(text, clock, clock + length, words, take is not None, how))
        if take is not None:
            audio_parts.append((clock, take.samples))
        clock += length + gap
    clock -= gap
    # a narration that cannot be slowed or sped enough sets its own length (the video
    # follows it); otherwise the video is exactly as long as asked
    remaining = target - closing - clock
    length = target if TAIL[0] <= remaining <= TAIL[1] else clock + _clamp(remaining, *TAIL) + closing
    audio = np.zeros(int(round(length * SAMPLE_RATE)), np.float32)
    for start, samples in audio_parts:
        first = int(round(start * SAMPLE_RATE))
        audio[first:first + len(samples)] += samples[:max(0, len(audio) - first)]
    return Narration(timed, audio, length, voice_name, scale)


def _fits(spoken: float, gaps: int, budget: float) -> bool:
    return spoken + gaps * GAP[0] <= budget + TAIL[1] - TAIL[0] and spoken + gaps * GAP[2] >= budget


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def music_bed(seconds: float, seed: int) -> np.ndarray:
    """A quiet pad of slow chords, one every four seconds, fading in and out: four voices
    of soft sine partials per chord, so it sits under speech without competing."""
    rng = np.random.default_rng(seed)
    roots = [57, 53, 60, 55, 52, 50]  # A3, F3, C4, G3, E3, D3 (MIDI)
    progression = [roots[i] for i in rng.permutation(len(roots))[:4]]
    minor = bool(rng.integers(2))
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    out = np.zeros(n, np.float32)
    chord_seconds = 4.0
    for index in range(int(math.ceil(seconds / chord_seconds)) + 1):
        root = progression[index % len(progression)]
        start = (index * chord_seconds) - 0.5
        envelope = np.clip((t - start) / 1.2, 0, 1) * np.clip((start + chord_seconds + 1.0 - t) / 1.2, 0, 1)
        if not envelope.any():
            continue
        for interval in (0, 3 if minor else 4, 7, 12):
            freq = 440.0 * 2 ** ((root + interval - 69) / 12)
            wobble = 1 + 0.002 * np.sin(2 * np.pi * 0.3 * t + rng.random() * 6)
            out += envelope * (np.sin(2 * np.pi * freq * t * wobble) + 0.25 * np.sin(4 * np.pi * freq * t)) * 0.2
    fade = np.minimum(1, np.minimum(t / 1.0, (seconds - t) / 1.5)).clip(0, 1)
    return (out * fade).astype(np.float32)


def mix(narration: Narration, music: np.ndarray | None) -> np.ndarray:
    """Voice plus music, the music sitting MUSIC_BELOW_VOICE_DB under the speech's level
    (or at a fixed quiet level when nothing is spoken)."""
    voice = narration.audio
    if music is None:
        return voice
    music = np.resize(music, len(voice)) if len(music) != len(voice) else music
    speech = voice[np.abs(voice) > 0.01]
    reference = float(np.sqrt(np.mean(speech ** 2))) if len(speech) else 0.2
    level = float(np.sqrt(np.mean(music ** 2))) or 1.0
    return voice + music * (reference / level) * 10 ** (-MUSIC_BELOW_VOICE_DB / 20)


def write_wav(samples: np.ndarray, path: Path) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm.tobytes())
    return path


def _measure(path: Path, chain: str) -> dict:
    target = ":".join(f"{k}={v}" for k, v in LOUDNESS.items())
    stderr = run_ffmpeg_stderr(["-i", str(path), "-af", f"{chain},loudnorm={target}:print_format=json",
                                "-f", "null", "-"])
    return json.loads(stderr[stderr.rindex("{"):stderr.rindex("}") + 1])


def loudnorm_filter(path: Path) -> str:
    """The audio filter that brings this file to -14 LUFS integrated, -1.5 dBTP.

    Speech peaks sit ~20 dB above its loudness, more than the 12.5 dB that -14 LUFS
    under -1.5 dBTP leaves, so loudnorm alone cannot apply one constant gain (it falls
    back to its dynamic mode, which lands ~2 dB short on a short clip). So: measure,
    raise the level 5 dB past the target into a limiter that shaves the peaks, measure
    that, and let loudnorm's second pass finish with the measured values."""
    raw = _measure(path, "anull")
    if float(raw["input_i"]) < -70:  # digital silence: nothing to normalise
        return "anull"
    gain = LOUDNESS["I"] - float(raw["input_i"]) + 5
    chain = f"volume={gain:.2f}dB,alimiter=limit=0.6:attack=2:release=60:level=false"
    measured = _measure(path, chain)
    target = ":".join(f"{k}={v}" for k, v in LOUDNESS.items())
    return (f"{chain},loudnorm={target}:measured_I={measured['input_i']}:measured_TP={measured['input_tp']}"
            f":measured_LRA={measured['input_lra']}:measured_thresh={measured['input_thresh']}"
            f":offset={measured['target_offset']}:linear=true")
