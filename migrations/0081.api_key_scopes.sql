-- API key scopes and monthly credit budgets (sql/36_api_keys.sql). Keys made before
-- scopes existed keep every scope, so nothing that works today stops working. A job
-- remembers the key that paid for it (the spend transaction's app.api_key_id), which is
-- what a key's budget counts. The index is built without blocking the jobs table, so
-- statements are idempotent (this migration is not one transaction).
-- depends: 0080.idempotency_keys
-- transactional: false

alter table api_keys
  add column if not exists scopes text[] not null
    default array['videos:write', 'videos:read', 'credits:read', 'webhooks:manage']
    check (cardinality(scopes) between 1 and 4
           and scopes <@ array['videos:write', 'videos:read', 'credits:read', 'webhooks:manage']),
  -- credits the key may spend per calendar month (UTC); null: no limit but the balance
  add column if not exists monthly_budget integer check (monthly_budget between 1 and 1000000);

-- set by app.authenticate_api_key for the transaction, so no function that creates jobs
-- has to pass it along (a stable default: existing rows get null without a rewrite)
alter table jobs add column if not exists api_key_id uuid references api_keys (id) on delete set null
  default nullif(current_setting('app.api_key_id', true), '')::uuid;
-- a budget counts its key's jobs of the month
create index concurrently if not exists jobs_api_key_created_idx on jobs (api_key_id, created_at)
  where api_key_id is not null;
