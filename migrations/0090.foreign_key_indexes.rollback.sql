drop index concurrently if exists refresh_tokens_replaced_by_idx;
drop index concurrently if exists stripe_drift_user_id_idx;
drop index concurrently if exists login_attempts_user_id_idx;
drop index concurrently if exists usage_logs_job_id_idx;
drop index concurrently if exists credit_ledger_job_id_idx;
