"""What each plan sells (issue 17 item 6): the plans table says it, /v1/branding and the
Branding page store a Pro or Agency customer's logo and colours (and refuse hostile
uploads with a 422 that changes nothing), the claim hands them to the worker, and the
video carries them."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import psycopg
import pytest
from PIL import Image, ImageDraw
from psycopg.rows import dict_row

from web.migrate import migrate, rollback_all
from worker.branding import clean_logo

from .conftest import acting_as, api_signup, bearer, client_with_own_ip, set_tier, throwaway_database, unique_email
from .test_auth_ui import csrf_token, sign_up


# -- uploads --------------------------------------------------------------------------

def logo_png(size=(400, 160), **save) -> bytes:
    """A logo with structure (a ring, two bars), so a template match on a frame means something."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse([0.025 * w, 0.06 * h, 0.375 * w, 0.94 * h], fill=(230, 40, 60, 255))
    draw.ellipse([0.125 * w, 0.31 * h, 0.275 * w, 0.69 * h], fill=(255, 255, 255, 255))
    draw.rectangle([0.425 * w, 0.19 * h, 0.975 * w, 0.44 * h], fill=(30, 140, 240, 255))
    draw.rectangle([0.425 * w, 0.59 * h, 0.75 * w, 0.81 * h], fill=(250, 200, 20, 255))
    out = io.BytesIO()
    image.save(out, "PNG", **save)
    return out.getvalue()


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(logo_png())).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 20000) -> bytes:
    """A 1-bit greyscale PNG of side×side pixels: ~50 KB on disk, 400 megapixels
    (1.6 GB as RGBA) once decoded."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))


SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
       b'<script>alert(document.cookie)</script><circle cx="50" cy="50" r="40"/></svg>')
ZIP_TAIL = b"PK\x03\x04" + b"\x00" * 26 + b"evil.jsp" + b"<% Runtime.getRuntime().exec(request.getParameter(\"c\")); %>"

REFUSED = {
    "svg": (SVG, "logo.svg", "image/svg+xml", "PNG, JPEG or WebP"),
    "svg sent as png": (SVG, "logo.png", "image/png", "PNG, JPEG or WebP"),
    "png bomb": (png_bomb(), "bomb.png", "image/png", "4096×4096"),
    "png + zip polyglot": (logo_png() + ZIP_TAIL, "logo.png", "image/png", "extra data"),
    "jpeg + html polyglot": (jpeg_bytes() + b"<html><script>alert(1)</script></html>", "logo.jpg", "image/jpeg",
                             "extra data"),
    "jpeg labelled png": (jpeg_bytes(), "logo.png", "image/png", "JPEG image but was sent as image/png"),
    "png labelled gif": (logo_png(), "logo.gif", "image/gif", "PNG image but was sent as image/gif"),
    "gif": (b"GIF89a" + b"\x01\x00\x01\x00\x00\x00\x00;", "logo.gif", "image/gif", "PNG, JPEG or WebP"),
    "truncated png": (logo_png()[:300], "logo.png", "image/png", "could not be read"),
    "empty": (b"", "logo.png", "image/png", "empty"),
    "tiny": (logo_png((8, 8)), "logo.png", "image/png", "at least 16×16"),
}


def put_branding(api, auth, logo: tuple[bytes, str, str] | None = None, **fields):
    data = dict(fields)
    if logo is not None:
        content, name, content_type = logo
        data["logo"] = (io.BytesIO(content), name, content_type)
    return api.put("/v1/branding", data=data, headers=auth, content_type="multipart/form-data")


def user_on(api, connect, tier: str) -> dict:
    tokens = api_signup(api)
    set_tier(connect("postgres"), tokens["user"]["id"], tier)
    return {"id": tokens["user"]["id"], "auth": bearer(tokens["access_token"])}


def stored_brand(connect, user_id) -> dict | None:
    return connect("postgres").execute("select * from brands where user_id = %s", (user_id,)).fetchone()


# -- the plans table is the single source ----------------------------------------------

def test_each_plan_says_what_it_sells_and_lists_exactly_that(connect):
    plans = {row["tier"]: row["features"] for row in
             connect("sg_app").execute("select tier, features from plans").fetchall()}
    sold = {tier: (f["watermark"], f["closing_card"], f["branding"], f["white_label"], f["api_keys"])
            for tier, f in plans.items()}
    assert sold == {"free": (True, True, False, False, False), "starter": (False, False, False, False, False),
                    "pro": (False, False, True, False, True), "agency": (False, False, True, True, True)}
    text = {tier: " ".join(f["highlights"]).lower() for tier, f in plans.items()}
    assert "watermark and closing card" in text["free"]
    assert "no watermark, no closing card" in text["starter"] and "logo" not in text["starter"]
    assert "logo and brand colours" in text["pro"] and "white-label" not in text["pro"]
    assert "logo and brand colours" in text["agency"] and "white-label" in text["agency"]
    # nothing sold that no code delivers (team accounts are another issue)
    assert not any("team" in t for t in text.values())


def test_the_pricing_cards_read_the_plans_table(app, connect):
    page = app.test_client().get("/pricing").get_data(as_text=True)
    for row in connect("sg_app").execute("select features from plans").fetchall():
        for item in row["features"]["highlights"]:
            assert item in page.replace("&#39;", "'"), item


# -- the API ---------------------------------------------------------------------------

def test_a_pro_customer_stores_a_logo_and_colours(api, connect):
    pro = user_on(api, connect, "pro")
    before = api.get("/v1/branding", headers=pro["auth"]).get_json()
    assert before == {"available": True, "white_label": False, "has_logo": False, "logo_url": None,
                      "logo_bytes": None, "primary_colour": None, "accent_colour": None, "updated_at": None}
    response = put_branding(api, pro["auth"], (logo_png(), "logo.png", "image/png"),
                            primary_colour="#10785A", accent_colour="#ff7828")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["has_logo"] and body["primary_colour"] == "#10785a" and body["accent_colour"] == "#ff7828"
    logo = api.get("/v1/branding/logo", headers=pro["auth"])
    assert logo.status_code == 200 and logo.mimetype == "image/png"
    # what is stored is the cleaned re-encoding, never the upload itself
    assert logo.data == clean_logo(logo_png(), "image/png")
    assert Image.open(io.BytesIO(logo.data)).size == (400, 160)

    # colours change without sending the logo again; an empty colour means the default
    response = put_branding(api, pro["auth"], primary_colour="#000000", accent_colour="")
    assert response.status_code == 200
    assert response.get_json()["has_logo"] and response.get_json()["accent_colour"] is None
    # a JPEG is accepted and stored as PNG
    response = put_branding(api, pro["auth"], (jpeg_bytes(), "logo.jpg", "image/jpeg"))
    assert response.status_code == 200
    assert api.get("/v1/branding/logo", headers=pro["auth"]).data.startswith(b"\x89PNG")
    response = put_branding(api, pro["auth"], remove_logo="true", primary_colour="#000000")
    assert response.status_code == 200 and not response.get_json()["has_logo"]
    assert api.get("/v1/branding/logo", headers=pro["auth"]).status_code == 404

    assert api.delete("/v1/branding", headers=pro["auth"]).status_code == 204
    assert stored_brand(connect, pro["id"]) is None
    assert api.delete("/v1/branding", headers=pro["auth"]).status_code == 204


@pytest.mark.parametrize("case", REFUSED)
def test_hostile_or_wrong_logos_are_refused_with_a_clear_422_and_change_nothing(api, connect, case):
    pro = user_on(api, connect, "agency")
    assert put_branding(api, pro["auth"], (logo_png(), "logo.png", "image/png"), primary_colour="#112233"
                        ).status_code == 200
    before = stored_brand(connect, pro["id"])
    content, name, content_type, reason = REFUSED[case]
    response = put_branding(api, pro["auth"], (content, name, content_type), primary_colour="#445566")
    assert response.status_code == 422, (case, response.status_code, response.get_data()[:200])
    body = response.get_json()
    assert reason in body["detail"] and body["field"] == "logo", body
    assert stored_brand(connect, pro["id"]) == before


def test_what_hides_inside_an_accepted_image_never_reaches_the_video(api, connect):
    """A PNG whose text chunk carries a script is a valid image: it is accepted, and the
    stored logo is a fresh encoding without it."""
    image = Image.open(io.BytesIO(logo_png()))
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<script>alert(1)</script>")
    pro = user_on(api, connect, "pro")
    assert put_branding(api, pro["auth"], (logo_png(pnginfo=info), "logo.png", "image/png")).status_code == 200
    assert b"<script>" not in bytes(stored_brand(connect, pro["id"])["logo_png"])
    assert image.size == (400, 160)


def test_bad_fields_and_bodies_are_422(api, connect):
    pro = user_on(api, connect, "pro")
    for fields in ({"primary_colour": "red"}, {"accent_colour": "#12345"}, {"primary_colour": "#12\x0034"},
                   {"remove_logo": "maybe"}):
        response = put_branding(api, pro["auth"], **fields)
        assert response.status_code == 422 and response.get_json()["field"] in fields, (fields, response.get_json())
    response = put_branding(api, pro["auth"], (logo_png(), "logo.png", "image/png"), remove_logo="true")
    assert response.status_code == 422
    response = api.put("/v1/branding", json={"primary_colour": "#123456"}, headers=pro["auth"])
    assert response.status_code == 422 and "multipart/form-data" in response.get_json()["detail"]
    big = logo_png() + b"\x00" * (1024 * 1024)
    response = put_branding(api, pro["auth"], (big, "big.png", "image/png"))
    assert response.status_code == 413
    assert stored_brand(connect, pro["id"]) is None


@pytest.mark.parametrize("tier", ["free", "starter"])
def test_plans_without_branding_are_refused_with_403(api, connect, tier):
    user = user_on(api, connect, tier)
    response = put_branding(api, user["auth"], (logo_png(), "logo.png", "image/png"), primary_colour="#112233")
    assert response.status_code == 403
    assert "Pro and Agency" in response.get_json()["detail"] and response.get_json()["upgrade_url"] == "/pricing"
    # refused before the upload is even decoded: a bomb gets the same answer
    response = put_branding(api, user["auth"], (png_bomb(), "bomb.png", "image/png"))
    assert response.status_code == 403
    assert stored_brand(connect, user["id"]) is None
    assert api.get("/v1/branding", headers=user["auth"]).get_json()["available"] is False
    assert api.get("/v1/branding").status_code == 401


def test_the_database_refuses_what_the_web_would(connect, make_user):
    """app.save_brand decides on its own: a plan without branding, a bad colour, bytes that are not PNG."""
    app_conn = connect("sg_app")
    starter, pro = make_user(), make_user()
    admin = connect("postgres")
    set_tier(admin, pro, "pro")
    set_tier(admin, starter, "starter")
    png = clean_logo(logo_png())
    with pytest.raises(psycopg.Error) as refused, acting_as(app_conn, starter):
        app_conn.execute("select * from app.save_brand(%s, true, '#112233', null)", (png,))
    assert refused.value.sqlstate == "P0403"
    for logo, colour in ((png, "red"), (b"GIF89a-not-a-png", "#112233")):
        with pytest.raises(psycopg.Error) as refused, acting_as(app_conn, pro):
            app_conn.execute("select * from app.save_brand(%s, true, %s, null)", (logo, colour))
        assert refused.value.sqlstate == "P0422"
    # and the web role cannot write the table around the function
    with pytest.raises(psycopg.errors.InsufficientPrivilege), acting_as(app_conn, pro):
        app_conn.execute("insert into brands (user_id, primary_colour) values (%s, '#000000')", (pro,))


def test_a_brand_is_seen_by_its_owner_only(api, connect):
    owner, other = user_on(api, connect, "pro"), user_on(api, connect, "pro")
    assert put_branding(api, owner["auth"], (logo_png(), "logo.png", "image/png")).status_code == 200
    assert api.get("/v1/branding/logo", headers=other["auth"]).status_code == 404
    assert api.get("/v1/branding", headers=other["auth"]).get_json()["has_logo"] is False
    app_conn = connect("sg_app")
    with acting_as(app_conn, other["id"]):
        assert app_conn.execute("select count(*) as n from brands").fetchone()["n"] == 0
        # another user's DELETE removes nothing of the owner's
        app_conn.execute("select app.delete_brand()")
    assert stored_brand(connect, owner["id"]) is not None
    assert app_conn.execute("select count(*) as n from brands").fetchone()["n"] == 0  # no user set: nothing


# -- the claim hands the brand to the worker --------------------------------------------

def _claim(connect, user_id) -> dict:
    admin, worker = connect("postgres"), connect("sg_worker")
    with acting_as(admin, user_id):
        job = admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'coffee')").fetchone()
    return worker.execute("select * from app.claim_render(%s)", (job["job_id"],)).fetchone()


def test_the_claim_carries_what_the_jobs_plan_paid_for(api, connect):
    admin = connect("postgres")
    brands = {}
    for tier in ("free", "starter", "pro", "agency"):
        user = user_on(api, connect, tier)
        admin.execute("insert into brands (user_id, logo_png, primary_colour, accent_colour) values (%s, %s, "
                      "'#10785a', '#ff7828')", (user["id"], clean_logo(logo_png())))
        admin.execute("select app.grant_credits(%s, 5, 'admin_grant', %s)", (user["id"], f"brand-test:{user['id']}"))
        brands[tier] = _claim(connect, user["id"])
    shape = {tier: (c["watermark"], c["closing_card"], c["white_label"], c["logo_png"] is not None,
                    c["primary_colour"]) for tier, c in brands.items()}
    assert shape == {"free": (True, True, False, False, None), "starter": (False, False, False, False, None),
                     "pro": (False, False, False, True, "#10785a"), "agency": (False, False, True, True, "#10785a")}
    # a second claim (a redelivery) is the same claim function: new token, same brand
    again = connect("sg_worker").execute("select * from app.claim_render(%s)", (brands["pro"]["id"],)).fetchone()
    assert again["attempts"] == brands["pro"]["attempts"] + 1 and again["logo_png"] == brands["pro"]["logo_png"]


def test_the_worker_turns_the_claim_into_the_render_spec():
    from uuid import uuid4

    from worker.jobs import ClaimedJob
    from worker.main import render_spec

    logo = clean_logo(logo_png())
    base = dict(id=uuid4(), user_id=uuid4(), platform="tiktok", topic="t", options={}, tier="agency", attempts=1,
                width=2160, height=3840, watermark=False)
    spec = render_spec(ClaimedJob(**base, closing_card=False, white_label=True, logo_png=logo,
                                  primary_colour="#10785a", accent_colour=None))
    assert spec.white_label and not spec.has_closing_card and spec.brand.primary == (16, 120, 90)
    assert spec.brand.logo().size == (400, 160) and spec.brand.accent is None
    free = render_spec(ClaimedJob(**{**base, "width": 720, "height": 1280, "watermark": True}, closing_card=True))
    assert free.brand is None and free.has_closing_card and free.watermark and not free.white_label


# -- the page --------------------------------------------------------------------------

def _page_user(app, connect, tier: str):
    browser = client_with_own_ip(app)
    email = unique_email()
    assert sign_up(browser, email).status_code == 302
    user_id = connect("postgres").execute("select id from users where email = %s", (email,)).fetchone()["id"]
    set_tier(connect("postgres"), user_id, tier)
    return browser, user_id


def test_the_branding_page_for_plans_that_sell_it(app, connect):
    browser, user_id = _page_user(app, connect, "pro")
    assert 'href="/branding"' in browser.get("/dashboard").get_data(as_text=True)
    page = browser.get("/branding").get_data(as_text=True)
    assert 'id="branding-form"' in page and 'enctype="multipart/form-data"' in page and "No logo yet" in page
    response = browser.post("/branding", data={"csrf_token": csrf_token(page), "primary_colour": "#10785a",
                                               "accent_colour": "#ff7828",
                                               "logo": (io.BytesIO(logo_png()), "logo.png", "image/png")},
                            content_type="multipart/form-data")
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    page = browser.get("/branding").get_data(as_text=True)
    assert "Your branding is saved" in page and 'id="brand-logo"' in page and 'value="#10785a"' in page
    assert browser.get("/branding/logo.png").data == clean_logo(logo_png())
    # a hostile upload is a form error beside the field, and nothing changes
    before = stored_brand(connect, user_id)
    response = browser.post("/branding", data={"csrf_token": csrf_token(page), "primary_colour": "#000000",
                                               "accent_colour": "#000000",
                                               "logo": (io.BytesIO(SVG), "logo.svg", "image/svg+xml")},
                            content_type="multipart/form-data")
    assert response.status_code == 422
    assert 'class="field-error"' in response.get_data(as_text=True) and "SVG" in response.get_data(as_text=True)
    assert stored_brand(connect, user_id) == before
    # without the CSRF token nothing happens
    assert browser.post("/branding", data={"primary_colour": "#000000"}).status_code in (400, 422)
    assert stored_brand(connect, user_id) == before
    page = browser.get("/branding").get_data(as_text=True)
    assert browser.post("/branding/remove", data={"csrf_token": csrf_token(page)}).status_code == 302
    assert stored_brand(connect, user_id) is None


@pytest.mark.parametrize("tier", ["free", "starter"])
def test_other_plans_see_an_upgrade_hint_instead(app, connect, tier):
    browser, user_id = _page_user(app, connect, tier)
    assert 'href="/branding"' not in browser.get("/dashboard").get_data(as_text=True)
    page = browser.get("/branding").get_data(as_text=True)
    assert 'id="branding-upgrade"' in page and 'href="/pricing"' in page and 'id="branding-form"' not in page
    response = browser.post("/branding", data={"csrf_token": csrf_token(page), "primary_colour": "#10785a",
                                               "accent_colour": "#ff7828"})
    assert response.status_code == 403 and stored_brand(connect, user_id) is None


# -- the migration, on a database with customers -----------------------------------------

def test_the_branding_migration_on_a_populated_database():
    from yoyo import read_migrations

    from web.migrate import MIGRATIONS_DIR, ROLES_FILE, _owner_backend, _run_sql_file

    from .conftest import PASSWORD_HASH

    with throwaway_database("sg_brandmig") as dsn:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
            _run_sql_file(admin, ROLES_FILE)
            backend = _owner_backend(dsn)
            try:
                with backend.lock():
                    pending = backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))
                    backend.apply_migrations(pending.filter(lambda m: m.id < "0041"))
            finally:
                backend.connection.close()
            user = admin.execute("insert into users (email, password_hash) values ('old@example.com', %s) "
                                 "returning id", (PASSWORD_HASH,)).fetchone()["id"]
            old = {r["tier"]: r["features"] for r in admin.execute("select tier, features from plans")}

            migrate(dsn, environ={})
            new = {r["tier"]: r["features"] for r in admin.execute("select tier, features from plans")}
            assert new["pro"]["branding"] and new["agency"]["white_label"] and new["free"]["closing_card"]
            # every other feature is untouched
            for tier in old:
                assert {k: v for k, v in new[tier].items() if k in old[tier] and k != "highlights"} == \
                       {k: v for k, v in old[tier].items() if k != "highlights"}
            admin.execute("insert into brands (user_id, primary_colour) values (%s, '#123456')", (user,))
            with pytest.raises(psycopg.errors.CheckViolation):
                admin.execute("insert into brands (user_id, logo_png) values (%s, 'GIF89a')", (user,))

            rollback_all(dsn)
            migrate(dsn, environ={})
            assert {r["tier"]: r["features"] for r in admin.execute("select tier, features from plans")} == new


def test_rolling_back_the_branding_migration_restores_the_plans():
    """0041 alone, on the migrations before it: its rollback puts the plans back as they
    were and drops the brands table; applying it again gives the same plans."""
    from yoyo import read_migrations

    from web.migrate import MIGRATIONS_DIR, ROLES_FILE, _owner_backend, _run_sql_file

    def plans(admin):
        return {r["tier"]: r["features"] for r in admin.execute("select tier, features from plans")}

    with throwaway_database("sg_brandrb") as dsn:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
            _run_sql_file(admin, ROLES_FILE)
            backend = _owner_backend(dsn)
            try:
                with backend.lock():
                    migrations = read_migrations(str(MIGRATIONS_DIR))
                    backend.apply_migrations(backend.to_apply(migrations).filter(lambda m: m.id < "0041"))
                    before = plans(admin)
                    backend.apply_migrations(backend.to_apply(migrations).filter(lambda m: m.id.startswith("0041")))
                    after = plans(admin)
                    assert after["agency"]["white_label"] and after != before
                    backend.rollback_migrations(backend.to_rollback(migrations).filter(
                        lambda m: m.id.startswith("0041")))
                    assert plans(admin) == before
                    assert admin.execute("select to_regclass('public.brands') as t").fetchone()["t"] is None
                    backend.apply_migrations(backend.to_apply(migrations).filter(lambda m: m.id.startswith("0041")))
                    assert plans(admin) == after
            finally:
                backend.connection.close()


# -- end to end: upload, generate, the worker renders, the video carries it --------------

def _match(frame: np.ndarray, template: np.ndarray) -> float:
    """Best normalised cross-correlation of a grey template anywhere in a grey frame."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(frame, template.shape)
    t = (template - template.mean()) / (template.std() + 1e-6)
    w = windows - windows.mean(axis=(2, 3), keepdims=True)
    w = w / (windows.std(axis=(2, 3), keepdims=True) + 1e-6)
    return float((w * t).mean(axis=(2, 3)).max())


def test_an_agency_video_carries_the_uploaded_logo_and_never_our_name(api, connect, database_dsn, media_root,
                                                                     empty_queue):
    from worker.render import CLOSING_SECONDS, RenderSpec, closing_image, logo_box, render_short

    from .media import frame_array, metadata
    from .test_worker import generate, run_in_process

    agency = user_on(api, connect, "agency")
    assert put_branding(api, agency["auth"], (logo_png(), "logo.png", "image/png"), primary_colour="#10785a",
                        accent_colour="#ff7828").status_code == 200
    job_id = generate(api, agency["auth"], duration_seconds=15)
    run_in_process(database_dsn, media_root, render_short)
    job = api.get(f"/v1/jobs/{job_id}", headers=agency["auth"]).get_json()
    assert job["status"] == "completed", job
    path = media_root / f"{job_id}.mp4"
    spec = RenderSpec(2160, 3840, False)

    # the logo, found by template match in the top quarter of frames across the video
    scale = 8
    x0, y0, x1, y1 = logo_box(spec, "tiktok")
    logo = Image.open(io.BytesIO(clean_logo(logo_png()))).convert("RGBA")
    logo.thumbnail((x1 - x0, y1 - y0))
    backdrop = Image.new("RGBA", logo.size, (40, 40, 40, 255))
    backdrop.alpha_composite(logo)
    template = np.asarray(backdrop.convert("L").resize((logo.width // scale, logo.height // scale)), float)
    for second in (1, 7, 14.5):
        frame = Image.fromarray(frame_array(path, second, spec.width, spec.height)).convert("L")
        top = np.asarray(frame.resize((spec.width // scale, spec.height // scale)), float)[: spec.height // scale // 4]
        assert _match(top, template) > 0.8, second

    # white-label: no closing card (the last frame is not the card over the one before) and no name in the file
    length = 15
    before = frame_array(path, length - CLOSING_SECONDS - 0.15, spec.width, spec.height)
    base = Image.fromarray(before).convert("RGBA")
    base.alpha_composite(closing_image(spec))
    last = frame_array(path, length - 0.2, spec.width, spec.height).astype(int)
    assert float(np.abs(last - np.asarray(base.convert("RGB")).astype(int)).mean()) > 25
    data = path.read_bytes() + path.with_suffix(".jpg").read_bytes()
    assert b"story genius" not in data.lower() and "Story Genius" not in metadata(path)
    # nor in the name the download gets
    download = api.get(job["video_url"], headers=agency["auth"])
    assert download.status_code == 200
    disposition = download.headers.get("Content-Disposition", "").lower()
    assert "genius" not in disposition and "coffee" in disposition, disposition
