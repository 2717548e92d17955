"""HTTP conventions (issue 20 item 8): brotli/gzip for pages and JSON, fingerprinted static
files cached for a year without `Vary: Cookie`."""
from __future__ import annotations

import gzip
import json
import re

import brotli
import pytest

from web.assets import IMMUTABLE, SHORT, Fingerprints

from .test_auth_ui import sign_up


def decoded(response) -> bytes:
    encoding = response.headers.get("Content-Encoding")
    if encoding == "gzip":
        return gzip.decompress(response.data)
    if encoding == "br":
        return brotli.decompress(response.data)
    assert encoding is None, encoding
    return response.data


@pytest.mark.parametrize("encoding", ["gzip", "br"])
@pytest.mark.parametrize("path", ["/openapi.json", "/", "/docs", "/pricing", "/v1/billing/plans"])
def test_pages_and_json_are_compressed(client, path, encoding):
    plain = client.get(path)
    packed = client.get(path, headers={"Accept-Encoding": encoding})
    assert packed.status_code == plain.status_code == 200
    assert packed.headers["Content-Encoding"] == encoding
    assert "Accept-Encoding" in packed.headers["Vary"]
    assert decoded(packed) == plain.data
    assert int(packed.headers["Content-Length"]) == len(packed.data) < len(plain.data)


def test_the_contract_shrinks_to_under_a_fifth(client):
    plain = client.get("/openapi.json")
    packed = client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert json.loads(gzip.decompress(packed.data)) == plain.get_json()
    assert len(packed.data) < len(plain.data) / 5, (len(packed.data), len(plain.data))  # 44.8 kB -> 4.9 kB


def test_signed_in_pages_are_compressed_too(app):
    browser = app.test_client()
    sign_up(browser)
    page = browser.get("/dashboard", headers={"Accept-Encoding": "br"})
    assert page.headers["Content-Encoding"] == "br"
    assert b"Your videos" in brotli.decompress(page.data)


def test_no_encoding_asked_none_given(client):
    response = client.get("/openapi.json")
    assert "Content-Encoding" not in response.headers


def test_videos_are_not_recompressed(app, connect, media_root, tmp_path):
    from web import create_app
    from web.config import role_dsn

    from worker import sample

    media = tmp_path / "media"
    sample.sample_dir(media).mkdir(parents=True)
    sample.sample_video(media).write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 5000)
    sample.sample_poster(media).write_bytes(b"\xff\xd8\xff" + b"\x00" * 5000)
    dsn = app.config["DATABASE_URL"]
    other = create_app({"TESTING": True, "DATABASE_URL": dsn, "APP_DATABASE_URL": role_dsn(dsn, "sg_app"),
                        "MEDIA_ROOT": str(media)})
    try:
        client = other.test_client()
        for path in ("/media/sample.mp4", "/media/sample.jpg"):
            response = client.get(path, headers={"Accept-Encoding": "gzip, br"})
            assert response.status_code == 200 and "Content-Encoding" not in response.headers, path
    finally:
        other.extensions["sg_pool"].close()


def static_urls(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="(/static/[^"]+)"', html)


def test_static_urls_carry_the_files_fingerprint(app, client):
    browser = app.test_client()
    sign_up(browser)
    urls = static_urls(browser.get("/dashboard").get_data(as_text=True))
    names = {re.sub(r"\.[0-9a-f]{12}\.", ".", url.rsplit("/", 1)[1]) for url in urls}
    assert {"app.css", "app.js", "dashboard.js", "favicon.svg"} <= names
    for url in urls:
        assert re.fullmatch(r"/static/[\w-]+\.[0-9a-f]{12}\.\w+", url), url
        response = browser.get(url)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == IMMUTABLE
        assert "Cookie" not in response.headers.get("Vary", "")
        assert "Set-Cookie" not in response.headers
        original = browser.get("/static/" + re.sub(r"\.[0-9a-f]{12}\.", ".", url.rsplit("/", 1)[1]))
        assert original.data == response.data
        assert original.headers["Cache-Control"] == SHORT


def test_static_text_is_compressed_with_gzip_and_brotli(client):
    url = static_urls(client.get("/login").get_data(as_text=True))
    css = next(u for u in url if ".css" in u)
    plain = client.get(css)
    for encoding in ("gzip", "br"):
        packed = client.get(css, headers={"Accept-Encoding": encoding})
        assert packed.headers["Content-Encoding"] == encoding and decoded(packed) == plain.data
        assert packed.headers["Cache-Control"] == IMMUTABLE


def test_an_outdated_fingerprint_gets_the_current_file_briefly_cached(client):
    plain = client.get("/static/app.css")
    stale = client.get("/static/app.000000000000.css")
    assert stale.status_code == 200 and stale.data == plain.data
    assert stale.headers["Cache-Control"] == SHORT


@pytest.mark.parametrize("path", ["/static/../setup.cfg", "/static/..%2fsetup.cfg", "/static/nope.css",
                                  "/static/nope.0123456789ab.css"])
def test_nothing_outside_the_folder_or_missing(client, path):
    assert client.get(path).status_code == 404


def test_a_changed_file_gets_a_new_fingerprint(tmp_path):
    (tmp_path / "site.css").write_text("body { color: red }")
    (tmp_path / "noext").write_text("x")
    prints = Fingerprints(str(tmp_path))
    first = prints.fingerprinted("site.css")
    assert re.fullmatch(r"site\.[0-9a-f]{12}\.css", first)
    assert prints.original(first) == ("site.css", True)
    (tmp_path / "site.css").write_text("body { color: blue; }")
    second = prints.fingerprinted("site.css")
    assert second != first
    assert prints.original(first) == ("site.css", False)
    assert prints.fingerprinted("missing.css") == "missing.css"
    assert prints.fingerprinted("../outside.css") == "../outside.css"
    assert prints.fingerprinted("noext") == "noext"
