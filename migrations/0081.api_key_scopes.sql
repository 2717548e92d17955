-- API key scopes and monthly credit budgets (sql/36_api_keys.sql). Keys made before
-- scopes existed keep every scope, so nothing that works today stops working. A job
-- remembers the key that paid for it (the spend transaction's app.api_key_id), which is
-- what a key's budget counts.
--
-- In the release transaction, because the sql/ layer uses these columns; nothing here
-- scans jobs: its new column has no default for existing rows and its foreign key is added
-- NOT VALID. 0087 validates it and builds the index concurrently, after the transaction.
-- depends: 0080.idempotency_keys

alter table api_keys
  add column scopes text[] not null
    default array['videos:write', 'videos:read', 'credits:read', 'webhooks:manage']
    check (cardinality(scopes) between 1 and 4
           and scopes <@ array['videos:write', 'videos:read', 'credits:read', 'webhooks:manage']),
  -- credits the key may spend per calendar month (UTC); null: no limit but the balance
  add column monthly_budget integer check (monthly_budget between 1 and 1000000);
alter table jobs add column api_key_id uuid;
-- set by app.authenticate_api_key for the transaction, so no function that creates jobs
-- has to pass it along (a default changes no existing row)
alter table jobs alter column api_key_id set default nullif(current_setting('app.api_key_id', true), '')::uuid;
alter table jobs add constraint jobs_api_key_id_fkey foreign key (api_key_id) references api_keys (id)
  on delete set null not valid;
