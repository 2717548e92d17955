alter table subscriptions drop column last_active_at;
