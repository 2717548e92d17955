"""The local run's embedded default: with no DATABASE_URL and nothing on :5432,
an embedded Postgres starts, migrates, and serves the app as sg_app."""
from __future__ import annotations

from web import create_app, local
from web.migrate import migrate


def test_embedded_postgres_when_nothing_answers(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(local, "_port_open", lambda host, port: False)
    monkeypatch.setattr(local, "DATA", tmp_path)
    dsn, server = local.database_url()
    try:
        assert server is not None and str(tmp_path) in dsn
        migrate(dsn, environ={})
        app = create_app({"TESTING": True, "DATABASE_URL": dsn})
        response = app.test_client().get("/healthz")
        app.extensions["sg_pool"].close()
        assert response.status_code == 200
    finally:
        server.cleanup()
