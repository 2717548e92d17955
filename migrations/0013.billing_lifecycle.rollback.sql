drop table stripe_drift;
drop table stripe_syncs;
-- credit_ledger keeps accepting 'upgrade_grant': the ledger is append-only, so rows with
-- that reason cannot be rewritten, and a check they fail could not be restored
drop index stripe_events_subscription_idx;
alter table stripe_events drop column outcome, drop column subscription_id;
drop table stripe_webhook_secrets;
alter table subscriptions
  drop column period_anchor, drop column stripe_synced_at, drop column stripe_schedule_id,
  drop column pending_change_at, drop column pending_tier, drop column cancel_at,
  drop column cancel_at_period_end, drop column subscribed_tier;
-- statuses the old check does not know are mapped to their nearest old meaning
alter table subscriptions no force row level security;
update subscriptions set status = 'canceled' where status = 'incomplete_expired';
update subscriptions set status = 'unpaid' where status = 'paused';
alter table subscriptions force row level security;
alter table subscriptions drop constraint subscriptions_status_check;
alter table subscriptions add constraint subscriptions_status_check
  check (status in ('active', 'trialing', 'past_due', 'unpaid', 'canceled', 'incomplete'));
