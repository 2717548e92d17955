"""Custom branding (Pro and Agency): a logo and two colours drawn on every video.

Logos arrive from the web as uploads and are only ever stored after `clean_logo` has
decoded them with Pillow (PNG, JPEG or WebP, recognised by their bytes, not their name
or declared type), under byte and pixel limits checked before decoding (the header gives the size, so a
small file that declares a huge image is refused before its pixels are allocated;
Pillow's decompression-bomb guard stands behind that check), and re-encoded as
a fresh PNG, so nothing of the original file (metadata, trailing data, a second
format hidden after the image) reaches the worker or anyone's video.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass

from PIL import Image, ImageOps

# under the web's 1 MiB request limit, with room for the form around it
MAX_LOGO_BYTES = 1000 * 1000
MAX_LOGO_PIXELS = 4096 * 4096
MAX_LOGO_SIDE = 4096
# logos are stored no larger than this (drawn at most ~900 px wide even at 4K)
STORED_SIDE = 1024
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_SIGNATURES = {
    "PNG": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
    "JPEG": lambda b: b.startswith(b"\xff\xd8\xff"),
    "WEBP": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
}
HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class LogoRejected(ValueError):
    """The upload is not a logo we accept; the message says why, for the user."""


def _end_of_image(data: bytes, kind: str) -> int | None:
    """Where the image's own bytes end (PNG: after IEND; JPEG: after the last EOI;
    WebP: the RIFF size), so bytes appended after it can be noticed."""
    if kind == "PNG":
        at = data.rfind(b"IEND")
        return at + 8 if at >= 0 else None
    if kind == "JPEG":
        at = data.rfind(b"\xff\xd9")
        return at + 2 if at >= 0 else None
    if kind == "WEBP" and len(data) >= 8:
        return 8 + int.from_bytes(data[4:8], "little")
    return None


def clean_logo(data: bytes, declared_type: str | None = None) -> bytes:
    """The upload decoded and re-encoded as PNG (RGBA, at most STORED_SIDE a side), or
    LogoRejected: not PNG/JPEG/WebP by its bytes, a type that disagrees with them, too
    many bytes or pixels, trailing data after the image (a polyglot), or undecodable."""
    if not data:
        raise LogoRejected("The logo file is empty.")
    if len(data) > MAX_LOGO_BYTES:
        raise LogoRejected(f"The logo must be at most {MAX_LOGO_BYTES // (1000 * 1000)} MB.")
    kind = next((name for name, matches in _SIGNATURES.items() if matches(data[:16])), None)
    if kind is None:
        raise LogoRejected("The logo must be a PNG, JPEG or WebP image (SVG and other formats are not accepted).")
    if declared_type and declared_type.split(";")[0].strip().lower() not in ("", "application/octet-stream") \
            and declared_type.split(";")[0].strip().lower() != FORMATS[kind]:
        raise LogoRejected(f"The file is a {kind} image but was sent as {declared_type.split(';')[0]}.")
    end = _end_of_image(data, kind)
    if end is not None and data[end:].strip(b"\x00\r\n\t "):
        raise LogoRejected("The logo file has extra data after the image.")
    try:
        # Image.open reads only the header: the size is known before any pixel is
        # decoded, and Pillow's own guard (DecompressionBombError) stops absurd sizes there
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            width, height = image.size
            if width > MAX_LOGO_SIDE or height > MAX_LOGO_SIDE or width * height > MAX_LOGO_PIXELS:
                raise LogoRejected(f"The logo must be at most {MAX_LOGO_SIDE}×{MAX_LOGO_SIDE} pixels.")
            if width < 16 or height < 16:
                raise LogoRejected("The logo must be at least 16×16 pixels.")
            if getattr(image, "n_frames", 1) > 1:
                raise LogoRejected("Animated logos are not accepted.")
            image.load()
            image = ImageOps.exif_transpose(image).convert("RGBA")
    except LogoRejected:
        raise
    except Image.DecompressionBombError:
        raise LogoRejected(f"The logo must be at most {MAX_LOGO_SIDE}×{MAX_LOGO_SIDE} pixels.") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombWarning) as error:
        raise LogoRejected("The logo could not be read as an image.") from error
    image.thumbnail((STORED_SIDE, STORED_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def parse_colour(value: str | None) -> tuple[int, int, int] | None:
    """#rrggbb -> (r, g, b); None for None; ValueError otherwise."""
    if value is None:
        return None
    if not HEX_COLOUR.match(value):
        raise ValueError("must be a colour like #1e90ff")
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


@dataclass(frozen=True)
class Brand:
    """What a Pro or Agency customer's videos carry: their logo (a cleaned PNG) and colours."""

    logo_png: bytes | None = None
    primary: tuple[int, int, int] | None = None
    accent: tuple[int, int, int] | None = None

    def logo(self) -> Image.Image | None:
        if not self.logo_png:
            return None
        with Image.open(io.BytesIO(self.logo_png), formats=["PNG"]) as image:
            return image.convert("RGBA")
