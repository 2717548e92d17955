-- API key scopes and monthly credit budgets (sql/36_api_keys.sql). Keys made before
-- scopes existed keep every scope, so nothing that works today stops working. A job
-- remembers the key that paid for it (the spend transaction's app.api_key_id), which is
-- what a key's budget counts.
--
-- Not one transaction, so that nothing holds the jobs table: the foreign key is added
-- NOT VALID and validated on its own (a scan under a lock writes pass), the index is
-- built concurrently, and each statement may run again after a failure part way (the
-- DO blocks make the statements that have no IF NOT EXISTS idempotent).
-- depends: 0080.idempotency_keys
-- transactional: false

alter table api_keys
  add column if not exists scopes text[] not null
    default array['videos:write', 'videos:read', 'credits:read', 'webhooks:manage']
    check (cardinality(scopes) between 1 and 4
           and scopes <@ array['videos:write', 'videos:read', 'credits:read', 'webhooks:manage']),
  -- credits the key may spend per calendar month (UTC); null: no limit but the balance
  add column if not exists monthly_budget integer check (monthly_budget between 1 and 1000000);

alter table jobs add column if not exists api_key_id uuid;
-- set by app.authenticate_api_key for the transaction, so no function that creates jobs
-- has to pass it along (a default changes no existing row)
do $$
begin
  alter table jobs alter column api_key_id set default nullif(current_setting('app.api_key_id', true), '')::uuid;
end
$$;
do $$
begin
  alter table jobs add constraint jobs_api_key_id_fkey foreign key (api_key_id) references api_keys (id)
    on delete set null not valid;
exception when duplicate_object then
  null;  -- a run that failed later added it already
end
$$;
do $$
begin
  alter table jobs validate constraint jobs_api_key_id_fkey;
end
$$;
-- a budget counts its key's jobs of the month
create index concurrently if not exists jobs_api_key_created_idx on jobs (api_key_id, created_at)
  where api_key_id is not null;
