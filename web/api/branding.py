"""/v1/branding: a Pro or Agency customer's logo and colours, drawn on every video.

The logo is checked and re-encoded by worker/branding.py `clean_logo` (PNG, JPEG or WebP
by their bytes; byte and pixel limits before decoding; no trailing data; a fresh PNG
out) before the database sees it, so a refused upload is a 422 naming what is wrong and
changes nothing. Whether the plan sells branding is the database's call
(app.save_brand), asked before the upload is decoded so nobody spends our CPU on a
logo their plan cannot use.
"""
from __future__ import annotations

from flask import Response, jsonify, request

from worker.branding import LogoRejected, clean_logo

from ..errors import ApiError
from . import api, require_auth
from .auth import user_tx
from .validation import is_safe_text

COLOUR_FIELDS = ("primary_colour", "accent_colour")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
BRAND_COLUMNS = ("logo_png is not null as has_logo, length(logo_png) as logo_bytes, primary_colour, "
                 "accent_colour, updated_at")


def brand_json(row: dict | None, available: bool, white_label: bool) -> dict:
    row = row or {}
    return {"available": available, "white_label": white_label, "has_logo": bool(row.get("has_logo")),
            "logo_url": "/v1/branding/logo" if row.get("has_logo") else None,
            "logo_bytes": row.get("logo_bytes") if row.get("has_logo") else None,
            "primary_colour": row.get("primary_colour"), "accent_colour": row.get("accent_colour"),
            "updated_at": row["updated_at"].isoformat() if row.get("updated_at") else None}


def read_brand(cur) -> dict:
    """The current user's branding and what their plan sells, as the API shows it."""
    cur.execute(f"select {BRAND_COLUMNS} from brands")
    row = cur.fetchone()
    cur.execute("select app.plan_has_feature('branding') as branding, app.plan_has_feature('white_label') as wl")
    plan = cur.fetchone()
    return brand_json(row, plan["branding"], plan["wl"])


def colour_value(value: str | None, name: str) -> str | None:
    """'#rrggbb' (lower-cased) or None for an empty field; 422 otherwise."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if not is_safe_text(value) or len(value) != 7 or value[0] != "#" \
            or any(c not in "0123456789abcdefABCDEF" for c in value[1:]):
        raise ApiError(422, f"{name}: must be a colour like #1e90ff", field=name)
    return value.lower()


def save_brand(cur_factory, upload, declared_type: str | None, colours: dict, remove_logo: bool) -> dict:
    """Check the plan, clean the logo (if one was sent), store it all; the stored brand.
    `cur_factory` opens the caller's transaction (the API's or the page's identity)."""
    values = {name: colour_value(colours.get(name), name) for name in COLOUR_FIELDS}
    with cur_factory() as cur:
        cur.execute("select app.plan_has_feature('branding') as allowed")
        if not cur.fetchone()["allowed"]:
            raise ApiError(403, "Custom branding is available on the Pro and Agency plans. Upgrade at /pricing.",
                           upgrade_url="/pricing")
    logo = None
    if upload is not None:
        try:
            logo = clean_logo(upload, declared_type)
        except LogoRejected as error:
            raise ApiError(422, str(error), field="logo") from None
    with cur_factory() as cur:
        cur.execute("select * from app.save_brand(%s, %s, %s, %s)",
                    (logo, not remove_logo, values["primary_colour"], values["accent_colour"]))
        cur.execute(f"select {BRAND_COLUMNS} from brands")
        row = cur.fetchone()
        cur.execute("select app.plan_has_feature('white_label') as wl")
        white_label = cur.fetchone()["wl"]
    return brand_json(row, True, white_label)


def read_upload(field: str = "logo") -> tuple[bytes | None, str | None]:
    """The uploaded file's bytes and declared type; (None, None) when none was sent. A
    file input left empty (no name, no bytes) counts as none."""
    upload = request.files.get(field)
    if upload is None:
        return None, None
    data = upload.read()
    if not data and not upload.filename:
        return None, None
    return data, upload.mimetype or None


@api.get("/branding")
@require_auth
def get_branding():
    with user_tx() as cur:
        return jsonify(read_brand(cur))


@api.put("/branding")
@require_auth
def put_branding():
    if request.mimetype not in FORM_TYPES:
        raise ApiError(422, "Send the logo and colours as multipart/form-data.")
    if not {"logo", "remove_logo", *COLOUR_FIELDS} & {*request.form, *request.files}:
        raise ApiError(422, "Send a logo, primary_colour, accent_colour or remove_logo.")
    data, declared = read_upload()
    remove = (request.form.get("remove_logo") or "false").strip().lower()
    if remove not in ("true", "false"):
        raise ApiError(422, "remove_logo: must be true or false", field="remove_logo")
    if remove == "true" and data is not None:
        raise ApiError(422, "remove_logo: send a new logo or remove the old one, not both", field="remove_logo")
    return jsonify(save_brand(user_tx, data, declared, {k: request.form.get(k) for k in COLOUR_FIELDS},
                              remove == "true"))


@api.delete("/branding")
@require_auth
def delete_branding():
    with user_tx() as cur:
        cur.execute("select app.delete_brand()")
    return "", 204


@api.get("/branding/logo")
@require_auth
def get_logo():
    with user_tx() as cur:
        cur.execute("select logo_png from brands where logo_png is not null")
        row = cur.fetchone()
    if row is None:
        raise ApiError(404, "No logo stored.")
    return Response(bytes(row["logo_png"]), mimetype="image/png",
                    headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"})

