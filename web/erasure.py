"""Deleting an account and exporting its data (GDPR Art. 17 and 20), for the API and the pages.

Deletion runs in steps, each safe to repeat: the password (and the second factor, when
two-factor sign-in is on) is checked; the Stripe subscription is canceled at once and the
Stripe customer's email, name, phone and description are cleared (a failure here is a 503
and nothing of ours has changed); then one database call erases the account
(app.erase_my_account, sql/55_account_erasure.sql), after which the video files and
posters are deleted. The ledger and usage rows stay under the account's id, which is a
pseudonym from then on, so the books still add up.
"""
from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from uuid import UUID

from flask import current_app
from psycopg import Cursor

from . import billing, passwords, two_factor
from .errors import ApiError

log = logging.getLogger(__name__)

TransactionOpener = Callable[[], AbstractContextManager[Cursor]]
CODE_REQUIRED = "code: two-factor sign-in is on: enter a code from your authenticator app"


@dataclass(frozen=True)
class _Confirmed:
    """What the erasure needs once the password (and second factor) checked out."""
    user_id: UUID
    customer_id: str | None
    totp_step: int | None
    recovery_hash: bytes | None


def _confirm(open_tx: TransactionOpener, password: str, code: str | None) -> _Confirmed:
    """403 for a wrong password or code, 422 for a missing code; changes nothing."""
    with open_tx() as cur:
        cur.execute("select app.current_password_hash() as hash, app.current_user_id() as user_id")
        row = cur.fetchone()
        if not passwords.verify_password(row["hash"], password):
            raise ApiError(403, "password is not correct.", field="password")
        cur.execute("select * from app.my_two_factor()")
        second = cur.fetchone()
        cur.execute("select stripe_customer_id from subscriptions")
        customer = cur.fetchone()["stripe_customer_id"]
    proof = two_factor.Factor()
    if second is not None and second["enabled"]:
        if not code:
            raise ApiError(422, CODE_REQUIRED, field="code")
        proof = two_factor.factor(code, second["secret"], second["last_step"])
        with open_tx() as cur:  # a recovery code is known to the database only
            cur.execute("select app.second_factor_would_pass(%s, %s) as good", (proof.totp_step, proof.recovery_hash))
            good = cur.fetchone()["good"]
        if not good:
            raise ApiError(403, f"code: {two_factor.WRONG_CODE}", field="code")
    return _Confirmed(row["user_id"], customer, proof.totp_step, proof.recovery_hash)


def _end_billing(user_id: UUID, customer_id: str | None) -> None:
    """Cancel every live subscription of the customer at once (no proration, no final
    invoice: the user is leaving) and clear what Stripe holds that names the person.
    Stripe keeps its invoices, as the law requires of it."""
    if not customer_id:
        return
    stripe_api = billing.client().v1
    with billing.stripe_errors():
        listed = stripe_api.subscriptions.list(params={"customer": customer_id, "status": "all", "limit": 100})
        for subscription in listed.auto_paging_iter():
            if subscription.status in billing.LIVE_STATUSES:
                stripe_api.subscriptions.cancel(
                    subscription.id, params={"cancellation_details": {"comment": "account deleted"}},
                    options={"idempotency_key": f"erase-{subscription.id}"})
        stripe_api.customers.update(customer_id, params={"email": "", "name": "", "phone": "", "description": ""},
                                    options={"idempotency_key": f"erase-customer-{user_id}"})


def remove_job_media(root: Path, job_ids) -> int:
    """Delete each job's video and poster (and anything else named after the job) from the
    media directory `root`; how many files went. A file already gone is not an error. The
    names come from UUIDs, never from anything a user typed. Used by the web process and by
    the worker's `erase_media` entries."""
    removed = 0
    for job_id in job_ids:
        for path in root.glob(f"{UUID(str(job_id))}.*"):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as error:
                log.error("account erasure: could not delete %s: %s", path, error)
    return removed


def delete_media(job_ids: list[UUID]) -> int:
    """remove_job_media in this app's MEDIA_ROOT."""
    return remove_job_media(Path(current_app.config["MEDIA_ROOT"]), job_ids)


def delete_account(open_tx: TransactionOpener, password: str, code: str | None = None) -> UUID:
    """Delete the signed-in user's account (see the module docstring); its id."""
    confirmed = _confirm(open_tx, password, code)
    _end_billing(confirmed.user_id, confirmed.customer_id)
    with open_tx() as cur:
        cur.execute("select job_id from app.erase_my_account(%s, %s)", (confirmed.totp_step, confirmed.recovery_hash))
        job_ids = [row["job_id"] for row in cur.fetchall()]
    removed = delete_media(job_ids)
    log.info("account %s erased: %d media files deleted", confirmed.user_id, removed)
    return confirmed.user_id


def export_account(open_tx: TransactionOpener) -> dict:
    """The signed-in user's data as one JSON-ready document (no secrets or hashes)."""
    with open_tx() as cur:
        cur.execute("select app.export_my_account() as data")
        return cur.fetchone()["data"]
