"""Postgres access for the web process.

Every query a request makes runs inside `tx(user_id)`: one transaction, as the
sg_app role (the pool connects as it), with `app.user_id` set transaction-locally
before anything else, so row-level security scopes every row to that user and a
pooled connection never carries one request's identity into the next.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator
from uuid import UUID

import psycopg
from flask import Flask, current_app, g
from psycopg import ClientCursor, Cursor
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from .errors import api_error_for

if TYPE_CHECKING:
    from .identity import Identity

_EXTENSION = "sg_pool"
# g's attribute holding the connection of a request-wide transaction (request_transaction)
_REQUEST_CONNECTION = "sg_request_connection"


class LazyPool:
    """Opens the pool on first use, so `flask migrate` (which creates the role the
    pool logs in as) and forking servers never hold connections they did not ask for."""

    def __init__(self, conninfo: str, max_size: int):
        self._conninfo = conninfo
        self._max_size = max_size
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def get(self) -> ConnectionPool:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ConnectionPool(
                        self._conninfo,
                        min_size=1,
                        max_size=self._max_size,
                        kwargs={"autocommit": True},
                        # no per-checkout liveness query: it would cost every request a round
                        # trip; a connection that broke is dropped when returned, and the
                        # request that met it answers 503 + Retry-After
                        timeout=5,
                        open=True,
                    )
        return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def init_app(app: Flask) -> None:
    """Attach a (lazily opened) pool for the sg_app role to the app."""
    app.extensions[_EXTENSION] = LazyPool(app.config["APP_DATABASE_URL"], app.config["DB_POOL_MAX"])


@contextmanager
def _refusals_as_api_errors() -> Iterator[None]:
    """The functions' deliberate refusals (out of credits, duplicate email, …) reach views
    as ApiError, after the rollback, so pages can show them on their forms."""
    try:
        yield
    except psycopg.Error as error:
        refusal = api_error_for(error)
        if refusal is not None:
            raise refusal from error
        raise


def _acting_as(identity: "Identity | None", user_id: UUID | str | None) -> tuple[str, tuple]:
    """The first statement of a request's transaction: the identity's database check, or
    setting `app.user_id` (empty for nobody). Its one row's user_id is the user made current."""
    if identity is not None:
        return identity.check()
    return "select set_config('app.user_id', %s, true) as user_id", (str(user_id) if user_id else "",)


def _note_user(row: dict) -> None:
    """Remember the current user for the request's log line."""
    if row["user_id"]:
        g.user_id = str(row["user_id"])


def call(sql: str, params: tuple = (), *, identity: "Identity | None" = None,
         user_id: UUID | str | None = None) -> list[dict]:
    """Runs one statement (a function call) for `identity`, `user_id` or nobody in one
    round trip; returns its rows.

    The identity check (or the setting of `app.user_id`) and the statement travel as one
    simple-protocol message, values bound client-side by psycopg, and Postgres runs such
    a message as one implicit transaction: the transaction-local user holds for the
    statement, a refusal by either rolls both back, and no BEGIN or COMMIT makes a trip
    of its own. For the busiest single-call paths (generate, the Stripe webhook); `tx` is
    for anything longer.
    """
    check_sql, check_params = _acting_as(identity, user_id)
    joined = g.get(_REQUEST_CONNECTION)
    if joined is not None:
        with _refusals_as_api_errors(), ClientCursor(joined, row_factory=dict_row) as cur:
            cur.execute(f"{check_sql}; {sql}", (*check_params, *params))
            _note_user(cur.fetchone())
            cur.nextset()
            return cur.fetchall()
    pool: ConnectionPool = current_app.extensions[_EXTENSION].get()
    with _refusals_as_api_errors(), pool.connection() as conn, ClientCursor(conn, row_factory=dict_row) as cur:
        cur.execute(f"{check_sql}; {sql}", (*check_params, *params))
        _note_user(cur.fetchone())
        cur.nextset()
        return cur.fetchall()


def call_for_nobody(sql: str, params: tuple = ()) -> list[dict]:
    """Runs one statement that acts for no user (a SECURITY DEFINER function that takes
    its subject as arguments) in its own implicit transaction; returns its rows. Bound
    server-side, so Postgres plans it once per connection: for calls made on every
    request (the rate-limit count)."""
    pool: ConnectionPool = current_app.extensions[_EXTENSION].get()
    with _refusals_as_api_errors(), pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params, prepare=True)
        return cur.fetchall()


@contextmanager
def tx(user_id: UUID | str | None = None, *, identity: "Identity | None" = None) -> Iterator[Cursor]:
    """One transaction acting for `user_id` (or for nobody); yields a dict-row cursor.

    With `identity` (a bearer token or API key), its database check runs first and
    makes its user current instead. Commits when the block ends normally, rolls back
    when it raises. Inside a request_transaction it is part of that transaction, which
    commits or rolls back as a whole.
    """
    joined = g.get(_REQUEST_CONNECTION)
    if joined is not None:
        with _refusals_as_api_errors(), joined.cursor(row_factory=dict_row) as cur:
            cur.execute(*_acting_as(identity, user_id))
            _note_user(cur.fetchone())
            yield cur
        return
    pool: ConnectionPool = current_app.extensions[_EXTENSION].get()
    with _refusals_as_api_errors(), pool.connection() as conn, conn.transaction(), \
            conn.cursor(row_factory=dict_row) as cur:
        cur.execute(*_acting_as(identity, user_id))
        _note_user(cur.fetchone())
        yield cur


@contextmanager
def request_transaction(identity: "Identity") -> Iterator[Cursor]:
    """One transaction for a whole request, acting for `identity`: every `tx` and `call`
    the view makes inside the block joins it instead of committing on its own, so what the
    block writes beside the view's work (an idempotency key) commits with that work or not
    at all. Commits when the block ends normally; any refusal inside rolls all of it back
    (there are no savepoints: a view that caught a database error and carried on would
    find the transaction aborted, so only views that do not are run this way)."""
    pool: ConnectionPool = current_app.extensions[_EXTENSION].get()
    with _refusals_as_api_errors(), pool.connection() as conn, conn.transaction(), \
            conn.cursor(row_factory=dict_row) as cur:
        cur.execute(*_acting_as(identity, None))
        _note_user(cur.fetchone())
        setattr(g, _REQUEST_CONNECTION, conn)
        try:
            yield cur
        finally:
            g.pop(_REQUEST_CONNECTION, None)
