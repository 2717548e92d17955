"""Static files with their content's fingerprint in the name, cached for a year, and
responses compressed with brotli or gzip (issue 20 item 8's HTTP conventions).

`url_for('static', filename='app.css')` gives `/static/app.1a2b3c4d5e6f.css`; a change to
the file changes the name, so browsers may keep a fingerprinted file forever (`immutable`)
and still see a new release at once. The plain name keeps working, briefly cached, for
links from outside (a favicon, an old page).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from flask import Flask
from flask_compress import Compress

FINGERPRINT_LENGTH = 12
_FINGERPRINTED = re.compile(rf"^(?P<stem>.+)\.(?P<digest>[0-9a-f]{{{FINGERPRINT_LENGTH}}})(?P<ext>\.[A-Za-z0-9]+)$")
IMMUTABLE = "public, max-age=31536000, immutable"
# a plain or outdated name: a deploy may change the file behind it at any time
SHORT = "public, max-age=300"

# What gets compressed: pages, JSON and the text assets. Videos, posters and PNGs are
# compressed already; the encoders would only burn CPU on them.
COMPRESSED_TYPES = ["text/html", "application/json", "application/problem+json", "text/css", "text/javascript",
                    "application/javascript", "image/svg+xml", "image/vnd.microsoft.icon", "text/plain"]
compress = Compress()


class Fingerprints:
    """The fingerprint of each file in the static folder, recomputed when it changes."""

    def __init__(self, folder: str):
        self.folder = Path(folder).resolve()
        self._digests: dict[str, tuple[tuple[float, int], str]] = {}

    def digest(self, filename: str) -> str | None:
        """The content's SHA-256 prefix, or None for a file that is not in the folder."""
        path = (self.folder / filename).resolve()
        if not path.is_relative_to(self.folder) or not path.is_file():
            return None
        stat = path.stat()
        key = (stat.st_mtime, stat.st_size)
        cached = self._digests.get(filename)
        if cached and cached[0] == key:
            return cached[1]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:FINGERPRINT_LENGTH]
        self._digests[filename] = (key, digest)
        return digest

    def fingerprinted(self, filename: str) -> str:
        """`name.<digest>.ext`; a missing file or one without an extension keeps its name."""
        digest = self.digest(filename)
        stem, dot, ext = filename.rpartition(".")
        if digest is None or not dot or not stem or "/" in ext:
            return filename
        return f"{stem}.{digest}.{ext}"

    def original(self, filename: str) -> tuple[str, bool]:
        """(the file's own name, whether the fingerprint asked for is its current one)."""
        match = _FINGERPRINTED.match(filename)
        if match:
            name = match["stem"] + match["ext"]
            if self.digest(name) is not None:
                return name, self.digest(name) == match["digest"]
        return filename, False


def init_app(app: Flask) -> None:
    """Fingerprint static URLs, serve them with long caching, compress text responses."""
    fingerprints = Fingerprints(app.static_folder)
    app.extensions["sg_fingerprints"] = fingerprints
    send_static = app.view_functions["static"]

    @app.url_defaults
    def _fingerprint_static_urls(endpoint, values):
        if endpoint == "static" and "filename" in values:
            values["filename"] = fingerprints.fingerprinted(values["filename"])

    def static(filename: str):
        name, current = fingerprints.original(filename)
        response = send_static(filename=name)
        response.headers["Cache-Control"] = IMMUTABLE if current else SHORT
        if response.mimetype in COMPRESSED_TYPES and response.status_code == 200:
            # read the (small) file now, so it is compressed whole, gzip included,
            # rather than streamed (flask-compress streams brotli and deflate only)
            response.direct_passthrough = False
            response.set_data(response.get_data())
        return response

    app.view_functions["static"] = static

    app.config.setdefault("COMPRESS_MIMETYPES", COMPRESSED_TYPES)
    app.config.setdefault("COMPRESS_ALGORITHM", ["br", "gzip"])
    app.config.setdefault("COMPRESS_ALGORITHM_STREAMING", ["br", "deflate"])
    # brotli 4 is gzip's speed with smaller output; pages are built per request
    app.config.setdefault("COMPRESS_BR_LEVEL", 4)
    app.config.setdefault("COMPRESS_MIN_SIZE", 500)
    compress.init_app(app)

