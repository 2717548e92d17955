"""Text in any script users type: per-character font fallback, bidi runs, RAQM shaping.

Each character is drawn by the first font of a chain that has a glyph for it (the
chain is Noto: Latin/Cyrillic/Greek, Arabic, Hebrew, Devanagari, Thai, CJK, colour
emoji, symbols; then every other Noto family found), so nothing is drawn as a box.
Runs are shaped by Pillow's RAQM layout (HarfBuzz + FriBiDi), which joins Arabic
letters and orders right-to-left text; a right-to-left line lists its runs from the
right. Emoji come from Noto Color Emoji, a bitmap font drawn at its one size (109 px)
and scaled.

Where the fonts come from: Debian's `fonts-noto-core`, `fonts-noto-cjk` and
`fonts-noto-color-emoji` (CI and the service machine install them). Elsewhere, put the
Noto files in a folder named by `FONT_DIRS` (os.pathsep-separated) or any of the usual
font folders; without them text falls back to DejaVu Sans and then Pillow's built-in
font, and `missing_fonts()` says what to install (the worker logs it at start-up).
"""
from __future__ import annotations

import os
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

EMOJI_BITMAP_SIZE = 109
# (file name, face index in a collection, language it suits or None): order is priority.
# Latin/Cyrillic/Greek first so punctuation and digits keep one look across a line.
CHAIN = [
    ("NotoSans-Bold.ttf", 0),
    ("NotoSansArabic-Bold.ttf", 0),
    ("NotoSansHebrew-Bold.ttf", 0),
    ("NotoSansDevanagari-Bold.ttf", 0),
    ("NotoSansThai-Bold.ttf", 0),
    ("NotoSansCJK-Bold.ttc", None),  # face chosen by language: see _CJK_FACES
    ("NotoColorEmoji.ttf", 0),
    ("NotoSansSymbols-Bold.ttf", 0),
    ("NotoSansSymbols2-Regular.ttf", 0),
    ("DejaVuSans-Bold.ttf", 0),
]
_CJK_FACES = {"ja": 0, "ko": 1, "zh": 2, "zh-tw": 3}
DEBIAN_PACKAGES = "fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji"
_DEFAULT_DIRS = ["/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts",
                 "/Library/Fonts", "/System/Library/Fonts", "~/Library/Fonts", "C:/Windows/Fonts"]
# characters that belong to whatever they follow (joiners, variation selectors, marks)
_STICKY = {"\u200d", "\ufe0e", "\ufe0f", "\u20e3"}


def font_dirs() -> list[Path]:
    extra = [p for p in os.environ.get("FONT_DIRS", "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in extra + _DEFAULT_DIRS]


@lru_cache(maxsize=None)
def find_font(name: str) -> Path | None:
    """The first file called `name` under the font folders."""
    for folder in font_dirs():
        if folder.is_dir():
            for path in folder.rglob(name):
                return path
    return None


def missing_fonts() -> list[str]:
    """Chain fonts not found on this machine (the worker logs these with the fix)."""
    return [name for name, _ in CHAIN if find_font(name) is None]


@dataclass(frozen=True)
class Face:
    """One font file (and face of a collection) with the characters it covers."""

    path: str
    index: int
    cmap: frozenset
    emoji: bool

    def covers(self, char: str) -> bool:
        return ord(char) in self.cmap


_faces_lock = threading.Lock()


@lru_cache(maxsize=None)
def _face(path: str, index: int) -> Face:
    from fontTools.ttLib import TTFont

    with TTFont(path, fontNumber=index, lazy=True) as font:
        cmap = frozenset(font.getBestCmap() or {})
        emoji = "CBDT" in font or "sbix" in font
    return Face(path, index, cmap, emoji)


@lru_cache(maxsize=None)
def chain(language: str = "en") -> tuple[Face, ...]:
    """The fonts found on this machine, in fallback order (CJK face picked by language)."""
    faces = []
    with _faces_lock:
        for name, index in CHAIN:
            path = find_font(name)
            if path is None:
                continue
            if index is None:
                index = _CJK_FACES.get(language, _CJK_FACES["zh"])
            faces.append(_face(str(path), index))
    return tuple(faces)


@lru_cache(maxsize=None)
def _extra_faces() -> tuple[Face, ...]:
    """Every other bold (or only) Noto Sans family on the machine: the last resort for
    scripts the main chain lacks (Armenian, Georgian, Ethiopic, ...)."""
    listed = {name for name, _ in CHAIN}
    seen, faces = set(), []
    for folder in font_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("NotoSans*-*.ttf")):
            family, style = path.stem.rsplit("-", 1)
            if path.name in listed or family in seen or style not in ("Bold", "Regular"):
                continue
            bold = path.with_name(f"{family}-Bold.ttf")
            chosen = bold if bold.exists() else path
            seen.add(family)
            faces.append(_face(str(chosen), 0))
    return tuple(faces)


def face_for(char: str, language: str = "en", prefer: Face | None = None) -> Face | None:
    """The font that draws `char`: the preferred one (the run so far) if it can, else the
    first of the chain that can; None if no font on this machine has it."""
    if prefer is not None and prefer.covers(char):
        return prefer
    for face in chain(language):
        if face.covers(char):
            return face
    for face in _extra_faces():
        if face.covers(char):
            return face
    return None


def missing_characters(text: str, language: str = "en") -> list[str]:
    """Characters of `text` no font here can draw (white space and joiners aside)."""
    return [c for c in dict.fromkeys(text)
            if not c.isspace() and c not in _STICKY and unicodedata.category(c) not in ("Mn", "Me", "Cf")
            and face_for(c, language) is None]


def is_rtl(char: str) -> bool:
    return unicodedata.bidirectional(char) in ("R", "AL")


def _strong(char: str) -> str | None:
    kind = unicodedata.bidirectional(char)
    return "rtl" if kind in ("R", "AL") else "ltr" if kind == "L" else None


def base_direction(text: str) -> str:
    """The paragraph direction: that of the first strong character (Unicode rule P2)."""
    for char in text:
        strong = _strong(char)
        if strong:
            return strong
    return "ltr"


@dataclass(frozen=True)
class Run:
    """Consecutive characters drawn by one font in one direction, in logical order."""

    text: str
    face: Face | None
    direction: str


def runs(text: str, language: str = "en") -> list[Run]:
    """`text` split into font/direction runs, in visual order (left to right)."""
    base = base_direction(text)
    pieces: list[list] = []  # [chars, face, direction]
    for char in text:
        previous = pieces[-1] if pieces else None
        strong = _strong(char)
        sticky = char in _STICKY or unicodedata.category(char) in ("Mn", "Me") or \
            0x1F3FB <= ord(char) <= 0x1F3FF
        if previous is not None and previous[1] is not None and (
                sticky or (strong in (None, previous[2]) and previous[1].covers(char)
                           and not (char.isspace() and previous[1].emoji))):
            previous[0].append(char)
            continue
        face = face_for(char, language, prefer=None if char.isspace() else previous[1] if previous else None)
        direction = strong or (previous[2] if previous else base)
        if previous is not None and face is previous[1] and direction == previous[2]:
            previous[0].append(char)
        else:
            pieces.append([[char], face, direction])
    # white space at the edge of a run against the paragraph's direction sits between
    # the runs, in the paragraph's direction (so "שלום and" keeps one space either side)
    split: list[list] = []
    for chars, face, direction in pieces:
        if direction != base:
            text_ = "".join(chars)
            core = text_.strip()
            lead, tail = text_[:len(text_) - len(text_.lstrip())], text_[len(text_.rstrip()):]
            if lead:
                split.append([list(lead), face_for(" ", language), base])
            if core:
                split.append([list(core), face, direction])
            if tail:
                split.append([list(tail), face_for(" ", language), base])
        else:
            split.append([chars, face, direction])
    result = [Run("".join(chars), face, direction) for chars, face, direction in split]
    if base == "rtl":
        result.reverse()
    return result


@lru_cache(maxsize=256)
def pillow_font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    """A sized font with RAQM layout (shaping, bidi); emoji fonts only come in one size."""
    face = _face(path, index)
    return ImageFont.truetype(path, EMOJI_BITMAP_SIZE if face.emoji else size, index=index,
                              layout_engine=ImageFont.Layout.RAQM)


def _fallback_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _run_width(run: Run, size: int, language: str) -> float:
    if run.face is None:
        return _fallback_font(size).getlength(run.text)
    font = pillow_font(run.face.path, run.face.index, size)
    width = font.getlength(run.text, direction=run.direction, language=_raqm_language(language))
    return width * size / EMOJI_BITMAP_SIZE * 0.92 if run.face.emoji else width


def _raqm_language(language: str) -> str | None:
    return language.split("-")[0] if language and language != "und" else None


def text_width(text: str, size: int, language: str = "en") -> float:
    return sum(_run_width(run, size, language) for run in runs(text, language))


def draw_text(image: Image.Image, xy: tuple[float, float], text: str, size: int, fill, language: str = "en",
              stroke_width: int = 0, stroke_fill=None) -> float:
    """Draw `text` on one baseline, xy being the top-left of the main font's ascent box;
    returns the width drawn. Emoji keep their colours; other runs take `fill` and the stroke."""
    x, y = xy
    baseline = y + line_metrics(size, language)[0]
    draw = ImageDraw.Draw(image)
    for run in runs(text, language):
        if run.face is None:
            font = _fallback_font(size)
            draw.text((x, baseline), run.text, font=font, fill=fill, stroke_width=stroke_width,
                      stroke_fill=stroke_fill, anchor="ls")
            x += font.getlength(run.text)
            continue
        font = pillow_font(run.face.path, run.face.index, size)
        raqm = {"direction": run.direction, "language": _raqm_language(language)}
        if run.face.emoji:
            # drawn at the bitmap's own size on its baseline, then scaled to the text's size
            width = font.getlength(run.text, **raqm)
            sprite_baseline = EMOJI_BITMAP_SIZE
            sprite = Image.new("RGBA", (max(1, int(width) + 4), EMOJI_BITMAP_SIZE + 30), (0, 0, 0, 0))
            ImageDraw.Draw(sprite).text((0, sprite_baseline), run.text, font=font, embedded_color=True,
                                        anchor="ls", **raqm)
            scale = size / EMOJI_BITMAP_SIZE * 0.92
            sprite = sprite.resize((max(1, round(sprite.width * scale)), max(1, round(sprite.height * scale))),
                                   Image.Resampling.LANCZOS)
            position = (round(x), round(baseline - sprite_baseline * scale))
            if image.mode == "RGBA":
                image.alpha_composite(sprite, position)
            else:
                image.paste(sprite, position, sprite)
            x += width * scale
            continue
        draw.text((x, baseline), run.text, font=font, fill=fill, stroke_width=stroke_width, stroke_fill=stroke_fill,
                  anchor="ls", **raqm)
        x += font.getlength(run.text, **raqm)
    return x - xy[0]


@lru_cache(maxsize=256)
def line_metrics(size: int, language: str = "en") -> tuple[int, int]:
    """(ascent, descent) of the main font at `size`, for line spacing."""
    faces = chain(language)
    if not faces:
        return size, size // 4
    ascent, descent = pillow_font(faces[0].path, faces[0].index, size).getmetrics()
    return ascent, descent
