"""The worker's referral entrypoint: deciding a referrer's reward once it is due.

`referral_reward` is queued by sql/48_referrals.sql an hour after a referred customer's
first paid invoice, so that Stripe's other events about that payment (the card's
fingerprint, which can arrive after the invoice) are in before the self-referral check.
The decision is app.settle_referral_reward, keyed so a repeated entry changes nothing.
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta

from pgqueuer import PgQueuer
from pgqueuer.errors import RetryRequested
from pgqueuer.models import Job
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("worker.referrals")

# A decision the database could not take (it was unreachable) is tried again this much later.
RETRY_AFTER = timedelta(minutes=1)


def register_referrals(pgq: PgQueuer, pool: AsyncConnectionPool) -> None:
    """Attach `referral_reward` (the light lane)."""

    @pgq.entrypoint("referral_reward")
    async def referral_reward(queued: Job) -> None:
        try:
            referee = json.loads(queued.payload or b"")["referee"]
        except (ValueError, KeyError, TypeError):
            log.error("dropping referral entry %s: %r", queued.id, queued.payload)
            return
        try:
            async with pool.connection() as conn:
                cur = await conn.execute("select app.settle_referral_reward(%s)", (referee,))
                outcome = (await cur.fetchone())[0]
        except Exception as error:  # noqa: BLE001 - the decision is keyed: trying again is safe
            log.warning("referral reward for %s: %s; trying again", referee, error)
            raise RetryRequested(delay=RETRY_AFTER, reason=str(error)[:500]) from error
        log.info("referral reward for %s: %s", referee, outcome)
