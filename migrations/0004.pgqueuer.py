"""Install pgqueuer's tables with the library's own installer.

app.spend_credit_and_create_job inserts into `pgqueuer` directly, so the
pgqueuer version is pinned in setup.cfg: its table shape is part of our schema.
"""
from yoyo import step

from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment

__depends__ = {"0003.stripe_events"}

_queries = QueryBuilderEnvironment()

steps = [
    step(
        _queries.build_install_query(create_schema=False),
        _queries.build_uninstall_query(),
    )
]
