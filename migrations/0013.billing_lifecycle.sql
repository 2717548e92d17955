-- Billing that follows Stripe: the subscription's whole state as Stripe reports it
-- (re-read by the worker on every event), webhook signatures checked inside Postgres,
-- and the bookkeeping for re-reads, retries of failed events and reconciliation drift.
-- The per-field event clocks of 0006 (stripe_updated_at, stripe_status_at,
-- stripe_period_at) are no longer read; they go in a later migration, once no deployed
-- function can still use them.
-- depends: 0012.login_attempts_hold_failures

alter table subscriptions drop constraint subscriptions_status_check;
alter table subscriptions add constraint subscriptions_status_check check (status in
  ('active', 'trialing', 'past_due', 'unpaid', 'canceled', 'incomplete', 'incomplete_expired', 'paused'))
  not valid;
alter table subscriptions validate constraint subscriptions_status_check;

alter table subscriptions
  -- the plan of the Stripe subscription's price, whatever its status (tier is what the
  -- account may use now: free while a subscription is incomplete, paused or ended)
  add column subscribed_tier text references plans (tier),
  -- the subscription ends when this period does (cancel at period end), resumable until then
  add column cancel_at_period_end boolean not null default false,
  add column cancel_at timestamptz,
  -- a downgrade Stripe applies at the period boundary (its subscription schedule)
  add column pending_tier text references plans (tier),
  add column pending_change_at timestamptz,
  add column stripe_schedule_id text,
  -- when the worker last applied a re-read of the subscription from Stripe
  add column stripe_synced_at timestamptz,
  -- free periods are anchor + n months (UTC), so month-end clamping never accumulates
  add column period_anchor timestamptz;

/** The webhook signing secrets (several while one is rotated). Written by `flask migrate` from STRIPE_WEBHOOK_SECRET; read only by sg_service's verification. */
create table stripe_webhook_secrets (
  secret     text primary key check (secret ~ '^whsec_'),
  created_at timestamptz not null default now()
);

alter table stripe_events
  -- the subscription the event is about (any API version's field), for re-applying its
  -- deferred events once the subscription is adopted
  add column subscription_id text,
  -- what applying it did, e.g. 'granted 20', 'ignored: superseded subscription'
  add column outcome text;
create index stripe_events_subscription_idx on stripe_events (subscription_id) where processed_at is null;

/** Re-reads of each Stripe subscription by the worker: at most one waiting in the queue (sync_queued), and reads applied only in the order they started. Service functions only. */
create table stripe_syncs (
  subscription_id    text primary key,
  -- a stripe_sync queue entry is waiting; events arriving meanwhile need no other
  sync_queued        boolean not null default false,
  -- when the latest re-read started, and when the read last applied had started
  last_started_at    timestamptz,
  last_applied_read  timestamptz
);

-- an upgrade's paid proration invoice grants the difference between the plans' credits
alter table credit_ledger drop constraint credit_ledger_reason_check;
alter table credit_ledger add constraint credit_ledger_reason_check check (reason in
  ('signup_grant', 'render', 'refund', 'renewal', 'expiry', 'plan_grant', 'admin_grant', 'upgrade_grant'))
  not valid;
alter table credit_ledger validate constraint credit_ledger_reason_check;

/** What reconciliation (`flask sync-stripe`, nightly) found different from Stripe and repaired. */
create table stripe_drift (
  id              bigint generated always as identity primary key,
  user_id         uuid references users (id) on delete set null,
  subscription_id text,
  field           text not null,   -- subscriptions column, or 'extra live subscription'
  before          text,
  after           text,
  detected_at     timestamptz not null default now()
);
create index stripe_drift_detected_idx on stripe_drift (detected_at);
