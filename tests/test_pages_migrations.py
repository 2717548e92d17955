"""The video-list migrations (0050-0059) on a database that already has videos: existing
jobs keep everything and become nameable and deletable, the live-videos index is built
without blocking, and both roll back."""
from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from yoyo import read_migrations

from web.migrate import MIGRATIONS_DIR, ROLES_FILE, _owner_backend, _run_sql_file, migrate, rollback_all

from .conftest import PASSWORD_HASH, throwaway_database
from .test_identity_migrations import _apply

FIRST_OF_OURS = "0050"


def test_existing_videos_survive_and_become_nameable():
    with throwaway_database("sg_vidmig") as dsn:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
            _run_sql_file(admin, ROLES_FILE)
            _apply(dsn, before=FIRST_OF_OURS)
            user = admin.execute("insert into users (email, password_hash) values ('old@example.com', %s) "
                                 "returning id", (PASSWORD_HASH,)).fetchone()["id"]
            jobs = [admin.execute("insert into jobs (user_id, platform, topic, status, output_url, tier_at_creation) "
                                  "values (%s, 'tiktok', %s, 'completed', '/media/x.mp4', 'free') returning id",
                                  (user, f"old topic {n}")).fetchone()["id"] for n in range(3)]

            migrate(dsn, environ={})
            rows = admin.execute("select id, topic, title, deleted_at, output_url from jobs order by topic").fetchall()
            assert [(r["id"], r["title"], r["deleted_at"], r["output_url"]) for r in rows] == \
                [(job, None, None, "/media/x.mp4") for job in jobs]
            constraint = admin.execute("select convalidated from pg_constraint where conname = 'jobs_title_length'"
                                       ).fetchone()
            assert constraint == {"convalidated": True}
            index = admin.execute("select indisvalid from pg_index where indexrelid = "
                                  "'jobs_user_live_created_idx'::regclass").fetchone()
            assert index == {"indisvalid": True}

            with admin.transaction():
                admin.execute("select set_config('app.user_id', %s, true)", (str(user),))
                assert admin.execute("select * from app.rename_video(%s, 'Named')", (jobs[0],)).fetchone() == \
                    {"id": jobs[0], "title": "Named"}
                assert admin.execute("select * from app.delete_video(%s)", (jobs[1],)).fetchone() == \
                    {"id": jobs[1], "had_video": True}

            _roll_back_ours(dsn)
            # the jobs are all still there, without the two columns and the index
            assert admin.execute("select count(*) as n from jobs").fetchone()["n"] == 3
            assert admin.execute("select count(*) as n from information_schema.columns where table_name = 'jobs' "
                                 "and column_name in ('title', 'deleted_at')").fetchone()["n"] == 0
            assert admin.execute("select to_regclass('jobs_user_live_created_idx') as i").fetchone()["i"] is None
            migrate(dsn, environ={})
            assert admin.execute("select count(*) as n from jobs where title is null and deleted_at is null"
                                 ).fetchone()["n"] == 3
            rollback_all(dsn)


def _roll_back_ours(dsn: str) -> None:
    """Roll back the migrations from 0050 on, newest first."""
    backend = _owner_backend(dsn)
    try:
        with backend.lock():
            applied = backend.to_rollback(read_migrations(str(MIGRATIONS_DIR)))
            backend.rollback_migrations(applied.filter(lambda m: m.id >= FIRST_OF_OURS))
    finally:
        backend.connection.close()
