"""Finished videos, served only to their owner (bearer token, API key or browser session)."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, request, send_file
from flask_login import current_user

from worker import sample

from . import db, identity, jobs
from .errors import ApiError

media = Blueprint("media", __name__)


def _owner_tx():
    """A transaction for whoever asks: bearer credentials if sent, else the browser session."""
    if request.headers.get("Authorization"):
        return db.tx(identity=identity.from_authorization_header(request.headers["Authorization"]))
    if current_user.is_authenticated:
        return db.tx(current_user.id)
    raise identity.unauthorized("Sign in to watch this video.")


def _sample_file(path: Path, mimetype: str):
    """The landing page's sample (worker/sample.py), public; 404 until a worker made it."""
    if not path.is_file():
        raise ApiError(404, "The sample video is not ready yet.")
    response = send_file(path, mimetype=mimetype, conditional=True, max_age=3600)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@media.get("/media/sample.mp4")
def sample_video():
    return _sample_file(sample.sample_video(Path(current_app.config["MEDIA_ROOT"])), "video/mp4")


@media.get("/media/sample.jpg")
def sample_poster():
    return _sample_file(sample.sample_poster(Path(current_app.config["MEDIA_ROOT"])), "image/jpeg")


def _owned_file(job_id: str, suffix: str) -> tuple[dict, Path]:
    """The caller's finished job and its file with `suffix`; 404 for anyone else's."""
    job_uuid = jobs.parse_job_id(job_id)
    with _owner_tx() as cur:
        row = jobs.get_job(cur, job_uuid)  # 404 unless it is the caller's own live job
    if row["status"] != "completed":
        raise ApiError(404, "This video is not ready yet.")
    # the name comes from the UUID, never from the request path
    path = Path(current_app.config["MEDIA_ROOT"]) / f"{job_uuid}{suffix}"
    if not path.is_file():
        raise ApiError(404, "Video file not found.")
    return row, path


@media.get("/media/<job_id>.mp4")
def video(job_id: str):
    """The video, played inline; `?download=1` saves it under its title (RFC 6266)."""
    row, path = _owned_file(job_id, ".mp4")
    response = send_file(path, mimetype="video/mp4", conditional=True, max_age=3600)
    response.headers["Content-Disposition"] = jobs.content_disposition(row, attachment="download" in request.args)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


@media.get("/media/<job_id>.jpg")
def poster(job_id: str):
    """The frame the worker took from the finished video, for the list's thumbnails."""
    _, path = _owned_file(job_id, ".jpg")
    response = send_file(path, mimetype="image/jpeg", conditional=True, max_age=3600)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response
