"""Story Genius web process: a thin HTTP layer over the SQL functions in sql/."""
from __future__ import annotations

from flask import Flask, jsonify

from . import config, db, errors, migrate


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment, with `test_config` overriding it."""
    app = Flask(__name__, template_folder="../templates")
    app.config.update(config.from_env())
    if test_config:
        app.config.update(test_config)

    db.init_app(app)
    errors.init_app(app)
    migrate.init_app(app)

    @app.get("/healthz")
    def healthz():
        """Liveness + database reachability, for load balancers."""
        with db.tx() as cur:
            cur.execute("select 1 as ok")
            cur.fetchone()
        return jsonify(status="ok", database="ok")

    return app
