"""Billing periods, prorations and the timing rules the simulator copies from Stripe.

- prorations are computed to the second: an item changed at `t` in period [s, e) gets
  "Unused time on <old> after <date>" (-old * (e-t)/(e-s)) and "Remaining time on <new>
  after <date>" (+new * (e-t)/(e-s)), rounded half up to the cent;
- `always_invoice` bills them at once (billing_reason `subscription_update`);
  `create_prorations` leaves them pending for the next invoice, where they are listed
  before the new period's line; the period never moves on a price change;
- a failed renewal makes the subscription `past_due` and is retried every 3 days; after
  3 failed retries it becomes `unpaid`; a paid invoice makes it `active` again;
- an `incomplete` subscription whose first invoice is unpaid after 23 hours becomes
  `incomplete_expired` and its invoice is voided; a pending update expires after 23 hours.
"""
from __future__ import annotations

import calendar
from datetime import datetime, timezone

DAY = 86400
RETRY_EVERY = 3 * DAY
RETRIES = 3
INCOMPLETE_EXPIRES_AFTER = 23 * 3600
PENDING_UPDATE_EXPIRES_AFTER = 23 * 3600
RENEWING = ("trialing", "active", "past_due", "unpaid")
PRORATION_BEHAVIORS = ("create_prorations", "none", "always_invoice")
PAYMENT_BEHAVIORS = ("allow_incomplete", "error_if_incomplete", "pending_if_incomplete", "default_incomplete")

def add_interval(anchor: int, interval: str, count: int, k: int) -> int:
    """`anchor` plus k intervals; months keep the anchor's day, clamped to the month's end."""
    if interval == "day":
        return anchor + k * count * DAY
    if interval == "week":
        return anchor + k * count * 7 * DAY
    months = k * count * (12 if interval == "year" else 1)
    moment = datetime.fromtimestamp(anchor, timezone.utc)
    years, month = divmod(moment.month - 1 + months, 12)
    year = moment.year + years
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return int(moment.replace(year=year, month=month + 1, day=day).timestamp())


def next_boundary(anchor: int, interval: str, count: int, after: int) -> int:
    """The first period boundary of a cycle anchored at `anchor` that is later than `after`."""
    k = 1
    while add_interval(anchor, interval, count, k) <= after:
        k += 1
    return add_interval(anchor, interval, count, k)


def prorated(amount: int, remaining: int, total: int) -> int:
    """amount * remaining / total in whole cents, halves rounded away from zero."""
    sign = -1 if amount < 0 else 1
    return sign * ((2 * abs(amount) * remaining + total) // (2 * total))

