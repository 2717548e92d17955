"""The app as production builds it, plus the bare endpoint the benchmarks compare against."""
from __future__ import annotations

from flask import jsonify

from web import create_app


def create_bench_app():
    app = create_app()

    @app.get("/_bench/select1")
    def select1():
        """The floor: one pooled connection, one SELECT 1, no transaction, no identity."""
        with app.extensions["sg_pool"].get().connection() as conn:
            conn.execute("select 1").fetchone()
        return jsonify(ok=1)

    return app
