alter table subscriptions drop column last_job_at;
