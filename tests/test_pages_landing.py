"""The landing page at / (issue 17 item 7): what the product does, a sample video made by
the real renderer at a worker's first start, the plans from the `plans` table, a sign-up
call to action, and a meta description on the public pages."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest

from web import create_app
from web.config import role_dsn
from worker import sample

from .test_auth_ui import sign_up


@pytest.fixture
def fresh_media_app(database_dsn, tmp_path):
    """An app whose media folder is empty: no worker has made the sample yet."""
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn,
                      "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app"), "MEDIA_ROOT": str(tmp_path)})
    yield app
    app.extensions["sg_pool"].close()


def test_visitors_get_the_landing_page_with_the_plans_of_the_table(app, connect):
    response = app.test_client().get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Type a topic. Get a narrated short video." in html
    assert html.count('href="/signup"') >= 2  # the call to action, at the top and at the end
    plans = connect("postgres").execute("select name, price_cents, features from plans order by sort_order").fetchall()
    assert len(plans) == 4
    cards = re.findall(r'<section class="card plan[^"]*" data-tier="(\w+)"', html)
    assert cards == ["free", "starter", "pro", "agency"]
    for plan in plans:
        assert f">{plan['name']}</h3>" in html
        assert f"${plan['price_cents'] // 100}<span" in html
        for highlight in plan["features"]["highlights"]:
            assert f"<li>{highlight}</li>" in html


def test_a_plan_changed_in_the_table_shows_at_once(app, connect):
    admin = connect("postgres")
    old = admin.execute("select features from plans where tier = 'starter'").fetchone()["features"]
    changed = {**old, "highlights": [*old["highlights"], "A line added by the test"]}
    admin.execute("update plans set features = %s where tier = 'starter'", (json.dumps(changed),))
    try:
        assert "<li>A line added by the test</li>" in app.test_client().get("/").get_data(as_text=True)
    finally:
        admin.execute("update plans set features = %s where tier = 'starter'", (json.dumps(old),))


def test_signed_in_users_go_to_their_dashboard(app):
    client = app.test_client()
    sign_up(client)
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"


@pytest.mark.parametrize("path", ["/", "/pricing", "/login", "/signup", "/docs"])
def test_public_pages_have_a_meta_description(app, path):
    html = app.test_client().get(path).get_data(as_text=True)
    match = re.search(r'<meta name="description" content="([^"]{50,200})">', html)
    assert match, path


def test_before_the_sample_exists_the_page_says_so(fresh_media_app):
    client = fresh_media_app.test_client()
    html = client.get("/").get_data(as_text=True)
    assert 'id="sample-pending"' in html and "<video" not in html
    assert client.get("/media/sample.mp4").status_code == 404
    assert client.get("/media/sample.jpg").status_code == 404


def probe(path: Path) -> str:
    """ffmpeg's description of a media file's streams."""
    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                            capture_output=True, text=True)
    return result.stderr


def test_the_real_renderer_makes_the_sample_once_and_the_page_plays_it(fresh_media_app, tmp_path):
    media_root = Path(fresh_media_app.config["MEDIA_ROOT"])
    assert sample.ensure_sample(media_root, tmp_path / "cache") is True
    assert sample.ensure_sample(media_root, tmp_path / "cache") is False  # made once, then kept
    streams = probe(sample.sample_video(media_root))
    assert "Video: h264" in streams and "720x1280" in streams and "Audio: aac" in streams
    client = fresh_media_app.test_client()
    html = client.get("/").get_data(as_text=True)
    assert '<video controls playsinline preload="none" poster="/media/sample.jpg"' in html
    assert 'src="/media/sample.mp4"' in html and "sample-pending" not in html
    video = client.get("/media/sample.mp4", headers={"Range": "bytes=0-99"})
    assert video.status_code == 206 and video.mimetype == "video/mp4" and len(video.data) == 100
    poster = client.get("/media/sample.jpg")
    assert poster.status_code == 200 and poster.data[:3] == b"\xff\xd8\xff"
    assert not list(sample.sample_dir(media_root).glob("render-*"))  # no scratch left behind


def test_a_killed_renders_scratch_is_cleared_and_the_sample_made(tmp_path):
    media_root = tmp_path / "media"
    leftover = sample.sample_dir(media_root) / "render-killed"
    leftover.mkdir(parents=True)
    made = []

    def fake_renderer(topic, platform, seconds, spec, output, **kwargs):
        made.append((topic, platform, seconds, spec.width, spec.height, spec.watermark, spec.has_closing_card))
        output.write_bytes(b"mp4")
        output.with_suffix(".jpg").write_bytes(b"jpg")

    assert sample.ensure_sample(media_root, renderer=fake_renderer) is True
    assert not leftover.exists()
    assert made == [(sample.SAMPLE_TOPIC, "tiktok", 20, 720, 1280, False, False)]
    assert sample.sample_ready(media_root)
