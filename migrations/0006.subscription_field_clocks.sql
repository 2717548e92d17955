-- Stripe events can arrive in any order and each sets only some fields, so each group of
-- fields remembers the time of the event that last set it (stripe_updated_at: the plan).
-- depends: 0005.browser_sessions

alter table subscriptions
  -- time of the Stripe event that last set status
  add column stripe_status_at timestamptz,
  -- time of the Stripe event that last set current_period_start/end
  add column stripe_period_at timestamptz;
