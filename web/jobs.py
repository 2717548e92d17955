"""Render jobs as users see them: shared by the JSON API and the dashboard."""
from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote
from uuid import UUID

from psycopg import Cursor
from psycopg.types.json import Jsonb

from . import db
from .errors import ApiError

if TYPE_CHECKING:
    from .identity import Identity

log = logging.getLogger(__name__)

PLATFORMS = ("youtube_shorts", "tiktok", "instagram_reels")
PLATFORM_NAMES = {"youtube_shorts": "YouTube Shorts", "tiktok": "TikTok", "instagram_reels": "Instagram Reels"}
DEFAULT_DURATION = 20
MIN_DURATION, MAX_DURATION = 15, 60

_COLUMNS = "id, platform, topic, title, options, status, progress_percent, output_url, error_message, note, " \
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
    cur.execute(f"select {_COLUMNS} from jobs where id = %s and deleted_at is null", (job_id,))
    row = cur.fetchone()
    if row is None:
        raise ApiError(404, "Job not found.")
    return row


def list_jobs(cur: Cursor, limit: int, before: UUID | None = None) -> list[dict]:
    """The current user's jobs, newest first; `before` is the id of the last job already
    seen (keyset pagination on (created_at, id))."""
    if before is None:
        cur.execute(f"select {_COLUMNS} from jobs where deleted_at is null "
                    "order by created_at desc, id desc limit %s", (limit,))
    else:
        # a deleted video still marks its place, so a page deleted from keeps its successor
        cur.execute("select created_at from jobs where id = %s", (before,))
        cursor_row = cur.fetchone()
        if cursor_row is None:
            raise ApiError(422, "before: no such job", field="before")
        cur.execute(f"select {_COLUMNS} from jobs where deleted_at is null and (created_at, id) < (%s, %s) "
                    "order by created_at desc, id desc limit %s", (cursor_row["created_at"], before, limit))
    return cur.fetchall()


def job_json(row: dict) -> dict:
    """A job as the API shows it."""
    return {
        "job_id": str(row["id"]),
        "status": row["status"],
        "progress": row["progress_percent"],
        "video_url": row["output_url"] if row["status"] == "completed" else None,
        "poster_url": f"/media/{row['id']}.jpg" if row["status"] == "completed" and row["output_url"] else None,
        "title": row.get("title"),
        "error": row["error_message"],
        "note": row.get("note"),
        "voice": (row["options"] or {}).get("voice"),
        "platform": row["platform"],
        "topic": row["topic"],
        "duration_seconds": (row["options"] or {}).get("duration_seconds", DEFAULT_DURATION),
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


def rename(job_id: UUID, title: str, *, identity: "Identity | None" = None, user_id: UUID | None = None) -> None:
    """Name one of the caller's videos (sql/41_videos.sql checks the length and the owner).
    One printable line: the title becomes the download's file name, where a bidi override
    could make `clip\u202egpj.mp4` read as `clip4pm.jpg`."""
    from .accounts import name_problem

    problem = name_problem(title)
    if problem:
        raise ApiError(422, f"title: {problem}", field="title")
    db.call("select * from app.rename_video(%s, %s)", (job_id, title), identity=identity, user_id=user_id)


def delete(job_id: UUID, media_root: Path, *, identity: "Identity | None" = None,
           user_id: UUID | None = None) -> None:
    """Delete one of the caller's finished videos and free its files; its credit stays spent.
    The row is marked first and committed, then the files go: a crash in between leaves
    an orphaned file, never a listed video without one."""
    db.call("select * from app.delete_video(%s)", (job_id,), identity=identity, user_id=user_id)
    for path in (media_root / f"{job_id}.mp4", media_root / f"{job_id}.jpg"):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            log.exception("could not remove %s of deleted video %s", path.name, job_id)


def download_name(row: dict) -> str:
    """The file name a download is saved under: the video's title (or topic) as given."""
    name = row.get("title") or row["topic"]
    # path separators and characters no file system takes
    name = " ".join(re.sub(r'[\\/:*?"<>|\x00-\x1f\x7f]', " ", name).split()).strip(" .") or "video"
    return f"{name[:100]}.mp4"


def ascii_slug(name: str) -> str:
    """`name` as a lower-case ASCII slug (accents folded: "Café in Tōkyō" → "cafe-in-tokyo"),
    for clients that ignore RFC 6266's filename*; "video" when nothing is left."""
    stem = name[:-4] if name.endswith(".mp4") else name
    folded = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")[:80].rstrip("-")
    return f"{slug or 'video'}.mp4"


def content_disposition(row: dict, attachment: bool) -> str:
    """RFC 6266: an ASCII `filename` for old clients and the UTF-8 `filename*` for the rest."""
    name = download_name(row)
    return (f'{"attachment" if attachment else "inline"}; filename="{ascii_slug(name)}"; '
            f"filename*=UTF-8''{quote(name, safe='')}")
