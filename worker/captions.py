"""Captions the way creators post them: 1–4 words at a time, shown as they are spoken,
big bold sans-serif with a dark outline, one keyword in the accent colour, inside the
platform's safe area.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from PIL import Image

from . import fonts
from . import language as languages
from .narration import Sentence
from .script import STOPWORDS

MAX_WORDS = 4
# a chunk longer than this many characters is split (the text must stay big)
MAX_CHARS = 16
# unspaced scripts (Chinese, Japanese, Thai) are shown this many characters at a time
UNSPACED_PIECE = 7
WHITE = (255, 255, 255, 255)
OUTLINE = (12, 10, 24, 255)


@dataclass
class Chunk:
    words: list[str]
    start: float
    end: float
    highlight: int | None  # index into words
    sentence: int
    joiner: str = " "

    @property
    def text(self) -> str:
        return self.joiner.join(self.words)


def _pieces(sentence: Sentence, language: str) -> list[tuple[str, float, float]]:
    """The sentence's words with times; unspaced text cut into short timed pieces."""
    out = []
    for word in sentence.words:
        if languages.spaced(language) or len(word.text) <= UNSPACED_PIECE:
            out.append((word.text, word.start, word.end))
            continue
        parts = [word.text[i:i + UNSPACED_PIECE] for i in range(0, len(word.text), UNSPACED_PIECE)]
        if len(parts) > 1 and not any(ch.isalnum() for ch in parts[-1]):
            parts[-2:] = [parts[-2] + parts[-1]]  # closing punctuation stays with its words
        span = (word.end - word.start) / len(parts)
        out += [(part, word.start + n * span, word.start + (n + 1) * span) for n, part in enumerate(parts)]
    return out


def keyword_index(words: list[str], keywords: set[str]) -> int | None:
    """The word to highlight: a topic keyword if the chunk has one, else its longest
    word that is not a small word; None for a chunk of small words only."""
    def bare(word: str) -> str:
        return re.sub(r"^\W+|\W+$", "", word).lower()

    for n, word in enumerate(words):
        if bare(word) in keywords:
            return n
    candidates = [(len(bare(w)), n) for n, w in enumerate(words) if bare(w) not in STOPWORDS and len(bare(w)) >= 3]
    return max(candidates)[1] if candidates else None


def chunk(sentences: list[Sentence], language: str, keywords: set[str], until: float) -> list[Chunk]:
    """1–4-word chunks, each shown from its first word's start until the next chunk
    starts (the last one until `until`); a chunk breaks after punctuation."""
    chunks: list[Chunk] = []
    spaced = languages.spaced(language)
    limit, joiner = (MAX_CHARS, " ") if spaced else (UNSPACED_PIECE, "")
    for index, sentence in enumerate(sentences):
        current: list[tuple[str, float, float]] = []
        for piece in _pieces(sentence, language):
            current.append(piece)
            text = joiner.join(p[0] for p in current)
            if len(current) == MAX_WORDS or len(text) >= limit or re.search(r"[,.;:!?。、！？]$", piece[0]):
                chunks.append(Chunk([p[0] for p in current], current[0][1], 0.0, None, index, joiner))
                current = []
        if current:
            chunks.append(Chunk([p[0] for p in current], current[0][1], 0.0, None, index, joiner))
    for n, item in enumerate(chunks):
        item.end = chunks[n + 1].start if n + 1 < len(chunks) else until
        # a chunk at least a few frames long, even when words come fast
        item.end = max(item.end, item.start + 0.1)
        item.highlight = keyword_index(item.words, keywords)
    return chunks


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def safe_box(width: int, height: int, margins: tuple[float, float, float, float]) -> Box:
    top, right, bottom, left = margins
    return Box(int(width * left), int(height * top), int(width * (1 - right)), int(height * (1 - bottom)))


def _wrap(words: list[str], size: int, max_width: int, language: str, spaced: bool) -> list[list[int]]:
    """Word indexes per line, greedily filled."""
    joiner = " " if spaced else ""
    lines: list[list[int]] = []
    for n, word in enumerate(words):
        if lines and fonts.text_width(joiner.join(words[i] for i in lines[-1] + [n]), size, language) <= max_width:
            lines[-1].append(n)
        else:
            lines.append([n])
    return lines


def fit_lines(words: list[str], size: int, max_width: int, max_lines: int, language: str,
              min_size: int) -> tuple[int, list[list[int]]]:
    """The largest size (from `size` down) at which the words wrap into `max_lines` lines
    that fit `max_width`."""
    spaced = languages.spaced(language)
    joiner = " " if spaced else ""
    while True:
        lines = _wrap(words, size, max_width, language, spaced)
        widest = max(fonts.text_width(joiner.join(words[i] for i in line), size, language) for line in lines)
        if (len(lines) <= max_lines and widest <= max_width) or size <= min_size:
            return size, lines
        size = int(size * 0.9)


def draw_words(words: list[str], highlight: int | None, size: int, max_width: int, max_lines: int,
               language: str, accent: tuple, min_size: int | None = None, align: str = "center",
               fill: tuple = WHITE) -> Image.Image:
    """The words as a transparent RGBA image, wrapped and centred, outlined, the
    highlighted word in the accent colour."""
    spaced = languages.spaced(language)
    size, lines = fit_lines(words, size, max_width, max_lines, language, min_size or max(12, size // 3))
    stroke = max(2, size // 12)
    ascent, descent = fonts.line_metrics(size, language)
    line_height = int((ascent + descent) * 1.08)
    space = fonts.text_width(" ", size, language) if spaced else 0
    rtl = fonts.base_direction(" ".join(words)) == "rtl"
    image = Image.new("RGBA", (max_width + 2 * stroke, line_height * len(lines) + 2 * stroke), (0, 0, 0, 0))
    for row, line in enumerate(lines):
        widths = [fonts.text_width(words[i], size, language) for i in line]
        total = sum(widths) + space * (len(line) - 1)
        x = stroke + (max_width - total) / 2 if align == "center" else stroke
        order = list(zip(line, widths))
        if rtl:
            order.reverse()  # right-to-left lines put their first word on the right
        for index, width in order:
            colour = accent if index == highlight else fill
            fonts.draw_text(image, (x, stroke + row * line_height), words[index], size, colour, language,
                            stroke_width=stroke, stroke_fill=OUTLINE)
            x += width + space
    bbox = image.getbbox()
    return image.crop(bbox) if bbox else image
