-- Indexes behind foreign keys that had none (found by the catalog lint in
-- tests/test_sql_lints.py, Supabase splinter's "unindexed foreign keys"): deleting a user
-- (account erasure) or a video would otherwise scan the whole ledger, usage log, sign-in
-- attempts and drift log once per deleted row, holding locks while it does. Built
-- concurrently, so writes go on while they build.
-- depends: 0040.job_notes
-- transactional: false

create index concurrently if not exists credit_ledger_job_id_idx on credit_ledger (job_id) where job_id is not null;
create index concurrently if not exists usage_logs_job_id_idx on usage_logs (job_id) where job_id is not null;
create index concurrently if not exists login_attempts_user_id_idx on login_attempts (user_id) where user_id is not null;
create index concurrently if not exists stripe_drift_user_id_idx on stripe_drift (user_id);
create index concurrently if not exists refresh_tokens_replaced_by_idx on refresh_tokens (replaced_by)
  where replaced_by is not null;
