-- Batch generation (sql/43_batches.sql): up to 50 videos bought in one transaction.
-- The jobs index is built without blocking the table (this migration is not one
-- transaction, so each statement is idempotent).
-- depends: 0081.api_key_scopes
-- transactional: false

/** A batch of render jobs made by one request. Each user sees only their own. */
create table if not exists batches (
  id          uuid primary key default gen_random_uuid(),
  user_id     uuid not null references users (id) on delete cascade,
  item_count  integer not null check (item_count between 1 and 50),
  created_at  timestamptz not null default now()
);
create index if not exists batches_user_id_created_idx on batches (user_id, created_at desc);

-- the batch a job belongs to and its place in the request's list (set together, by
-- app.create_batch)
alter table jobs
  add column if not exists batch_id uuid references batches (id) on delete set null,
  add column if not exists batch_position integer check (batch_position between 0 and 49);
create unique index concurrently if not exists jobs_batch_position_key on jobs (batch_id, batch_position)
  where batch_id is not null;
