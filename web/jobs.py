"""Render jobs as users see them: shared by the JSON API and the dashboard."""
from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from psycopg import Cursor
from psycopg.types.json import Jsonb

from . import db
from .errors import ApiError

if TYPE_CHECKING:
    from .identity import Identity

PLATFORMS = ("youtube_shorts", "tiktok", "instagram_reels")
PLATFORM_NAMES = {"youtube_shorts": "YouTube Shorts", "tiktok": "TikTok", "instagram_reels": "Instagram Reels"}
DEFAULT_DURATION = 20
MIN_DURATION, MAX_DURATION = 15, 60

_COLUMNS = "id, platform, topic, options, status, progress_percent, output_url, error_message, note, " \
           "created_at, started_at, finished_at"


def clean_topic(topic: str) -> str:
    """Whitespace (newlines, tabs, runs of spaces) folded to single spaces."""
    return " ".join(topic.split())


def generate(platform: str, topic: str, duration: int, *, identity: "Identity | None" = None,
             user_id: UUID | None = None, voice: str | None = None, script: str | None = None) -> dict:
    """Spend one credit on a new render job for the caller: one SQL call (credit, job,
    ledger, queue entry) in one round trip. Its row: job_id, credits_remaining.
    `voice` and `script` (already validated) ride in the job's options."""
    options = {"duration_seconds": duration}
    options.update({k: v for k, v in (("voice", voice), ("script", script)) if v})
    [created] = db.call("select * from app.spend_credit_and_create_job(%s, %s, %s)",
                        (platform, topic, Jsonb(options)), identity=identity, user_id=user_id)
    return created


def parse_job_id(job_id: str) -> UUID:
    """A job id from a URL; a malformed one is simply a job that does not exist (404)."""
    try:
        return UUID(job_id)
    except ValueError:
        raise ApiError(404, "Job not found.") from None


def get_job(cur: Cursor, job_id: UUID) -> dict:
    """The current user's job; 404 for anyone else's (row-level security hides it)."""
    cur.execute(f"select {_COLUMNS} from jobs where id = %s", (job_id,))
    row = cur.fetchone()
    if row is None:
        raise ApiError(404, "Job not found.")
    return row


def list_jobs(cur: Cursor, limit: int, before: UUID | None = None) -> list[dict]:
    """The current user's jobs, newest first; `before` is the id of the last job already
    seen (keyset pagination on (created_at, id))."""
    if before is None:
        cur.execute(f"select {_COLUMNS} from jobs order by created_at desc, id desc limit %s", (limit,))
    else:
        cur.execute("select created_at from jobs where id = %s", (before,))
        cursor_row = cur.fetchone()
        if cursor_row is None:
            raise ApiError(422, "before: no such job", field="before")
        cur.execute(f"select {_COLUMNS} from jobs where (created_at, id) < (%s, %s) "
                    "order by created_at desc, id desc limit %s", (cursor_row["created_at"], before, limit))
    return cur.fetchall()


def job_json(row: dict) -> dict:
    """A job as the API shows it."""
    return {
        "job_id": str(row["id"]),
        "status": row["status"],
        "progress": row["progress_percent"],
        "video_url": row["output_url"] if row["status"] == "completed" else None,
        "error": row["error_message"],
        "note": row.get("note"),
        "voice": (row["options"] or {}).get("voice"),
        "platform": row["platform"],
        "topic": row["topic"],
        "duration_seconds": (row["options"] or {}).get("duration_seconds", DEFAULT_DURATION),
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }
