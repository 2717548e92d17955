"""The JSON API under /v1, for the SPA and API-key clients. Bearer auth only (no cookies),
so it is exempt from CSRF."""
from __future__ import annotations

from functools import wraps

from flask import Blueprint, g, request

from .. import identity
from ..errors import ApiError

api = Blueprint("api", __name__, url_prefix="/v1")


def require_auth(view):
    """Resolve the Authorization header into g.identity (checked again in the database
    by `user_tx`), or answer 401."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        g.identity = identity.from_authorization_header(request.headers.get("Authorization"))
        return view(*args, **kwargs)

    return wrapped


@api.before_request
def refuse_unknown_query_parameters():
    """A misspelt parameter (`limt=5`) is an error, not silently the default: the
    parameters each operation takes are the ones the OpenAPI document lists."""
    from ..openapi import query_parameters

    unknown = set(request.args) - query_parameters(request.url_rule.rule if request.url_rule else "",
                                                   request.method)
    if unknown:
        raise ApiError(422, f"{sorted(unknown)[0]}: unknown query parameter", field=sorted(unknown)[0])


def register(app) -> None:
    from . import account, auth, billing, branding, keys, shorts, user  # noqa: F401 - route modules attach to `api`
    from . import referrals, webhooks  # noqa: F401 - issue 20: referrals, webhooks to customers

    app.register_blueprint(api)
