"""/v1/shorts/generate and /v1/jobs: spend a credit on a video, follow its render."""
from __future__ import annotations

from pathlib import Path
from uuid import UUID

from flask import current_app, g, jsonify, request

from worker.script import MAX_USER_SCRIPT
from worker.voices import VOICES

from .. import jobs
from ..errors import ApiError
from . import api, require_auth
from .auth import user_tx
from .validation import int_field, json_body, query_int, string_field


@api.post("/shorts/generate")
@require_auth
def generate():
    body = json_body()
    platform = string_field(body, "platform", max_length=50)
    if platform not in jobs.PLATFORMS:
        raise ApiError(422, f"platform: must be one of {', '.join(jobs.PLATFORMS)}", field="platform")
    topic = jobs.clean_topic(string_field(body, "topic", max_length=1000))
    if not 3 <= len(topic) <= 200:
        raise ApiError(422, "topic: must be 3 to 200 characters", field="topic")
    duration = int_field(body, "duration_seconds", default=jobs.DEFAULT_DURATION,
                         minimum=jobs.MIN_DURATION, maximum=jobs.MAX_DURATION)
    voice = string_field(body, "voice", required=False, max_length=100)
    if voice is not None and voice not in VOICES:
        raise ApiError(422, f"voice: must be one of {', '.join(VOICES)}", field="voice")
    script = string_field(body, "script", required=False, min_length=1, max_length=MAX_USER_SCRIPT, strip=True)
    if script is not None and not any(ch.isalnum() for ch in script):
        raise ApiError(422, "script: must contain words to narrate", field="script")
    created = jobs.generate(platform, topic, duration, identity=g.identity, voice=voice, script=script)
    response = jsonify(job_id=str(created["job_id"]), status="queued", credits_remaining=created["credits_remaining"])
    response.status_code = 202
    response.headers["Location"] = f"/v1/jobs/{created['job_id']}"
    return response


@api.get("/jobs/<job_id>")
@require_auth
def get_job(job_id: str):
    job_uuid = jobs.parse_job_id(job_id)
    with user_tx() as cur:
        row = jobs.get_job(cur, job_uuid)
    return jsonify(jobs.job_json(row))


@api.get("/jobs")
@require_auth
def list_jobs():
    limit = query_int("limit", default=20, minimum=1, maximum=100)
    before_text = request.args.get("before")
    before = None
    if before_text is not None:
        try:
            before = UUID(before_text)
        except ValueError:
            raise ApiError(422, "before: must be a job id", field="before") from None
    with user_tx() as cur:
        rows = jobs.list_jobs(cur, limit, before)
    next_before = str(rows[-1]["id"]) if len(rows) == limit else None
    return jsonify(jobs=[jobs.job_json(row) for row in rows], next_before=next_before)


@api.patch("/jobs/<job_id>")
@require_auth
def rename_job(job_id: str):
    """Name a video; the title replaces the topic in lists and download names."""
    job_uuid = jobs.parse_job_id(job_id)
    body = json_body()
    title = string_field(body, "title", min_length=1, max_length=200, strip=True)
    jobs.rename(job_uuid, title, identity=g.identity)
    with user_tx() as cur:
        row = jobs.get_job(cur, job_uuid)
    return jsonify(jobs.job_json(row))


@api.delete("/jobs/<job_id>")
@require_auth
def delete_job(job_id: str):
    """Delete a finished video and its files; the credit it cost stays spent."""
    jobs.delete(jobs.parse_job_id(job_id), Path(current_app.config["MEDIA_ROOT"]), identity=g.identity)
    return "", 204
