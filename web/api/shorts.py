"""/v1/shorts/generate, /v1/shorts/batch, /v1/jobs and /v1/batches: spend credits on
videos, follow their renders."""
from __future__ import annotations

from pathlib import Path
from uuid import UUID

from flask import current_app, g, jsonify, request
from psycopg.types.json import Jsonb

from worker.script import MAX_USER_SCRIPT
from worker.voices import VOICES

from .. import db, jobs
from ..errors import ApiError
from . import api, require_auth
from .auth import user_tx
from .validation import int_field, json_body, query_int, string_field

MAX_BATCH = 50


def _named(error: ApiError, prefix: str) -> ApiError:
    """The same refusal, its field named inside a list (`items[3].topic`)."""
    field = f"{prefix}{error.extra.get('field')}" if error.extra.get("field") else prefix.rstrip(".")
    return ApiError(error.status, f"{prefix}{error.detail}", error.headers, field=field)


def video_request(body: dict) -> dict:
    """One video asked for (platform, topic, duration, voice, script), validated; 422
    naming the field."""
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
    return {"platform": platform, "topic": topic, "duration": duration, "voice": voice, "script": script}


def job_options(video: dict) -> dict:
    """The options a job row keeps, as jobs.generate stores them."""
    options = {"duration_seconds": video["duration"]}
    options.update({name: video[name] for name in ("voice", "script") if video[name]})
    return options


@api.post("/shorts/generate")
@require_auth
def generate():
    video = video_request(json_body())
    created = jobs.generate(video["platform"], video["topic"], video["duration"], identity=g.identity,
                            voice=video["voice"], script=video["script"])
    response = jsonify(job_id=str(created["job_id"]), status="queued", credits_remaining=created["credits_remaining"])
    response.status_code = 202
    response.headers["Location"] = f"/v1/jobs/{created['job_id']}"
    return response


@api.post("/shorts/batch")
@require_auth
def create_batch():
    items = json_body().get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise ApiError(422, f"items: must be a list of 1 to {MAX_BATCH} videos", field="items")
    wanted = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(422, f"items[{index}]: must be an object", field=f"items[{index}]")
        try:
            video = video_request(item)
        except ApiError as error:
            raise _named(error, f"items[{index}].") from None
        wanted.append({"platform": video["platform"], "topic": video["topic"], "options": job_options(video)})
    [created] = db.call("select * from app.create_batch(%s)", (Jsonb(wanted),), identity=g.identity)
    response = jsonify(batch_id=str(created["batch_id"]), job_ids=[str(j) for j in created["job_ids"]],
                       status="queued", credits_remaining=created["credits_remaining"])
    response.status_code = 202
    response.headers["Location"] = f"/v1/batches/{created['batch_id']}"
    return response


def batch_json(batch_id: UUID, rows: list[dict]) -> dict:
    """A batch as the API shows it: each job, how many are in each state, and the
    progress of the whole (a finished job, failed or not, counts as done)."""
    counts = {status: 0 for status in ("queued", "processing", "completed", "failed")}
    for row in rows:
        counts[row["status"]] += 1
    finished = counts["completed"] + counts["failed"]
    if finished == len(rows):
        status = "completed" if counts["failed"] == 0 else ("failed" if counts["completed"] == 0
                                                              else "partially_failed")
    else:
        status = "queued" if counts["queued"] == len(rows) else "processing"
    done = sum(100 if row["status"] in ("completed", "failed") else row["progress_percent"] for row in rows)
    return {"batch_id": str(batch_id), "status": status, "progress": done // len(rows), "total": len(rows),
            "counts": counts, "created_at": rows[0]["batch_created_at"].isoformat(),
            "items": [jobs.job_json(row) for row in rows]}


@api.get("/batches/<batch_id>")
@require_auth
def get_batch(batch_id: str):
    try:
        batch_uuid = UUID(batch_id)
    except ValueError:
        raise ApiError(404, "Batch not found.") from None
    with user_tx() as cur:
        cur.execute("select * from app.batch_jobs(%s)", (batch_uuid,))
        rows = cur.fetchall()
    if not rows:  # every video of it was deleted
        raise ApiError(404, "Batch not found.")
    return jsonify(batch_json(batch_uuid, rows))


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
