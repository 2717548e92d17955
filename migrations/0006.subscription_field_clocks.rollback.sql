alter table subscriptions drop column stripe_status_at, drop column stripe_period_at;
