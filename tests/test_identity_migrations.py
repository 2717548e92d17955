"""The identity migrations (0020-0029) on a database that already has users: rows written
before them are carried over (refresh tokens into families, names made one line), and
each rolls back."""
from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from yoyo import read_migrations

from web.migrate import MIGRATIONS_DIR, ROLES_FILE, _owner_backend, _run_sql_file, migrate, rollback_all

from .conftest import PASSWORD_HASH, throwaway_database

FIRST_OF_OURS = "0020"


def _apply(dsn: str, *, before: str | None) -> None:
    """Apply the migrations whose ids sort before `before` (all of them when None)."""
    backend = _owner_backend(dsn)
    try:
        with backend.lock():
            pending = backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))
            backend.apply_migrations(pending.filter(lambda m: before is None or m.id < before))
    finally:
        backend.connection.close()


def test_existing_tokens_and_names_survive_the_identity_migrations():
    with throwaway_database("sg_idmig") as dsn:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
            _run_sql_file(admin, ROLES_FILE)
            _apply(dsn, before=FIRST_OF_OURS)
            user = admin.execute("insert into users (email, password_hash, full_name) values "
                                 "('old@example.com', %s, %s) returning id", (PASSWORD_HASH, "Old\r\nName")
                                 ).fetchone()["id"]
            family, other = (admin.execute("select gen_random_uuid() as id").fetchone()["id"] for _ in range(2))
            admin.execute("insert into refresh_tokens (user_id, family_id, token_hash, expires_at, revoked_at) values "
                          "(%(u)s, %(f)s, 'a', now() + interval '1 day', now()), "
                          "(%(u)s, %(f)s, 'b', now() + interval '1 day', null), "
                          "(%(u)s, %(o)s, 'c', now() + interval '1 day', now() - interval '1 hour')",
                          {"u": user, "f": family, "o": other})

            migrate(dsn, environ={})
            families = admin.execute("select id, user_id, revoked_at is not null as revoked from refresh_families "
                                     "order by revoked").fetchall()
            assert families == [{"id": family, "user_id": user, "revoked": False},
                                {"id": other, "user_id": user, "revoked": True}]
            assert admin.execute("select full_name from users where id = %s", (user,)).fetchone()["full_name"] \
                == "Old Name"

            rollback_all(dsn)
            migrate(dsn, environ={})
